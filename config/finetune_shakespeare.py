# Fine-tune OpenAI's GPT-2 124M on Tiny Shakespeare in GPT-2 BPE (downloads the weights once):
#   python prepare.py shakespeare
#   python train.py config/finetune_shakespeare.py
# 32 x 1024 tokens per iteration, 20 iterations at a small constant learning rate: minutes on a GPU,
# about an hour on a 2-core CPU. sample.py then reads out-shakespeare/ckpt.pt.
out_dir = 'out-shakespeare'
dataset = 'shakespeare'
init_from = 'gpt2'  # or gpt2-medium, gpt2-large, gpt2-xl, or a local Hugging Face folder
eval_interval = 5
eval_iters = 40
log_interval = 1
always_save_checkpoint = False  # evaluations save only when val loss improves (it soon overfits)
batch_size = 1
gradient_accumulation_steps = 32
block_size = 1024  # smaller values crop the pretrained position embeddings
dropout = 0.1
learning_rate = 3e-5
decay_lr = False
max_iters = 20
