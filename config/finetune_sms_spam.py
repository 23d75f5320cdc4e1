# GPT-2 124M as a spam classifier, as in chapter 6 of "Build a Large Language Model (From Scratch)":
# the last block, the final LayerNorm and a new 2-class head train, the rest stays frozen.
#   python prepare.py sms_spam
#   python train.py config/finetune_sms_spam.py                  # add --lora_rank=16 for LoRA instead
#   python sample.py --out_dir=out-sms-spam --start="You are a winner, claim your prize"
out_dir = 'out-sms-spam'
dataset = 'sms_spam'
task = 'classify'
init_from = 'gpt2'
trainable_layers = 1
eval_interval = 50
eval_iters = 10
log_interval = 10
always_save_checkpoint = False
batch_size = 8
block_size = 128
dropout = 0.0
learning_rate = 5e-5  # the book's AdamW lr, constant after a short warmup
weight_decay = 0.1
decay_lr = False
warmup_iters = 0
max_iters = 650  # 5 epochs of 1,045 messages at 8 per step, as the book
