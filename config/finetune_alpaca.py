# Instruction fine-tuning of GPT-2 on the 1,100 Alpaca-format records of "Build a Large Language
# Model (From Scratch)", chapter 7 (it uses gpt2-medium: --init_from=gpt2-medium). Loss on responses only.
#   python prepare.py alpaca                   # or --input=path/to/instruction-data.json
#   python train.py config/finetune_alpaca.py  # add --lora_rank=16 to train LoRA adapters only
#   python sample.py --out_dir=out-alpaca --start="Rewrite the sentence using a simile: The car is very fast."
out_dir = 'out-alpaca'
dataset = 'alpaca'
task = 'instruct'
init_from = 'gpt2'
eval_interval = 50
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
batch_size = 8
block_size = 1024  # the whole example: the longest is a few hundred tokens
dropout = 0.0
learning_rate = 5e-5
weight_decay = 0.1
decay_lr = False
warmup_iters = 0
max_iters = 234  # 2 epochs of 935 examples at 8 per step, as the book
