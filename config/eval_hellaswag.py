# HellaSwag accuracy of OpenAI's GPT-2 124M (length-normalised, as build-nanogpt and llm.c: 0.2955),
# with its val loss and perplexity on a prepared dataset. A GPT-2 BPE checkpoint of train.py instead:
#   python train.py config/eval_hellaswag.py --init_from=resume --out_dir=DIR --block_size=ITS_BLOCK_SIZE
#   python prepare.py hellaswag                # downloads hellaswag_val.jsonl, or --input=it
#   python prepare.py shakespeare              # the dataset whose perplexity is printed
#   python train.py config/eval_hellaswag.py   # --hellaswag_examples=500 for a quick look
init_from = 'gpt2'
out_dir = 'out-eval-hellaswag'
dataset = 'shakespeare'
block_size = 1024
batch_size = 4
eval_iters = 20
eval_only = True
hellaswag_interval = 1
