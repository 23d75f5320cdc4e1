# The quick start: a small character model of Python's standard library source, on a CPU in a couple
# of minutes, no network (prepare.py's default corpus):
#   python prepare.py && python train.py config/train_stdlib_cpu.py
# The shape and schedule of config/train_shakespeare_char_cpu.py.
out_dir = 'out-stdlib'
dataset = 'stdlib'
device = 'cpu'
dtype = ''  # automatic: bf16 autocast on CPUs with bf16 instructions (~1.5x faster here), else float32
compile = False
eval_interval = 175
eval_iters = 20
log_interval = 50
batch_size = 24
block_size = 64
n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.0
bias = False
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 30
max_iters = 700
lr_decay_iters = 700
beta2 = 0.99
