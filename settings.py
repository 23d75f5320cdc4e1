"""
What every script here shares (train.py, sample.py, prepare.py, hellaswag.py, plot.py, judge.py, the benches): the one
settings mechanism, devices and their speeds, downloads, atomic file writes, and reading and writing train.py's
checkpoints and meta.pkl.
torch is imported only inside the functions that need it (checkpoints, devices), since prepare.py uses this module without it.

A script's settings are its module-level globals of plain values (int, float, bool, str, None), each
with a comment that says what it does. configure() overrides them from python config files and then
--key=value flags, type-checked, and --help prints them, read from the script's own source, so nothing
is written twice:

    # I/O                               <- a comment on a line of its own heads a section
    out_dir = 'out'  # where ckpt.pt goes   <- a setting, its default and its comment
    #   and more about out_dir          <- indented, right under a setting: its comment goes on
"""
import contextlib
import difflib
import glob
import io
import os
import shutil
import socket
import tokenize

PLAIN = (int, float, bool, str, type(None))


def configure(g: dict, argv: list[str], source: str) -> dict[str, str]:
    """Override the settings g (a script's globals(), or a dict of them) from argv: python config files
    (positional) first, then --key=value, wherever each stands in argv. source is the script's file: its name
    goes in front of every error, and --help reads the comments from it. Returns {key: what set it} for the
    keys that were set, whatever their values: '--' for a flag, else the config file's path. None is taken
    only by a setting that is None until then (its default, or an earlier file) or whose comment says what None means."""
    script = os.path.basename(source)
    keys = list(plain(g))
    if any(a in ('-h', '--help') for a in argv):
        print(help_text(source, {k: g[k] for k in keys}))
        raise SystemExit(0)
    given = {}
    for arg in sorted(argv, key=lambda a: a.startswith('--')):  # files, then flags (a stable sort keeps their order)
        if arg.startswith('--'):
            key, sep, text = arg[2:].partition('=')
            if not sep:
                raise SystemExit(f'{script}: {arg} needs a value: --{key}=VALUE (--help lists the settings)')
            value = parse(text)
            if isinstance(g.get(key), str) and (value is not None or not takes_none(source, key)):
                value = text  # a string setting takes the text as it is: --start=42, --input=2024.txt, --start="'Tis"
            pairs = [(key, value)]
        else:
            if not os.path.isfile(arg):
                raise SystemExit(f'{script}: config file {arg} not found (flags look like --key=value)')
            cfg = {}
            try:
                exec(compile(open(arg).read(), arg, 'exec'), cfg)  # one namespace: comprehensions see its names
            except Exception as e:
                raise SystemExit(f'{script}: config file {arg} does not run: {type(e).__name__}: {e}') from None
            for k, v in cfg.items():
                if k in keys and not isinstance(v, PLAIN):
                    raise SystemExit(f'{script}: {k} in {arg} must be {type(g[k]).__name__} (like {g[k]!r}), got {v!r}')
            pairs = [(k, v) for k, v in cfg.items() if not k.startswith('_') and isinstance(v, PLAIN)]
        for key, value in pairs:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                raise SystemExit(f'{script}: unknown setting {key!r}' + (f'; did you mean {close[0]!r}?' if close
                                                                          else ' (--help lists the settings)'))
            old = g[key]
            if value is None and old is not None and not takes_none(source, key):
                raise SystemExit(f'{script}: {key} must be {type(old).__name__} (like {old!r}), not None')
            if old is not None and value is not None and type(value) is not type(old):
                if isinstance(old, float) and type(value) is int:
                    value = float(value)
                else:
                    raise SystemExit(f'{script}: {key} must be {type(old).__name__} (like {old!r}), got {value!r}')
            g[key] = value
            given[key] = '--' if arg.startswith('--') else arg
    return given


def takes_none(source: str, key: str) -> bool:
    """Whether the comment of setting key in the script source says what None means (e.g. top_k = 200  # ... None: all)."""
    with open(source, encoding='utf-8') as f:
        return any(line.startswith(f'{key} = ') and 'None' in line.partition('#')[2] for line in f)


