"""
What settings.py promises every script: config files and --key=value override the globals, type-checked,
with the closest key named on a typo; --help lists every setting with its default and its comment, read
from the script itself; files are written whole or not at all.
"""
import ast
import os
import re
import socket
import subprocess
import sys

import pytest

import settings
from settings import configure

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ['train.py', 'sample.py', 'prepare.py', 'hellaswag.py', 'plot.py', 'judge.py', 'bench_train.py', 'bench.py',
           'bench_prepare.py']


def test_configure_overrides_and_errors(tmp_path):
    g = dict(batch_size=12, learning_rate=6e-4, compile=True, dataset='stdlib', top_k=None, os=os)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text('import math\nbatch_size = 4 * 8\nlearning_rate = 1e-3\n')
    configure(g, [str(cfg), '--learning_rate=3', '--compile=False', '--dataset=shakespeare', '--top_k=50'], 'x.py')
    assert (g['batch_size'], g['learning_rate'], g['compile'], g['dataset'], g['top_k']) == (32, 3.0, False, 'shakespeare', 50)
    for argv, msg in [(['--batch_sise=3'], "unknown setting 'batch_sise'; did you mean 'batch_size'"),
                      (['--batch_size=big'], 'batch_size must be int'),
                      (['--compile=1'], 'compile must be bool'),
                      (['--os=1'], "unknown setting 'os'"),
                      (['--batch_size'], 'needs a value'),
                      (['nofile.py'], 'config file nofile.py not found')]:
        with pytest.raises(SystemExit, match=msg):
            configure(dict(g), argv, 'x.py')


def test_files_come_before_flags_and_none_only_where_it_means_something(tmp_path):
    script = tmp_path / 's.py'  # configure reads a setting's comment to know whether None means something there
    script.write_text("n_embd = 64  # width\nn_head = 4  # heads\ntop_k = 200  # the k likeliest (None: all)\nseed = None  # x\n")
    g = dict(n_embd=64, n_head=4, top_k=200, seed=None)
    cfg = tmp_path / 'cfg.py'  # a comprehension sees the file's own names (one namespace, as a module has)
    cfg.write_text('n_embd = 96\nn_head = [h for h in (8, 4) if n_embd % h == 0 and n_embd // h <= 16][0]\n')
    given = configure(g, ['--n_embd=128', str(cfg), '--top_k=None', '--seed=None'], str(script))  # the file first anyway
    assert (g['n_embd'], g['n_head'], g['top_k'], g['seed']) == (128, 8, None, None)
    assert given == {'n_embd': '--', 'n_head': str(cfg), 'top_k': '--', 'seed': '--'}
    with pytest.raises(SystemExit, match=r'^s.py: n_head must be int \(like 4\), not None$'):
        configure(dict(g, n_head=4), ['--n_head=None'], str(script))


def test_a_string_setting_takes_the_text_as_it_is_and_a_config_file_error_is_one_line(tmp_path):
    g = dict(start='hi', input='', n=1)
    configure(g, ['--start=42', '--input=2024.txt', '--n=7'], 'x.py')
    assert g == dict(start='42', input='2024.txt', n=7)
    configure(g, ['--start=\'Tis so\'', '--input="Go!"'], 'x.py')  # quotes are part of the text, not python syntax
    assert (g['start'], g['input']) == ("'Tis so'", '"Go!"')
    script = tmp_path / 'x.py'  # whose comments give None no meaning for a string setting: so None is text too
    script.write_text("start = 'hi'  # the prompt\ninput = ''  # a file\nn = 1  # a count\n")
    configure(g, ['--input=None'], str(script))
    assert g['input'] == 'None'
    bad = tmp_path / 'bad.py'
    bad.write_text('n = (\n')
    with pytest.raises(SystemExit, match=r'^x.py: config file .*bad.py does not run: SyntaxError'):
        configure(dict(g), [str(bad)], 'x.py')


