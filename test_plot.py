"""
What plot.py promises, on log.csv files that train.py writes here for tiny runs (pytest -q test_plot.py:
about 20 s on 2 CPU cores): a PNG of the asked size for one run or several, on any x axis, tokens and
seconds that add up across log intervals and resumes, and one-line errors for what a user can fix.
"""
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('matplotlib')

import plot  # noqa: E402 (after the skip)

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMP_NUM_THREADS='1')  # tiny models: threads only cost
TINY = ['--dataset=tiny', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=4',
        '--eval_iters=2', '--device=cpu', '--dtype=float32', '--compile=False', '--warmup_iters=2']


def write_data(d):
    """A character dataset as prepare.py writes it: train.bin/val.bin of uint16 ids and meta.pkl."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (('train', 4000), ('val', 400)):
        rng.integers(0, 16, size=n).astype(np.uint16).tofile(d / f'{split}.bin')
    chars = [chr(ord('a') + i) for i in range(16)]
    with open(d / 'meta.pkl', 'wb') as f:
        pickle.dump(dict(vocab_size=16, stoi={c: i for i, c in enumerate(chars)}, itos=dict(enumerate(chars))), f)


def py(cwd, script, *args):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *args], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=120)


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR'
    return struct.unpack('>II', head[16:24])


def one_line_error(p, *words):
    lines = p.stderr.strip().split('\n')
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith('plot.py: '), p.stderr
    for w in words:
        assert w in lines[0]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """run-a: 12 iterations, a train row each; run-b: 8 iterations logged every 2nd, then resumed to 12."""
    t = tmp_path_factory.mktemp('runs')
    write_data(t / 'data' / 'tiny')
    for flags in (['--out_dir=run-a', '--max_iters=12', '--eval_interval=4'],
                  ['--out_dir=run-b', '--max_iters=8', '--eval_interval=4', '--log_interval=2'],
                  ['--out_dir=run-b', '--init_from=resume', '--max_iters=12']):
        p = py(t, 'train.py', *TINY, *flags)
        assert p.returncode == 0, p.stderr[-2000:]
    return t


def test_one_run_gives_a_png_of_the_asked_size_and_prints_its_path(runs):
    p = py(runs, 'plot.py', 'run-a', '--out=a.png', '--width=320', '--height=240')
    assert p.returncode == 0, p.stderr
    assert p.stdout == 'a.png\n' and png_size(runs / 'a.png') == (320, 240)
    assert not [f for f in os.listdir(runs) if f.endswith('.tmp')]  # no temporary file left behind


def test_draws_train_loss_of_train_rows_and_val_loss_of_evaluations_named_by_folder(runs, monkeypatch):
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plot, 'smooth', 0.5)
    monkeypatch.setattr(plot, 'logy', True)
    logs = {name: plot.read_log(runs / name) for name in ('run-a', 'run-b')}
    plot.draw(logs, str(runs / 'in-process.png'))
    ax = plt.gcf().axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines) == ['run-a train', 'run-a val', 'run-b train', 'run-b val']
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    for name, rows in logs.items():
        train, val = lines[f'{name} train'], lines[f'{name} val']
        assert list(val.get_ydata()) == [r['val_loss'] for r in rows if r['kind'] == 'eval']
        assert list(val.get_xdata()) == [r['iter'] for r in rows if r['kind'] == 'eval']
        losses = [r['loss'] for r in rows if r['kind'] == 'train']
        ema = [losses[0]]
        for v in losses[1:]:
            ema.append(0.5 * ema[-1] + 0.5 * v)
        assert list(train.get_ydata()) == pytest.approx(ema) and list(train.get_xdata()) == \
            [r['iter'] for r in rows if r['kind'] == 'train']
        assert train.get_color() == val.get_color()  # one colour per run
    assert lines['run-a val'].get_color() != lines['run-b val'].get_color() and ax.get_yscale() == 'log'
    plt.close('all')


@pytest.mark.parametrize('axis', ['iter', 'tokens', 'seconds'])
def test_two_runs_on_every_axis(runs, axis):
    p = py(runs, 'plot.py', 'run-a', 'run-b/', f'--x={axis}', '--logy=True', '--smooth=0.5', f'--out={axis}.png',
           '--width=457', '--height=311')
    assert p.returncode == 0, p.stderr
    assert png_size(runs / f'{axis}.png') == (457, 311)


def test_tokens_and_seconds_add_up_across_log_intervals_and_a_resume(runs):
    b = plot.read_log(runs / 'run-b')
    evals = [r['iter'] for r in b if r['kind'] == 'eval']
    assert evals == [0, 4, 8, 12]  # the resume kept iteration 8's evaluation and did not log it again
    tokens = plot.positions(b, 'tokens')
    per_iter = 4 * 16  # batch_size * block_size: every row of an LM batch is full
    # to 1%: the log rounds tokens_per_s to an integer and ms_per_iter to 0.01
    at_evals = [t for t, r in zip(tokens, b) if r['kind'] == 'eval']
    assert at_evals == [pytest.approx(i * per_iter, rel=0.01) for i in evals]
    seconds = plot.positions(b, 'seconds')
    assert [r['elapsed_s'] for r in b] != sorted(r['elapsed_s'] for r in b)  # the resumed run's clock restarted
    assert seconds == sorted(seconds) and seconds[-1] > b[-1]['elapsed_s']


def test_a_run_still_writing_its_log_plots_what_it_has(runs, tmp_path):
    text = (runs / 'run-a' / 'log.csv').read_text()
    (tmp_path / 'live').mkdir()
    (tmp_path / 'live' / 'log.csv').write_text(text[:text.index('\n', 200) + 7])  # a row cut short
    p = py(tmp_path, 'plot.py', 'live', '--out=live.png')
    assert p.returncode == 0, p.stderr
    assert png_size(tmp_path / 'live.png') == (1000, 600)


def test_missing_empty_or_foreign_logs_and_bad_settings_are_one_line_errors(tmp_path):
    one_line_error(py(tmp_path, 'plot.py', 'nowhere'), 'nowhere', 'no log')
    for name, text in (('empty', ''), ('header', 'kind,iter,loss,val_loss\n')):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'log.csv').write_text(text)
        one_line_error(py(tmp_path, 'plot.py', name), name, 'no rows')
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign' / 'log.csv').write_text('step,value\n1,2\n')
    one_line_error(py(tmp_path, 'plot.py', 'foreign'), 'foreign', 'not a train.py log.csv')
    one_line_error(py(tmp_path, 'plot.py'), 'python plot.py out-a')
    one_line_error(py(tmp_path, 'plot.py', 'empty', '--x=epochs'), 'x must be one of iter, tokens, seconds')
    one_line_error(py(tmp_path, 'plot.py', 'empty', '--widht=3'), "did you mean 'width'")
    assert not os.path.exists(tmp_path / 'loss.png')


def test_without_matplotlib_it_says_what_to_install(runs):
    code = (f"import runpy, sys; sys.path.insert(0, {HERE!r}); sys.modules['matplotlib'] = None; "
            "sys.argv = ['plot.py', 'run-a']; "
            f"runpy.run_path({os.path.join(HERE, 'plot.py')!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, '-c', code], cwd=runs, capture_output=True, text=True, env=ENV, timeout=60)
    one_line_error(p, 'pip install matplotlib')
