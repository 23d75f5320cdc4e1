# Loss of OpenAI's gpt2-xl on FineWeb-Edu's val split (no training): python train.py config/eval_gpt2_xl.py
# (python prepare.py fineweb_edu --max_shards=1 first; the val split is what matters here)
init_from = 'gpt2-xl'
out_dir = 'out-eval-gpt2-xl'
dataset = 'fineweb_edu'
batch_size = 8
block_size = 1024
eval_iters = 500  # x 8 rows x 1024 tokens = 4M tokens per split, shared over the ranks
eval_only = True
bias = True
