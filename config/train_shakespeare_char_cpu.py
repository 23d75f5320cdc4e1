# Tiny Shakespeare, characters, on a laptop CPU in about a minute: val loss ~1.86.
#   python prepare.py shakespeare_char
#   python train.py config/train_shakespeare_char_cpu.py
# nanoGPT's CPU recipe (the same 4 layers x 128 wide, block 64; batch 12, lr 1e-3, 2000 iterations)
# ends at val loss ~1.89-1.90. A 3x higher learning rate and 16 rows per step get to 1.86 in 1200
# iterations, about 35% less wall time (measured on a 2-core Zen4, see README / log.csv).
# dtype is left automatic: bf16 autocast on CPUs with bf16 instructions (22% less wall time here than
# --dtype=float32, to about the same loss), float32 on others.
out_dir = 'out-shakespeare-char-cpu'
dataset = 'shakespeare_char'
device = 'cpu'
compile = False
eval_interval = 300
eval_iters = 20
log_interval = 50
always_save_checkpoint = True
batch_size = 16
block_size = 64
gradient_accumulation_steps = 1
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # 1200 x 16 x 64 = 1.2M characters, about one pass over the data: no overfitting yet
bias = False
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
max_iters = 1200
lr_decay_iters = 1200  # the last, low-lr part of the cosine is where the loss drops most: keep it
beta2 = 0.99