def check(g: dict, source: str, minimum: dict = {}, maximum: dict = {}, fraction: tuple = (), choices: dict = {}):
    """Checks of values beyond their types, each a one-line error: minimum {key: least value}, maximum {key: largest
    value}, fraction (keys in [0, 1)), choices {key: the allowed values}."""
    script = os.path.basename(source)
    for k, low in minimum.items():
        if g[k] < low:
            raise SystemExit(f'{script}: {k} must be at least {low}, got {g[k]}')
    for k, high in maximum.items():
        if g[k] > high:
            raise SystemExit(f'{script}: {k} must be at most {high}, got {g[k]}')
    for k in fraction:
        if not 0 <= g[k] < 1:
            raise SystemExit(f'{script}: {k} must be in [0, 1), got {g[k]}')
    for k, allowed in choices.items():
        if g[k] not in allowed:
            raise SystemExit(f'{script}: {k} must be one of {", ".join(map(str, allowed))}; got {g[k]!r}')


def plain(g: dict) -> dict:
    """The settings among g: lowercase names (not _private, not CONSTANTS) of plain values."""
    return {k: v for k, v in g.items() if k.islower() and not k.startswith('_') and isinstance(v, PLAIN)}


def parse(text: str):
    """A flag's value: a python literal (3, 1e-3, None, 'a'), true/false, else the bare word as a string."""
    import ast
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {'true': True, 'false': False}.get(text.lower(), text)


def help_text(source: str, defaults: dict) -> str:
    """Every setting with its default and its comment, in the order and sections of the source."""
    with open(source, encoding='utf-8') as f:
        lines = f.read().split('\n')
    toks = list(tokenize.generate_tokens(io.StringIO('\n'.join(lines)).readline))
    rows, seen, depth = {}, set(), 0  # line -> [setting or None, comment]; depth: of indentation
    for i, t in enumerate(toks):
        depth += (t.type == tokenize.INDENT) - (t.type == tokenize.DEDENT)
        first = i == 0 or toks[i - 1].type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        if first and depth == 0 and t.type == tokenize.NAME and t.string in defaults and t.string not in seen \
                and toks[i + 1].string == '=':
            seen.add(t.string)  # the first assignment is the setting
            rows[t.start[0]] = [t.string, '']
        elif t.type == tokenize.COMMENT and (first or t.start[0] in rows):
            rows.setdefault(t.start[0], [None, ''])[1] = t.string.lstrip('#').strip()
    flags = {k: f'--{k}={v!r}' for k, v in defaults.items()}
    width = max(map(len, flags.values()), default=0) + 2
    settings = [r for r in rows if rows[r][0]] or [0]
    import ast
    doc = (ast.get_docstring(ast.parse('\n'.join(lines))) or '').strip()
    out = [doc, '', 'Settings and their defaults; python config files (positional) and then --key=value '
           'override them:'] if doc else ['Settings and their defaults:']
    under = False  # the row above was a setting or the comment that goes on under it
    for r in sorted(rows):
        key, text = rows[r]
        if key:
            out.append(f'  {flags[key]:<{width}}{text}'.rstrip())
        elif under and lines[r - 1].lstrip().startswith('#  ') and r - 1 in rows:  # '#   ...' goes on
            out.append(' ' * (width + 2) + text)
        elif settings[0] - 1 <= r < settings[-1] and not text.startswith('-'):  # any other comment is a heading
            out.append(text)
        under = bool(key) or under and lines[r - 1].lstrip().startswith('#  ')
    return '\n'.join(out)


def resolve_device(device: str) -> str:
    """A script's device setting: auto picks cuda, then mps, then cpu; one torch does not see here is a ValueError."""
    import torch
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    kind, _, index = device.partition(':')
    if kind == 'cpu':  # torch has one CPU device: cpu:0 is cpu, which the scripts' CPU paths (int8, float16, threads) test for
        return 'cpu'
    backend = getattr(torch, kind, None)  # torch.cuda, torch.mps, torch.xpu, ...
    if not (hasattr(backend, 'is_available') and backend.is_available()
            and (not index or index.isdigit() and int(index) < backend.device_count())):
        raise ValueError(f'device {device} asked for, but torch sees no such device here: use --device=cpu (or auto, cuda, cuda:1, mps)')
    return device


# Peak dense FLOP/s of GPUs by name (the first key in it: L40S before L4): (bf16/fp16, fp32 as TF32), for train.py's MFU
GPU_PEAKS = {'H200': (989e12, 494e12), 'H100': (989e12, 494e12), 'A100': (312e12, 156e12), 'A10G': (70e12, 35e12),
             'L40S': (362e12, 183e12), 'L40': (181e12, 90e12), 'L4': (121e12, 60e12), '4090': (165e12, 83e12),
             '3090': (71e12, 36e12), 'V100': (125e12, 15.7e12), 'T4': (65e12, 8.1e12)}


