# A small character-level model on Tiny Shakespeare: nanoGPT's shakespeare_char settings (val loss ~1.47
# after 5000 iterations; a few minutes on one GPU).
#   python prepare.py shakespeare_char
#   python train.py config/train_shakespeare_char.py
# On a CPU, use config/train_shakespeare_char_cpu.py instead.
out_dir = 'out-shakespeare-char'
dataset = 'shakespeare_char'
eval_interval = 250  # small data overfits: evaluate often ...
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # ... and keep the best checkpoint at evaluations
batch_size = 64
block_size = 256  # 256 characters of context
gradient_accumulation_steps = 1
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
learning_rate = 1e-3  # small models can take a larger learning rate
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # a little larger than 0.95, since there are few tokens per iteration
warmup_iters = 100
