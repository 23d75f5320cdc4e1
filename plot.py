"""
Loss curves of train.py runs, as one PNG: each run's train loss (a thin line, one point per logged iteration)
and val loss (dots, one per evaluation) from its log.csv, one colour per run. A run still training plots
what it has logged so far. Needs matplotlib (pip install matplotlib); no display: it draws with Agg.

$ python plot.py out-shakespeare-char                         # writes loss.png
$ python plot.py out-a out-b --x=tokens --logy=True --out=ab.png
"""
import csv
import os
import sys

import numpy as np

import settings

out = 'loss.png'  # the PNG to write
x = 'iter'  # the x axis: iter | tokens (trained on so far) | seconds (elapsed_s, summed over resumes)
logy = False  # a log-scale loss axis: late, small improvements show
smooth = 0.0  # 0 draws the train loss as logged; e.g. 0.9 draws its exponential moving average (less noise, some lag)
width = 1000  # of the PNG, in pixels
height = 600  # of the PNG, in pixels


def read_log(folder: str) -> list[dict]:
    """The rows of folder/log.csv as train.py writes them; a last line train.py is still writing is left out."""
    path = os.path.join(folder, 'log.csv')
    if not os.path.isfile(path):
        raise ValueError(f'no log at {path}: give the out_dir of a train.py run')
    with open(path, newline='', encoding='utf-8') as f:
        lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith('\n'):
        lines.pop()
    rows = list(csv.DictReader(lines))
    if not rows:
        raise ValueError(f'{path} has no rows yet: plot it once the run has logged an iteration')
    for i, r in enumerate(rows, 2):
        try:
            r['iter'], r['elapsed_s'] = int(r['iter']), float(r['elapsed_s'])
            if r['kind'] == 'train':
                r['loss'], r['tokens'] = float(r['loss']), float(r['tokens_per_s']) * float(r['ms_per_iter']) / 1000
            elif r['kind'] == 'eval':
                r['val_loss'] = float(r['val_loss'])
        except (KeyError, TypeError, ValueError) as e:  # a missing column, or a value that is no number
            raise ValueError(f'{path} is not a train.py log.csv (line {i}: {type(e).__name__} {e})') from None
    return rows


def positions(rows: list[dict], axis: str) -> list[float]:
    """Where each row goes on the x axis."""
    if axis == 'iter':
        return [r['iter'] for r in rows]
    if axis == 'seconds':  # a resumed run's clock starts again at 0: continue from where the last one stopped
        pos, offset, last = [], 0.0, 0.0
        for r in rows:
            offset += last if r['elapsed_s'] < last else 0.0
            last = r['elapsed_s']
            pos.append(offset + last)
        return pos
    # tokens after n iterations: a train row's tokens per iteration (the mean since the row before) times the
    # iterations it covers; past the last train row, at its rate
    its, done, rate = [0], [0.0], 0.0
    for r in rows:
        if r['kind'] == 'train':
            rate = r['tokens']
            done.append(done[-1] + rate * (r['iter'] + 1 - its[-1]))
            its.append(r['iter'] + 1)
    return [float(np.interp(r['iter'], its, done)) if r['iter'] <= its[-1] else done[-1] + rate * (r['iter'] - its[-1])
            for r in rows]


def draw(runs: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ValueError('matplotlib is not installed: pip install matplotlib') from None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    for k, (name, rows) in enumerate(runs.items()):
        pos = positions(rows, x)
        train = [(p, r['loss']) for p, r in zip(pos, rows) if r['kind'] == 'train']
        val = [(p, r['val_loss']) for p, r in zip(pos, rows) if r['kind'] == 'eval']
        if train:
            xs, ys = map(list, zip(*train))
            for i in range(1, len(ys)):
                ys[i] = smooth * ys[i - 1] + (1 - smooth) * ys[i]
            ax.plot(xs, ys, color=f'C{k % 10}', lw=1, alpha=0.7, label=f'{name} train')
        if val:
            ax.plot(*zip(*val), color=f'C{k % 10}', lw=1.5, marker='o', ms=3, label=f'{name} val')
    ax.set_xlabel({'iter': 'iteration', 'tokens': 'tokens trained on', 'seconds': 'seconds'}[x])
    ax.set_ylabel('loss')
    if logy:
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter('{x:g}')  # 2.5, not 2.5x10^0: losses span less than a decade
        ax.yaxis.set_minor_formatter('{x:g}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
    settings.atomic_write(path, lambda p: fig.savefig(p, format='png', dpi=100))


if __name__ == '__main__':
    folders = [a for a in sys.argv[1:] if not a.startswith('-')]  # configure() would read them as config files
    settings.configure(globals(), [a for a in sys.argv[1:] if a.startswith('-')], __file__)
    settings.check(globals(), __file__, minimum=dict(width=100, height=100), fraction=('smooth',),
                   choices=dict(x=('iter', 'tokens', 'seconds')))
    try:
        if not folders:
            raise ValueError('give the run folders to plot: python plot.py out-a [out-b ...] (--help: the settings)')
        draw({os.path.normpath(f): read_log(f) for f in folders}, out)
    except (ValueError, OSError) as e:
        raise SystemExit(f'plot.py: {e}')
    print(out)