def cpu_flops(dtype, n: int = 512) -> float:
    """FLOP/s of n x n matmuls in a torch dtype on this CPU: the best of 3 after one to warm up (load moves it)."""
    import timeit
    import torch
    a = torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / min(timeit.repeat(lambda: a @ a, number=1, repeat=4)[1:])


def require(module: str, why: str):
    """import module, an optional package that why (a setting) needs, or a ValueError that says how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f'{why} needs {module}, which is not installed: pip install {module}') from None


def download(url: str, fix: str) -> bytes:
    """The bytes at url; no network, or an error status, is a ValueError that ends with fix (what to do instead)."""
    import requests
    try:
        r = requests.get(url, timeout=30)
        r.raise_for_status()
    except requests.RequestException as e:
        raise ValueError(f'cannot download {url} ({type(e).__name__}): {fix}') from None
    return r.content


def atomic_write(path: str, write) -> None:
    """write(tmp_path), flush it to disk, then rename it over path: a reader (or a crash, or a kill) sees
    the old file or the whole new one, never half. The temporary file is named by host and process, and
    one left by a killed earlier write on this host (its process gone) is removed first: they never pile up."""
    host = socket.gethostname().replace('.', '-')
    for old in glob.glob(glob.escape(f'{path}.{host}-') + '*.tmp'):
        pid = old[len(f'{path}.{host}-'):-4]
        if pid.isdigit() and not alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another process may clean it up at the same time
                os.remove(old)
    tmp = f'{path}.{host}-{os.getpid()}.tmp'
    try:
        write(tmp)
        replace_durably(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def replace_durably(tmp: str, path: str) -> None:
    """Rename the whole file tmp over path once its bytes are on disk: after a power cut, path is the old file or the new."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == 'nt':  # on Windows os.kill(pid, 0) would send Ctrl-C: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def write_checkpoint(path: str, ck: dict) -> None:
    """Save a train.py checkpoint, whole or not at all. Weights that are not finite are never written over
    the last good file, and a write that fails (a full disk, say) is a ValueError that says so."""
    import torch
    bad = [k for k, v in ck['model'].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f'weights are not finite ({bad[0]} and {len(bad) - 1} more): not saved, so {path} keeps '
                         'the last good ones (try a lower learning_rate)')
    try:
        atomic_write(path, lambda p: torch.save(ck, p))
    except Exception as e:  # torch.save on a full disk raises RuntimeError ('unexpected pos ...'), not OSError
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20
        raise ValueError(f'could not write {path} ({type(e).__name__}: {str(e)[:80]}) with {free:.0f} MB free on its '
                         f'disk: make room{"; the previous checkpoint is kept" if os.path.exists(path) else ""}') from None


def read_checkpoint(path: str) -> dict:
    """A train.py checkpoint, loaded with weights_only=True: plain values only, no code in it runs. A missing,
    damaged or foreign file is a ValueError that says what to do."""
    import torch
    if not os.path.exists(path):
        raise ValueError(f'no checkpoint at {path}: train one with train.py first, or fix --out_dir')
    try:
        ck = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} is not a readable train.py checkpoint ({type(e).__name__}: '
                         f'{(str(e) or "an empty file").splitlines()[0][:120]})') from None
    if not isinstance(ck, dict) or not {'model', 'model_args', 'config', 'iter_num'} <= set(ck):
        raise ValueError(f'{path} is not a train.py checkpoint (no model_args/config): for Hugging Face weights use '
                         '--init_from=gpt2 or a folder with config.json and model.safetensors')
    return ck


def read_meta(path: str) -> dict:
    """A character vocabulary, meta.pkl (vocab_size, stoi, itos), as prepare.py and nanoGPT write it. Only plain
    data unpickles: a pickle that names any class or function (which could run code) is refused."""
    import pickle

    class PlainData(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f'it names {module}.{name}')
    try:
        with open(path, 'rb') as f:
            m = PlainData(f).load()
        n = m['vocab_size']
        if not (type(n) is int and sorted(m['itos']) == list(range(n)) and all(0 <= i < n for i in m['stoi'].values())):
            raise ValueError('its ids and vocab_size disagree')
    except Exception as e:  # unpickling raises many kinds of error for a file that is not what it should be
        raise ValueError(f'{path} is not a character vocabulary of vocab_size, stoi and itos ({type(e).__name__}: '
                         f'{str(e)[:80]}): prepare the dataset again with prepare.py') from None
    return m
