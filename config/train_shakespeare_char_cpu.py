# Tiny Shakespeare, characters, on a laptop CPU in about 1.5 minutes: val loss ~1.84.
#   python prepare.py shakespeare_char
#   python train.py config/train_shakespeare_char_cpu.py
# Faster to val loss 1.88 than nanoGPT's CPU recipe (4x128, block 64, batch 12, lr 1e-3, 2000
# iterations in fp32): a wider model (192) in bf16 autocast, twice the rows per step and a 3x higher
# learning rate reach it in 700 iterations. Measured on a 2-core Zen4 (AVX512-BF16), see README.
# On a CPU without bf16 instructions it runs in float32, each iteration costing ~1.5x more.
out_dir = 'out-shakespeare-char-cpu'
dataset = 'shakespeare_char'
device = 'cpu'
dtype = ''  # automatic: bf16 autocast on CPUs with bf16 instructions (~1.5x faster here), else float32
compile = False
eval_interval = 175
eval_iters = 20
log_interval = 50
always_save_checkpoint = True
batch_size = 24
block_size = 64
gradient_accumulation_steps = 1
n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.0  # 700 iterations see ~1.1M characters, less than one pass over the data: no overfitting yet
bias = False
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 30
max_iters = 700
lr_decay_iters = 700
beta2 = 0.99
