"""
Training speed of train.py on this machine: the same loop, data and seed in float32 and in bf16
autocast (and any other variants named), for nanoGPT's shakespeare_char model (6 layers, 6 heads,
384 wide, block 256; batch 8 on a CPU, 64 on a GPU as in nanoGPT's config). Prints ms/iter, tokens/s
and MFU (median over the timed iterations, the first `warmup` left out) and the loss at a few
iterations of each run, so the loss curves can be compared. Runs train.py itself, so what is measured
is exactly what trains. Speeds on these shared machines drift by 10-15% within minutes, so the
variants run in turn, `repeats` rounds, and each figure is the median over its rounds; the speed-up
is the median of the per-round ratios. Last, it times the step's matrix multiplies alone in float32
and in bf16: their ratio is about the most that bf16 autocast can gain on this device, since the
rest of the step (GELU, dropout, softmax, LayerNorm, AdamW) gains less.

$ python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt
$ python bench_train.py                                   # float32 vs bfloat16, dropout 0.2, 3 rounds
$ python bench_train.py --dropout=0 --variants=float32,bfloat16,bfloat16+compile --data_dir=/tmp/data
$ python bench_train.py --device=cuda --variants=float32,bfloat16,bfloat16+compile   # float32 is TF32 there
"""
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import settings

iters = 30  # training iterations per run
warmup = 5  # first iterations left out of the timing
device = 'cpu'  # cpu, cuda, ...
batch_size = 0  # rows per iteration; 0: 8 on a CPU, 64 elsewhere
dropout = 0.2  # nanoGPT's shakespeare_char config has 0.2
repeats = 3  # rounds of all variants, run in turn
data_dir = 'data'  # where prepare.py wrote shakespeare_char/
variants = 'float32,bfloat16'  # dtype[+compile], comma-separated

HERE = os.path.dirname(os.path.abspath(__file__))
L, H, C, T = 6, 6, 384, 256  # layers, heads, width, block: nanoGPT's shakespeare_char model
MODEL = ['--dataset=shakespeare_char', f'--n_layer={L}', f'--n_head={H}', f'--n_embd={C}', f'--block_size={T}',
         '--bias=False', '--learning_rate=1e-3', '--warmup_iters=10']


def run(variant: str) -> dict:
    dtype, *extra = variant.split('+')
    flags = [f'--dtype={dtype}', f'--compile={"compile" in extra}']
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, os.path.join(HERE, 'train.py'), *MODEL, f'--data_dir={os.path.abspath(data_dir)}',
               f'--device={device}', f'--batch_size={batch_size}', f'--dropout={dropout}', f'--max_iters={iters}', f'--lr_decay_iters={iters}',
               f'--eval_interval={iters}', '--eval_iters=4', '--log_interval=1', f'--out_dir={out}', *flags]
        t = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t
        with open(os.path.join(out, 'log.csv')) as f:
            rows = list(csv.DictReader(f))
    train = [r for r in rows if r['kind'] == 'train']
    timed = train[warmup:]
    ms = statistics.median(float(r['ms_per_iter']) for r in timed)
    return dict(variant=variant, ms=ms, tok_s=statistics.median(float(r['tokens_per_s']) for r in timed),
                mfu=statistics.median(float(r['mfu'] or 'nan') for r in timed), wall=wall,
                losses={int(r['iter']): float(r['loss']) for r in train},
                val=[float(r['val_loss']) for r in rows if r['kind'] == 'eval'][-1])


def matmul_ms(dtype) -> float:
    """Median ms of one training step's matrix multiplies alone, in dtype: for each of the L layers the
    four projections (forward, input gradient, weight gradient) and the six attention products."""
    N, BH, D = batch_size * T, batch_size * H, C // H
    kw = dict(dtype=dtype, device=device)
    x = {n: torch.randn(N, n, **kw) for n in (C, 3 * C, 4 * C)}
    ws = [torch.randn(o, i, **kw) for i, o in ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C))]
    q, a = torch.randn(BH, T, D, **kw), torch.randn(BH, T, T, **kw)
    sync = torch.cuda.synchronize if device.startswith('cuda') else lambda: None
    times = []
    for _ in range(12):
        sync()
        t = time.perf_counter()
        for _ in range(L):
            for w in ws:
                x[w.size(1)] @ w.t(), x[w.size(0)] @ w, x[w.size(0)].t() @ x[w.size(1)]
            # forward q k^T and att v; backward: d_att, d_v, d_q, d_k
            for m1, m2 in ((q, q.mT), (a, q), (q, q.mT), (a.mT, q), (a, q), (a.mT, q)):
                torch.bmm(m1, m2)
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]) * 1e3


def main():
    global batch_size
    settings.configure(globals(), sys.argv[1:], __file__)
    batch_size = batch_size or (8 if device == 'cpu' else 64)
    if not os.path.exists(os.path.join(data_dir, 'shakespeare_char', 'train.bin')):
        sys.exit('bench_train.py: no shakespeare_char data: run '
                 '`python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt` first')
    names = variants.split(',')
    rounds = [[run(v) for v in names] for _ in range(repeats)]  # in turn: drift hits all alike
    print(f'shakespeare_char model on {device}, batch {batch_size} x block {T}, dropout {dropout}, {iters} '
          f'iterations, median of the last {iters - warmup}; median of {repeats} rounds')
    base = rounds[0][0]
    pick = sorted(base['losses'])[::max(1, iters // 5)]
    print(f'{"variant":<20} {"ms/iter":>8} {"tok/s":>7} {"speed-up":>8} {"MFU":>6} {"wall s":>7}  '
          f'loss at iters ' + ' '.join(map(str, pick)) + '  final val  speed-up per round')
    for i, v in enumerate(names):
        runs = [r[i] for r in rounds]
        med = {k: statistics.median(r[k] for r in runs) for k in ('ms', 'tok_s', 'mfu', 'wall')}
        ups = [r[i]['tok_s'] / r[0]['tok_s'] for r in rounds]
        print(f'{v:<20} {med["ms"]:8.1f} {med["tok_s"]:7.0f} {statistics.median(ups):7.2f}x '
              f'{med["mfu"] * 100:5.1f}% {med["wall"]:7.1f}  ' + ' '.join(f'{runs[0]["losses"][j]:.3f}' for j in pick) +
              f'  {runs[0]["val"]:.4f}     ' + ' '.join(f'{u:.2f}' for u in ups))
    fp32, bf16 = (matmul_ms(d) for d in (torch.float32, torch.bfloat16))
    print(f'the same matrix multiplies alone: float32 {fp32:.0f} ms, bfloat16 {bf16:.0f} ms per iteration, '
          f'{fp32 / bf16:.2f}x (the rest of a step gains less)')

if __name__ == '__main__':
    main()
