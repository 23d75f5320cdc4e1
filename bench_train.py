"""
Training speed of train.py on this machine: the same loop, data and seed in float32 and in bf16
autocast (and any other variants named), for nanoGPT's shakespeare_char model (6 layers, 6 heads,
384 wide, block 256; batch 8 on a CPU). Prints ms/iter, tokens/s and MFU (median over the timed
iterations, the first `warmup` left out) and the loss at a few iterations of each run, so the loss
curves can be compared. Runs train.py itself, so what is measured is exactly what trains.

$ python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt
$ python bench_train.py                                   # float32 vs bfloat16, 30 iterations each
$ python bench_train.py --iters=50 --variants=float32,bfloat16,bfloat16+compile --data_dir=/tmp/data
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
         '--dropout=0.2', '--bias=False', '--learning_rate=1e-3', '--warmup_iters=10', '--device=cpu']


def run(variant: str, args) -> dict:
    dtype, *extra = variant.split('+')
    flags = [f'--dtype={dtype}', f'--compile={"compile" in extra}']
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, os.path.join(HERE, 'train.py'), *MODEL, f'--data_dir={os.path.abspath(args.data_dir)}',
               f'--batch_size={args.batch_size}', f'--max_iters={args.iters}', f'--lr_decay_iters={args.iters}',
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
    p.add_argument('--data_dir', default='data')
    p.add_argument('--variants', default='float32,bfloat16', help='dtype[+compile], comma-separated')
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.data_dir, 'shakespeare_char', 'train.bin')):
        sys.exit('bench_train.py: no shakespeare_char data: run '
                 '`python prepare.py shakespeare_char --input=../shared/data/tinyshakespeare/input.txt` first')
    results = [run(v, args) for v in args.variants.split(',')]
    base = results[0]
    print(f'shakespeare_char model, batch {args.batch_size} x block 256, {args.iters} iterations, median of the last '
          f'{args.iters - args.warmup}')
    print(f'{"variant":<20} {"ms/iter":>8} {"tok/s":>7} {"speed-up":>8} {"MFU":>6} {"wall s":>7}  '
          f'loss at iters ' + ' '.join(str(i) for i in sorted(base['losses'])[::max(1, args.iters // 5)]) + '  final val')
    for r in results:
        pick = sorted(r['losses'])[::max(1, args.iters // 5)]
        print(f'{r["variant"]:<20} {r["ms"]:8.1f} {r["tok_s"]:7.0f} {r["tok_s"] / base["tok_s"]:7.2f}x '
              f'{r["mfu"] * 100:5.1f}% {r["wall"]:7.1f}  ' + ' '.join(f'{r["losses"][i]:.3f}' for i in pick) +
              f'  {r["val"]:.4f}')


if __name__ == '__main__':
    main()
