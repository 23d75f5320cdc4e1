# Reproduce GPT-2 124M on FineWeb-Edu (sample-10BT, ~10B GPT-2 BPE tokens), as llm.c / build-nanogpt do:
#   python prepare.py fineweb_edu
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# 16 rows x 1024 tokens x 32 micro-steps = 524,288 tokens (~0.5M, GPT-3 paper's batch for this size) per
# iteration; 19,073 iterations is one pass over the 10B tokens. On 8 GPUs each rank does 4 micro-steps;
# on fewer GPUs keep gradient_accumulation_steps=32 (the total) so the batch stays 0.5M tokens: too
# small a batch is the usual reason a "reproduction" falls short. One small GPU (24 GB):
#   python train.py config/train_gpt2.py --batch_size=8 --gradient_accumulation_steps=64   (still 0.5M tokens)
# Not run on GPUs here yet: compare the val-loss curve in out-gpt2/log.csv with llm.c's published
# GPT-2 124M FineWeb runs, and --hellaswag_interval=250 (hellaswag.py downloads its data) with 0.2955.
out_dir = 'out-gpt2'
dataset = 'fineweb_edu'
init_from = 'scratch'
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 32
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = True  # as GPT-2
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 715  # 375M tokens, as in the GPT-3 paper
max_iters = 19073
lr_decay_iters = 19073
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
eval_interval = 250
eval_iters = 40  # x 16 rows x 1024 tokens = 655k val tokens, shared over the ranks
log_interval = 10
