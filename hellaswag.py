"""
HellaSwag accuracy of a GPT-2: for each of 10,042 everyday situations, which of 4 endings follows?
Each ending is scored by the model's mean loss per token after the context and the lowest one is the
model's choice, as build-nanogpt and llm.c score it (OpenAI's gpt2: 0.2955 there). It runs alone on any
GPT-2 BPE model, and train.py calls score() at its evaluations (hellaswag_interval).

$ python hellaswag.py --init_from=gpt2                        # downloads hellaswag_val.jsonl once
$ python hellaswag.py --init_from=path/to/folder --input=hellaswag_val.jsonl   # a Hugging Face folder, offline
$ python hellaswag.py --init_from=resume --out_dir=out-gpt2   # a train.py checkpoint
"""
import json
import os
import sys
import time

import torch
from torch.nn import functional as F

import settings
from gpt2 import GPT

URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
FILE = 'hellaswag_val.jsonl'

init_from = 'gpt2'  # gpt2, gpt2-medium, gpt2-large, gpt2-xl | a Hugging Face folder | resume (out_dir/ckpt.pt)
out_dir = 'out'  # where init_from=resume finds ckpt.pt
input = ''  # a local hellaswag_val.jsonl; '' downloads it once to data/hellaswag/
examples = 0  # score the first this many examples (0: all)
device = 'auto'  # auto picks cuda, then mps, then cpu; or e.g. cpu, cuda:1
dtype = 'auto'  # auto: bfloat16 on GPUs that have it, float32 elsewhere; or float32, bfloat16, float16


def load(path: str, download: bool = False) -> list:
    """The examples of a HellaSwag jsonl file as (context ids, [4 ending ids], label), GPT-2 BPE; with download,
    a missing file is downloaded there first. Each ending gets a leading space, as it follows the context."""
    if not os.path.exists(path) and not download:
        raise ValueError(f'no HellaSwag file at {path}: give a copy of {FILE}, or leave the setting empty to download it')
    if not os.path.exists(path):
        data = settings.download(URL, f'pass a local copy of {FILE} (hellaswag.py --input=PATH, train.py --hellaswag_input=PATH)')
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        settings.atomic_write(path, lambda p: open(p, 'wb').write(data))
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f'cannot read {path} ({type(e).__name__}): pass --input=PATH to a copy of {FILE}') from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            r = None
        if not (isinstance(r, dict) and isinstance(r.get('ctx'), str) and isinstance(r.get('endings'), list)
                and len(r['endings']) == 4 and all(isinstance(e, str) for e in r['endings'])
                and type(r.get('label')) is int and 0 <= r['label'] < 4):
            raise ValueError(f'{path} line {i} is not a record with ctx, 4 endings and a label 0-3: {line[:40]!r}')
        records.append(r)
    if not records:
        raise ValueError(f'{path} is empty: pass --input=PATH to a copy of {FILE}')
    import tiktoken
    try:
        enc = tiktoken.get_encoding('gpt2')
    except Exception as e:  # tiktoken downloads the BPE files once, then reads its cache
        raise ValueError(f"could not load GPT-2's BPE ({type(e).__name__}): connect to the network once, "
                         "or set TIKTOKEN_CACHE_DIR to a folder that holds tiktoken's cached gpt2 files") from None
    return [(enc.encode_ordinary(r['ctx']), [enc.encode_ordinary(' ' + e) for e in r['endings']], r['label'])
            for r in records]


@torch.no_grad()
def ending_losses(model, ctx: list[int], endings: list[list[int]]) -> torch.Tensor:
    """Mean cross-entropy per token of each ending after ctx, in one padded batch (the likeliest ending
    has the lowest). Rows longer than block_size lose their first tokens: the context's, then an ending's
    own (only the tokens of it still in the window are scored)."""
    ctx = ctx or [50256]  # an empty context: the endings follow <|endoftext|>, so their first token is scored too
    rows = [(ctx + e)[-(model.config.block_size + 1):] for e in endings]  # inputs row[:-1], targets row[1:]
    scored = [min(len(e), len(row) - 1) for row, e in zip(rows, endings)]
    idx = torch.zeros(len(rows), max(map(len, rows)) - 1, dtype=torch.long)
    targets = torch.full_like(idx, -1)
    for i, (row, n) in enumerate(zip(rows, scored)):
        idx[i, :len(row) - 1] = torch.tensor(row[:-1])
        targets[i, len(row) - 1 - n:len(row) - 1] = torch.tensor(row[-n:])  # position t predicts token t + 1
    dev = model.lm_head.weight.device
    logits, _ = model(idx.to(dev))
    loss = F.cross_entropy(logits.float().transpose(1, 2), targets.to(dev), ignore_index=-1, reduction='none')
    return loss.sum(1).cpu() / torch.tensor(scored)


def score(model, data: list, limit: int = 0, rank: int = 0, world_size: int = 1) -> list[int]:
    """[right, scored] over this rank's share (examples rank, rank + world_size, ...) of the first limit
    examples (0: all); the sums over all ranks give the accuracy. Put the model in eval mode first."""
    share = range(rank, min(limit or len(data), len(data)), world_size)
    right = sum(int(ending_losses(model, data[i][0], data[i][1]).argmin()) == data[i][2] for i in share)
    return [right, len(share)]


if __name__ == '__main__':
    settings.configure(globals(), sys.argv[1:], __file__)
    settings.check(globals(), __file__, minimum=dict(examples=0))
    try:
        device = settings.resolve_device(device)
        if dtype == 'auto':
            dtype = 'bfloat16' if device.startswith('cuda') and torch.cuda.is_bf16_supported() else 'float32'
        if dtype not in ('float32', 'bfloat16', 'float16'):
            raise ValueError(f'unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16')
        data = load(input or os.path.join('data', 'hellaswag', FILE), download=not input)  # first: no model load for a bad file
        if init_from == 'resume':
            model = GPT.from_checkpoint(settings.read_checkpoint(os.path.join(out_dir, 'ckpt.pt')))
        else:
            model = GPT.from_pretrained(init_from)
        if 50257 < model.config.vocab_size <= 50304:  # nanoGPT's GPT-2 BPE: padded to 50304 ids, never tokens
            model.config.vocab_size = 50257
        if model.config.n_classes or model.config.vocab_size != 50257:
            raise ValueError(f'{init_from}: HellaSwag needs a GPT-2 BPE language model, not a '
                             + ('classifier' if model.config.n_classes else f'{model.config.vocab_size}-symbol model'))
    except ValueError as e:
        raise SystemExit(f'hellaswag.py: {e}')
    model.to(device).eval()
    t0 = time.time()
    autocast = torch.autocast(device.split(':')[0], getattr(torch, dtype), enabled=dtype != 'float32')
    with autocast:
        right, n = score(model, data, examples)
    print(f'HellaSwag accuracy {right / n:.4f} ({right:,} of {n:,} examples) for {init_from}, '
          f'{time.time() - t0:.0f} s on {device} in {dtype}')
