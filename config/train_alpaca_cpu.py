# The instruction-tuning pipeline end to end on a laptop CPU with no network: a small model from
# scratch on the 935 training records, loss on responses only. It learns the template and the style
# of the answers, not to be right: start from OpenAI's GPT-2 (config/finetune_alpaca.py) for that.
#   python prepare.py alpaca --input=path/to/instruction-data.json
#   python train.py config/train_alpaca_cpu.py
#   python sample.py --out_dir=out-alpaca-cpu --start="Name three primary colors." --temperature=0
out_dir = 'out-alpaca-cpu'
dataset = 'alpaca'
task = 'instruct'
device = 'cpu'
compile = False
eval_interval = 100
eval_iters = 10
log_interval = 20
always_save_checkpoint = False
batch_size = 16
block_size = 256
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1
bias = False
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
max_iters = 600
lr_decay_iters = 600
