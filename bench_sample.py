"""
Sampling speed of the GPT-2 124M shape: ours beside transformers' generate, same weights, same run.
    python bench_sample.py                     # 256 new tokens, batch 1, CPU, float32
    python bench_sample.py --dtype=bfloat16    # ours with bf16 weights too (transformers stays fp32)
Random weights (no download needed); the speed does not depend on them. Needs transformers.
"""
import sys
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import settings
from gpt2 import GPT

new_tokens = 256  # tokens sampled per run
prompt_len = 16  # prompt tokens
repeats = 3  # runs of each; the best counts
dtype = 'float32'  # also time ours with weights in this dtype (transformers stays float32)
settings.configure(globals(), sys.argv[1:], __file__)

torch.manual_seed(0)
ref = GPT2LMHeadModel(GPT2Config()).eval()  # the 124M shape
with tempfile.TemporaryDirectory() as d:
    ref.save_pretrained(d)
    ours = GPT.from_pretrained(d).eval()
idx = torch.randint(0, 50257, (1, prompt_len))


def best(f):
    """Best of `repeats` runs: the machines here are shared, and the minimum is the least disturbed."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, prompt {prompt_len}, {new_tokens} new tokens')
with torch.no_grad():
    t = best(lambda: ref.generate(idx, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                  top_k=200, pad_token_id=50256))
    print(f'transformers generate float32: {new_tokens / t:6.1f} tokens/s')
    for dt in ['float32'] + ([dtype] if dtype != 'float32' else []):
        ours.to(getattr(torch, dt))
        t = best(lambda: ours.generate(idx, new_tokens, top_k=200))
        print(f'gpt2.py generate {dt:>13}: {new_tokens / t:6.1f} tokens/s')
