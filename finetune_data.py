"""
The fine-tuning example format, shared by prepare.py (which writes it) and train.py and sample.py (which
read it). numpy only.

prepare.py sms_spam / alpaca write data/<name>/<split>.npz: `tokens` (uint16, all examples back to back)
and `offsets` (int64, n + 1: example i is tokens[offsets[i]:offsets[i+1]]), with `labels` and `classes`
(a classifier: sms_spam) or `prompt_lens` (instruction tuning: alpaca; the loss is on the rest).
"""
import os

import numpy as np

EOT = 50256  # <|endoftext|> in GPT-2 BPE


def alpaca_prompt(instruction: str, input: str = '') -> str:
    """The Alpaca template, up to where the response starts: training data and sample.py both use it."""
    return ("Below is an instruction that describes a task. Write a response that appropriately "
            f"completes the request.\n\n### Instruction:\n{instruction}"
            + (f"\n\n### Input:\n{input}" if input else "") + "\n\n### Response:\n")


def example_batch(z, ids, block_size: int):
    """Examples ids of a loaded split z as a padded batch of int64 numpy arrays. Classification: (x, labels),
    x padded on the right with -1, which the classifier skips. Instruction tuning: (x, y), y the next token
    wherever the loss applies, i.e. on the response and its <|endoftext|>, and -1 over the prompt and the
    padding; x padded with <|endoftext|>. Rows are cut to block_size tokens of input."""
    rows = [z['tokens'][z['offsets'][i]:z['offsets'][i + 1]].astype(np.int64) for i in ids]
    if 'labels' in z:
        rows = [r[:block_size] for r in rows]  # the head reads the last token kept
        x = np.full((len(rows), max(map(len, rows))), -1, np.int64)
        for i, r in enumerate(rows):
            x[i, :len(r)] = r
        return x, z['labels'][ids].astype(np.int64)
    rows = [r[:block_size + 1] for r in rows]
    x = np.full((len(rows), max(map(len, rows)) - 1), EOT, np.int64)
    y = np.full_like(x, -1)
    for i, (r, p) in enumerate(zip(rows, z['prompt_lens'][ids])):
        x[i, :len(r) - 1] = r[:-1]
        y[i, p - 1:len(r) - 1] = r[p:]  # position t predicts token t + 1: the first is the response's first
    return x, y


def load_examples(path: str, task: str, block_size: int) -> dict:
    """The splits of an example dataset folder, {split: {array name: array}}, whole in memory (they are
    small), each with `use`: the ids of the examples to train and evaluate on. For instruction tuning those
    are the ones whose response starts within block_size (of the others no token has a loss). A folder
    without them, or with the other task's, or a split with none to use, is a ValueError that says what to do."""
    name = 'sms_spam' if task == 'classify' else 'alpaca'
    splits = {s: dict(np.load(os.path.join(path, f'{s}.npz'))) for s in ('train', 'val', 'test')
              if os.path.exists(os.path.join(path, f'{s}.npz'))}
    if not {'train', 'val'} <= set(splits):
        raise ValueError(f'no data at {os.path.join(path, "train.npz")}: run `python prepare.py {name}` first '
                         f'(or --data_dir=... where it is); task={task} reads {name}')
    need = 'labels' if task == 'classify' else 'prompt_lens'
    if need not in splits['train']:
        raise ValueError(f'{path} holds no {need}: task={task} needs `python prepare.py {name}` or the like')
    for s, z in splits.items():
        z['use'] = np.flatnonzero(z['prompt_lens'] <= block_size) if need == 'prompt_lens' else np.arange(len(z['offsets']) - 1)
        if not len(z['use']):
            raise ValueError(f'no {s} example of {path} has its response start within block_size={block_size}: raise it')
    return splits