def script_settings(path):
    """The settings a script defines, read from its source as the oracle: module-level lowercase names
    assigned before the settings.configure call (prepare.py: the keys of its DEFAULTS dict)."""
    tree = ast.parse(open(path).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'DEFAULTS':
            return [k.arg for k in node.value.keywords]
    names, main = [], None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'configure':
            main = node.lineno if main is None else min(main, node.lineno)
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.islower() and not name.startswith('_') and node.lineno < main:
                try:
                    ast.literal_eval(node.value)
                except ValueError:
                    continue
                names.append(name)
    return names


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_lists_every_setting_with_its_default_and_comment(script):
    p = subprocess.run([sys.executable, os.path.join(HERE, script), '--help'], cwd=HERE, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    names = script_settings(os.path.join(HERE, script))
    assert names
    shown = re.findall(r'^  --(\w+)=(.*?)(?:  +(\S.*))?$', p.stdout, re.M)
    assert [n for n, _, _ in shown] == names  # every setting, in the source's order, nothing else
    for name, default, comment in shown:
        assert comment, f'{script}: --{name} has no comment'
    assert p.stdout.startswith(ast.get_docstring(ast.parse(open(os.path.join(HERE, script)).read())).strip()[:40])


def test_train_help_shows_real_defaults_and_sections():
    out = subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), '--help'], cwd=HERE, capture_output=True,
                         text=True, timeout=120).stdout
    assert "  --learning_rate=0.001 " in out and "  --init_from='scratch' " in out and '  --compile=None ' in out
    lines = out.splitlines()
    assert lines.index('optimizer') < lines.index(next(line for line in lines if line.startswith('  --learning_rate=')))
    # a comment that goes on under its setting stays with it, indented, not a heading
    dtype = next(i for i, line in enumerate(lines) if line.startswith('  --dtype='))
    assert lines[dtype + 1].startswith(' ' * 20) and 'matmuls measure' in lines[dtype + 1]


@pytest.mark.parametrize('script,typo,close', [('train.py', '--learning_rat=1', 'learning_rate'),
                                                ('sample.py', '--temprature=1', 'temperature'),
                                                ('prepare.py', '--max_shard=1', 'max_shards'),
                                                ('hellaswag.py', '--exampels=3', 'examples')])
def test_unknown_key_names_the_closest(script, typo, close):
    p = subprocess.run([sys.executable, os.path.join(HERE, script), typo], cwd=HERE, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip() == f"{script}: unknown setting {typo[2:].split('=')[0]!r}; did you mean {close!r}?"


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    path = str(tmp_path / 'f.bin')
    settings.atomic_write(path, lambda p: open(p, 'wb').write(b'old'))

    def dies(p):
        open(p, 'wb').write(b'half')
        raise OSError(28, 'No space left on device')
    with pytest.raises(OSError):
        settings.atomic_write(path, dies)
    assert open(path, 'rb').read() == b'old' and os.listdir(tmp_path) == ['f.bin']
    # a temporary file of a process that is gone (killed mid-write) is removed by the next write
    host = socket.gethostname().replace('.', '-')
    stale = tmp_path / f'f.bin.{host}-999999999.tmp'
    stale.write_bytes(b'x' * 100)
    mine = tmp_path / f'f.bin.{host}-{os.getpid()}.other.tmp'  # not of the form path.<host>-<pid>.tmp: left alone
    mine.write_bytes(b'y')
    other = tmp_path / 'f.bin.another-host-999999999.tmp'  # another host's, on a shared disk: its pid means nothing here
    other.write_bytes(b'z')
    settings.atomic_write(path, lambda p: open(p, 'wb').write(b'new'))
    assert open(path, 'rb').read() == b'new' and sorted(os.listdir(tmp_path)) == sorted(['f.bin', mine.name, other.name])


def test_a_config_file_value_of_the_wrong_kind_is_an_error(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text('betas = (0.9, 0.95)  # nanoGPT style\nbeta1 = (0.9,)\nhelper = [1, 2]\n')
    with pytest.raises(SystemExit, match=r"beta1 in .*c.py must be float \(like 0.9\), got \(0.9,\)"):
        configure(dict(beta1=0.9), [str(cfg)], 'x.py')


def test_a_cpu_device_by_any_name_is_cpu_and_one_torch_lacks_is_one_line():
    assert settings.resolve_device('cpu') == settings.resolve_device('cpu:0') == 'cpu'  # (sample.py's CPU paths test 'cpu')
    with pytest.raises(ValueError, match='torch sees no such device here: use --device=cpu'):
        settings.resolve_device('nodevice:0')
