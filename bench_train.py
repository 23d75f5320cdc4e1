"""
Training speed of train.py on this machine: the same loop, data and seed in float32 and in bf16
autocast (and any other variants named), for nanoGPT's shakespeare_char model (6 layers, 6 heads,
384 wide, block 256; batch 8 on a CPU). Prints ms/iter, tokens/s and MFU (median over the timed
iterations, the first `warmup` left out) and the loss at a few iterations of each run, so the loss
curves can be compared. Runs train.py itself, so what is measured is exactly what trains. Speeds on
these shared machines drift by 10-15% within minutes, so the variants run in turn, `repeats` rounds,
and each figure is the median over its rounds; the speed-up is the median of the per-round ratios.

$ python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt
$ python bench_train.py                                   # float32 vs bfloat16, dropout 0.2, 3 rounds
$ python bench_train.py --dropout=0 --variants=float32,bfloat16,bfloat16+compile --data_dir=/tmp/data
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = ['--dataset=shakespeare_char', '--n_layer=6', '--n_head=6', '--n_embd=384', '--block_size=256',
         '--bias=False', '--learning_rate=1e-3', '--warmup_iters=10', '--device=cpu']


def run(variant: str, args) -> dict:
    dtype, *extra = variant.split('+')
    flags = [f'--dtype={dtype}', f'--compile={"compile" in extra}']
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, os.path.join(HERE, 'train.py'), *MODEL, f'--data_dir={os.path.abspath(args.data_dir)}',
               f'--batch_size={args.batch_size}', f'--dropout={args.dropout}', f'--max_iters={args.iters}', f'--lr_decay_iters={args.iters}',
               f'--eval_interval={args.iters}', '--eval_iters=4', '--log_interval=1', f'--out_dir={out}', *flags]
        t = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t
        with open(os.path.join(out, 'log.csv')) as f:
            rows = list(csv.DictReader(f))
    train = [r for r in rows if r['kind'] == 'train']
    timed = train[args.warmup:]
    ms = statistics.median(float(r['ms_per_iter']) for r in timed)
    return dict(variant=variant, ms=ms, tok_s=statistics.median(float(r['tokens_per_s']) for r in timed),
                mfu=statistics.median(float(r['mfu'] or 'nan') for r in timed), wall=wall,
                losses={int(r['iter']): float(r['loss']) for r in train},
                val=[float(r['val_loss']) for r in rows if r['kind'] == 'eval'][-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--iters', type=int, default=30)
    p.add_argument('--warmup', type=int, default=5, help='first iterations left out of the timing')
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--dropout', type=float, default=0.2, help="nanoGPT's shakespeare_char config has 0.2")
    p.add_argument('--repeats', type=int, default=3, help='rounds of all variants, run in turn')
    p.add_argument('--data_dir', default='data')
    p.add_argument('--variants', default='float32,bfloat16', help='dtype[+compile], comma-separated')
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.data_dir, 'shakespeare_char', 'train.bin')):
        sys.exit('bench_train.py: no shakespeare_char data: run '
                 '`python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt` first')
    variants = args.variants.split(',')
    rounds = [[run(v, args) for v in variants] for _ in range(args.repeats)]  # in turn: drift hits all alike
    print(f'shakespeare_char model, batch {args.batch_size} x block 256, dropout {args.dropout}, {args.iters} '
          f'iterations, median of the last {args.iters - args.warmup}; median of {args.repeats} rounds')
    base = rounds[0][0]
    pick = sorted(base['losses'])[::max(1, args.iters // 5)]
    print(f'{"variant":<20} {"ms/iter":>8} {"tok/s":>7} {"speed-up":>8} {"MFU":>6} {"wall s":>7}  '
          f'loss at iters ' + ' '.join(map(str, pick)) + '  final val  speed-up per round')
    for i, v in enumerate(variants):
        runs = [r[i] for r in rounds]
        med = {k: statistics.median(r[k] for r in runs) for k in ('ms', 'tok_s', 'mfu', 'wall')}
        ups = [r[i]['tok_s'] / r[0]['tok_s'] for r in rounds]
        print(f'{v:<20} {med["ms"]:8.1f} {med["tok_s"]:7.0f} {statistics.median(ups):7.2f}x '
              f'{med["mfu"] * 100:5.1f}% {med["wall"]:7.1f}  ' + ' '.join(f'{runs[0]["losses"][j]:.3f}' for j in pick) +
              f'  {runs[0]["val"]:.4f}     ' + ' '.join(f'{u:.2f}' for u in ups))

if __name__ == '__main__':
    main()
