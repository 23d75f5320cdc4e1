# HellaSwag now has its own script, which needs no language-model dataset:
#   python hellaswag.py --init_from=gpt2                          # OpenAI's gpt2: build-nanogpt reports 0.2955
#   python hellaswag.py --init_from=resume --out_dir=DIR          # a train.py checkpoint (GPT-2 BPE)
#   python hellaswag.py --init_from=gpt2 --input=hellaswag_val.jsonl --examples=500   # offline, a quick look
# This file keeps the older train.py recipe working: perplexity on a prepared dataset and HellaSwag in
# one evaluation, python train.py config/eval_hellaswag.py (after python prepare.py shakespeare).
init_from = 'gpt2'
out_dir = 'out-eval-hellaswag'
dataset = 'shakespeare'
block_size = 1024
batch_size = 4
eval_iters = 20
eval_only = True
hellaswag_interval = 1
