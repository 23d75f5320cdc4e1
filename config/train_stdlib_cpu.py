# The quick start: a small character model of Python's standard library source, on a CPU in a couple
# of minutes, no network (prepare.py's default corpus):
#   python prepare.py && python train.py config/train_stdlib_cpu.py
# The shape of config/train_shakespeare_char_cpu.py, with AdamW: that recipe's Muon schedule (250 iterations of
# batch 32) reached val 1.88 here in 44 s on a 2-core Xeon, these 1,200 AdamW iterations 1.83 in 57 s.
out_dir = 'out-stdlib'
dataset = 'stdlib'
device = 'cpu'
compile = False
eval_interval = 300
eval_iters = 20
log_interval = 50
batch_size = 16
block_size = 64
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
max_iters = 1200
lr_decay_iters = 1200
beta2 = 0.99
