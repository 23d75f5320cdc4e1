# Tiny Shakespeare, characters, on a laptop CPU in well under a minute: val loss ~1.86.
#   python prepare.py shakespeare_char
#   python train.py config/train_shakespeare_char_cpu.py
# nanoGPT's CPU recipe (the same 4 layers x 128 wide, block 64; AdamW, batch 12, lr 1e-3, 2000 iterations)
# ends at val loss ~1.90 on the whole val split. Muon for the weight matrices, a 20x higher learning rate
# and 32 rows per step get to ~1.86 in 250 iterations: 0.34-0.39x its wall time (README, "Speed").
# In float32 our steps cost what nanoGPT's do per token; the lead is fewer tokens to the same loss. dtype is
# left automatic: bf16 autocast where the CPU's bf16 matmuls measure faster (a Zen4), float32 elsewhere.
out_dir = 'out-shakespeare-char-cpu'
dataset = 'shakespeare_char'
device = 'cpu'
compile = False
eval_interval = 125
eval_iters = 10  # 3 evaluations x 2 splits x 10 batches: a few seconds of a run this short
log_interval = 25
always_save_checkpoint = True
batch_size = 32  # Muon's step costs the same at any batch: 32 rows spread it over twice the tokens of 16
block_size = 64
gradient_accumulation_steps = 1
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # 250 x 32 x 64 = 0.5M characters, half a pass over the data: no overfitting yet
bias = False
optimizer = 'muon'
learning_rate = 2e-2  # Muon's update is scaled to AdamW's size, so this is one rate for both
min_lr = 2e-3
warmup_iters = 25
max_iters = 250
lr_decay_iters = 250  # the last, low-lr part of the cosine is where the loss drops most: keep it
beta2 = 0.99
