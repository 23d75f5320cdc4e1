# A spam classifier trained from scratch on the SMS Spam Collection, on a laptop CPU in a few minutes,
# no network needed with a local copy (LLMs-from-scratch starts from GPT-2 124M and reports 95.67%):
#   python prepare.py sms_spam                 # or --input=path/to/SMSSpamCollection
#   python train.py config/train_sms_spam_cpu.py
#   python sample.py --out_dir=out-sms-spam-cpu --start="WINNER!! Claim your free prize now"
# The balanced split has 1,045 / 149 / 300 train / val / test messages. The head reads the last token.
out_dir = 'out-sms-spam-cpu'
dataset = 'sms_spam'
task = 'classify'
device = 'cpu'
compile = False
eval_interval = 50
eval_iters = 20  # train-split batches per evaluation; val and test are always evaluated whole
log_interval = 10
batch_size = 16
block_size = 128  # the longest message is ~200 tokens; longer ones are cut
n_layer = 2
n_head = 4
n_embd = 128
dropout = 0.1
bias = False
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 20
max_iters = 200
lr_decay_iters = 200
