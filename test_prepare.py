"""Tests for prepare.py, offline: small corpora written here, GPT-2 BPE from TIKTOKEN_CACHE_DIR."""
import collections
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prepare  # noqa: E402
from finetune_data import EOT, alpaca_prompt, example_batch, load_examples  # noqa: E402

SHAKESPEARE = HERE.parent / 'shared' / 'data' / 'tinyshakespeare' / 'input.txt'
# non-ASCII, Windows line endings, indented lines, an empty line at the end
TEXT = ("First Citizen:\r\nBefore we proceed any further, hear me speak.\r\n\r\n"
        "Ünïcödé — «quotes», naïve café, 日本語のテキスト, emoji 🙂🚀\n"
        "    indented line\n\tand a tab\n  \n" * 40 + "last line\n\n")


def run(*args, cwd):
    """prepare.py as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, str(HERE / 'prepare.py'), *args, '--workers=2'],
                       cwd=cwd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def bins(out):
    return [np.memmap(out / f'{s}.bin', dtype=np.uint16, mode='r') for s in ('train', 'val')]


def char_decode(out, ids):
    with open(out / 'meta.pkl', 'rb') as f:
        meta = pickle.load(f)
    return ''.join(meta['itos'][int(i)] for i in ids)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def files_under(path):
    return sorted(str(p) for p in Path(path).rglob('*') if p.is_file())

# -----------------------------------------------------------------------------
# round trips


def test_char_round_trip(tmp_path):
    src = write(tmp_path / 'in.txt', TEXT)
    rc, out, err = run('mine', f'--input={src}', '--tokenizer=char', cwd=tmp_path)
    assert rc == 0, err
    d = tmp_path / 'data' / 'mine'
    train, val = bins(d)
    assert char_decode(d, train) + char_decode(d, val) == TEXT
    with open(d / 'meta.pkl', 'rb') as f:
        meta = pickle.load(f)
    assert set(meta) == {'vocab_size', 'stoi', 'itos'} and meta['vocab_size'] == len(set(TEXT))
    assert type(meta['stoi']) is dict and type(meta['itos']) is dict
    assert 'train: ' in out and 'val: ' in out


def test_bpe_round_trip(tmp_path, enc):
    src = write(tmp_path / 'in.txt', TEXT)
    rc, out, err = run('mine', f'--input={src}', cwd=tmp_path)
    assert rc == 0, err
    d = tmp_path / 'data' / 'mine'
    train, val = bins(d)
    assert enc.decode_bytes(train.tolist()) + enc.decode_bytes(val.tolist()) == TEXT.encode()
    assert not (d / 'meta.pkl').exists()  # no meta.pkl means GPT-2 BPE to train.py and sample.py


@pytest.mark.parametrize('tokenizer', ['gpt2', 'char'])
def test_small_chunks_change_nothing(tmp_path, monkeypatch, enc, tokenizer):
    # cutting the text into many pieces must give exactly the ids of encoding it whole, even with multi-byte
    # characters, lines that start with spaces, a long line of words, old Mac line ends (CR alone) around the cuts
    text = TEXT + "the quick  brown fox, jumps\tover 'the' lazy dog " * 30 + "one line\r" * 40 + "Быстрая лиса " * 30 + TEXT * 2
    text += "x" * 500 + "🙂" * 300  # and a long line with no space to cut at, in the val part
    src = write(tmp_path / 'in.txt', text)
    monkeypatch.setattr(prepare, 'CHUNK', 97)
    prepare.main(['mine', f'--input={src}', f'--tokenizer={tokenizer}', f'--out_dir={tmp_path}', '--workers=2'])
    train, val = bins(tmp_path / 'mine')
    split = int(len(text.encode()) * 0.9)
    if tokenizer == 'gpt2':
        raw = text.encode()
        assert split < len(raw) - 1700 and train.tolist() == enc.encode_ordinary(raw[:split].decode())
        assert enc.decode_bytes(train.tolist()) + enc.decode_bytes(val.tolist()) == raw
    else:
        assert char_decode(tmp_path / 'mine', train) + char_decode(tmp_path / 'mine', val) == text


def test_a_utf8_byte_order_mark_is_not_text(tmp_path, enc):
    text = "the byte order mark some editors put first\n" * 20
    for name, src in (('one', write(tmp_path / 'a.txt', '\ufeff' + text)),
                      ('folder', write(tmp_path / 'd' / 'b.txt', '\ufeff' + text) and write(tmp_path / 'd' / 'c.txt', '\ufeff' + text).parent)):
        prepare.main([name, f'--input={src}', '--tokenizer=char', f'--out_dir={tmp_path}'])
        train, val = bins(tmp_path / name)
        assert '\ufeff' not in char_decode(tmp_path / name, [*train, *val])
    prepare.main(['bpe', f'--input={tmp_path / "a.txt"}', f'--out_dir={tmp_path}'])
    train, val = bins(tmp_path / 'bpe')
    assert enc.decode([*train, *val]) == text


def make_folder(root):
    docs = {f'{i:02d}.txt': f"document {i}\r\nwith ünïcode {'é' * i}\n\n" * (i + 1) for i in range(12)}
    docs['sub/deep.txt'] = "a file in a subfolder\n"
    docs['notes.md'] = "not a .txt file, so not read\n"
    for name, text in docs.items():
        write(root / name, text)
    return docs


@pytest.mark.parametrize('tokenizer', ['gpt2', 'char'])
def test_folder_round_trip(tmp_path, enc, tokenizer):
    src = tmp_path / 'corpus'
    make_folder(src)
    rc, out, err = run('mine', f'--input={src}', f'--tokenizer={tokenizer}', cwd=tmp_path)
    assert rc == 0, err
    d = tmp_path / 'data' / 'mine'
    splits = prepare.split_docs({**prepare.DEFAULTS, 'input': str(src)})
    assert len(splits['val']) == 1 and len(splits['train']) == 12  # round(13 * 0.1) whole files
    assert not {p for p, _, _ in splits['val']} & {p for p, _, _ in splits['train']}
    assert all(a == 0 for _, a, _ in splits['train'] + splits['val'])
    assert not any(p.endswith('.md') for p, _, _ in splits['train'] + splits['val'])
    for split, ids in zip(('train', 'val'), bins(d)):
        texts = [Path(p).read_bytes().decode() for p, _, _ in splits[split]]
        if tokenizer == 'gpt2':  # each document starts with <|endoftext|>
            assert enc.decode(ids.tolist()) == ''.join('<|endoftext|>' + t for t in texts)
        else:
            assert char_decode(d, ids) == ''.join(texts)


def test_folder_split_is_seeded_and_stable(tmp_path):
    make_folder(tmp_path / 'a')
    shutil.copytree(tmp_path / 'a', tmp_path / 'elsewhere' / 'b')
    def val(src, seed):
        return [os.path.relpath(p, src) for p, _, _ in prepare.split_docs(
            {**prepare.DEFAULTS, 'input': str(src), 'seed': seed, 'val_frac': 0.3})['val']]
    assert val(tmp_path / 'a', 1337) == val(tmp_path / 'elsewhere' / 'b', 1337)  # path-independent
    assert val(tmp_path / 'a', 1337) == val(tmp_path / 'a', 1337)
    assert len(val(tmp_path / 'a', 1337)) == 4
    assert any(val(tmp_path / 'a', 1337) != val(tmp_path / 'a', s) for s in range(5))


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"no local Tiny Shakespeare at {SHAKESPEARE}")
def test_shakespeare_matches_nanogpt(tmp_path, enc):
    rc, out, err = run('shakespeare', f'--input={SHAKESPEARE}', cwd=tmp_path)
    assert rc == 0, err
    train, val = bins(tmp_path / 'data' / 'shakespeare')
    assert (len(train), len(val)) == (301_966, 36_059)
    assert enc.decode_bytes(train.tolist()) + enc.decode_bytes(val.tolist()) == SHAKESPEARE.read_bytes()
    rc, out, err = run('shakespeare_char', f'--input={SHAKESPEARE}', cwd=tmp_path)
    assert rc == 0, err
    d = tmp_path / 'data' / 'shakespeare_char'
    assert [len(b) for b in bins(d)] == [1_003_854, 111_540]
    assert pickle.load(open(d / 'meta.pkl', 'rb'))['vocab_size'] == 65


def test_stdlib_default_is_deterministic(tmp_path):
    outs = []
    for name in ('one', 'two'):
        (tmp_path / name).mkdir()
        rc, out, err = run(cwd=tmp_path / name)  # no dataset: stdlib, offline
        assert rc == 0, err
        d = tmp_path / name / 'data' / 'stdlib'
        outs.append([(d / f).read_bytes() for f in ('train.bin', 'val.bin', 'meta.pkl')])
    assert outs[0] == outs[1]
    assert len(outs[0][0]) > 2_000_000 and len(outs[0][1]) > 100_000


def test_undecodable_bytes_are_replaced_with_a_warning(tmp_path):
    src = write(tmp_path / 'bad.txt', b"good text\n" * 20 + b"bad \xff\xfe bytes\n" + b"more\n" * 20)
    rc, out, err = run('mine', f'--input={src}', '--tokenizer=char', cwd=tmp_path)
    assert rc == 0, err
    warning = [line for line in out.splitlines() if 'warning' in line]
    assert warning == [f"prepare.py: warning: {src}: 2 undecodable bytes replaced with U+FFFD"]
    d = tmp_path / 'data' / 'mine'
    train, val = bins(d)
    assert char_decode(d, train) + char_decode(d, val) == src.read_bytes().decode('utf-8', 'replace')

# -----------------------------------------------------------------------------
# bad input: one line that says what to do, and nothing left behind


ALPACA_RECORDS = [
    {'instruction': 'Rewrite the sentence in passive voice.', 'input': 'The chef cooked the meal.',
     'output': 'The meal was cooked by the chef.'},
    {'instruction': 'Name three primary colors.', 'input': '', 'output': 'Red, blue and yellow.'},  # no input
    {'instruction': 'Translate to Japanese: “café”', 'input': 'Ünïcödé — naïve 🙂',
     'output': '日本語のテキスト\n  indented, and a literal <|endoftext|> in the text'},
] + [{'instruction': f'Count to {i}.', 'input': '' if i % 2 else f'from {i}', 'output': ' '.join(map(str, range(i)))}
     for i in range(1, 18)]
def given(path, data):  # an --input argument for a file with this content
    return f'--input={write(path, data)}'


def parquet_shard(folder, **columns):  # an --input argument for a folder of one parquet shard of these columns
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / '000.parquet')
    return f'--input={folder}'


BAD = {
    'missing': (lambda t: ['mine', f'--input={t}/nope.txt'], "no such file or folder"),
    'name is a path': (lambda t: [str(t / 'elsewhere'), f'--input={write(t / "a.txt", "text")}'],
                       "is a path: outputs go to <out_dir>/<name>, so give a plain name"),
    'empty file': (lambda t: ['mine', f'--input={write(t / "e.txt", b"")}'], "is empty"),
    'empty folder': (lambda t: ['mine', f'--input={write(t / "d" / "x.bin", b"1") and t / "d"}'],
                     "no text files (**/*.txt) in"),
    'empty files': (lambda t: ['mine', f'--input={write(t / "d" / "a.txt", b"") and write(t / "d" / "b.txt", b"") and t / "d"}'],
                    "is empty"),
    'vocab too big': (lambda t: ['mine', '--tokenizer=char', f'--input={write(t / "big.txt", "".join(chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c < 0xE000))}'],
                      "more than the 65,536 ids uint16 can hold: pass --tokenizer=gpt2"),
    'no val': (lambda t: ['mine', '--tokenizer=char', '--val_frac=0', f'--input={write(t / "a.txt", "text")}'],
               "--val_frac must be in (0, 1)"),
    'alpaca too few': (lambda t: ['alpaca', given(t / "a.json", json.dumps(ALPACA_RECORDS[:3]))], "split would have no examples"),
    'utf-16': (lambda t: ['mine', f'--input={write(t / "u.txt", "Notepad Unicode".encode("utf-16"))}'],
               "u.txt is UTF-16 text (it starts with its byte order mark): convert it to UTF-8, e.g. iconv -f UTF-16"),
    'unknown key': (lambda t: ['shakespeare', '--max_shard=3'], "unknown setting 'max_shard'; did you mean 'max_shards'?"),
    'unknown dataset': (lambda t: ['shakespear'], "unknown dataset 'shakespear': did you mean shakespeare?"),
    'bad value': (lambda t: ['stdlib', '--seed=abc'], "seed must be int (like 1337), got 'abc'"),
    'bad tokenizer': (lambda t: ['stdlib', '--tokenizer=bpe'], "--tokenizer is gpt2 or char"),
    'no shards': (lambda t: ['fineweb_edu', f'--input={t}'], "no .parquet or .jsonl shards in"),
    'shard not json': (lambda t: ['fineweb_edu', given(t / "s" / "a.jsonl", '{"text": "ok"}\n{"text": "cut sh\n') and f'--input={t / "s"}'],
                       "a.jsonl line 2 is not a JSON object with a string 'text': fix or remove the shard"),
    'shard null text': (lambda t: ['fineweb_edu', given(t / "s" / "a.jsonl", '{"text": null}\n') and f'--input={t / "s"}'],
                        "a.jsonl line 1 is not a JSON object with a string 'text'"),
    'shard no text column': (lambda t: ['fineweb_edu', parquet_shard(t / "p", body=['a', 'b'])],
                             "000.parquet is not a parquet shard with a string column 'text'"),
    'examples need bpe': (lambda t: ['sms_spam', '--tokenizer=char'], "sms_spam is GPT-2 BPE only: drop --tokenizer"),
    'no sms file': (lambda t: ['sms_spam', f'--input={t}/nope'], "no such file"),
    'empty sms': (lambda t: ['sms_spam', given(t / "e", " \n")], "is empty"),
    'sms bad label': (lambda t: ['sms_spam', given(t / "s", "ham\thi\nspam\tbuy\nhma\toops\n")],
                      "line 3 is not ham or spam, a tab, then the message: 'hma\\toops'"),
    'sms no tab': (lambda t: ['sms_spam', given(t / "s", "ham hi\n")], "line 1 is not ham or spam"),
    'sms no spam': (lambda t: ['sms_spam', given(t / "s", "ham\thi\n")], "1 ham and 0 spam"),
    'alpaca not json': (lambda t: ['alpaca', given(t / "a.json", "[{")], "is not JSON: "),
    'alpaca empty list': (lambda t: ['alpaca', given(t / "a.json", "[]")], "expected a non-empty JSON list"),
    'alpaca not a list': (lambda t: ['alpaca', given(t / "a.json", json.dumps(ALPACA_RECORDS[0]))],
                          "expected a non-empty JSON list"),
    'alpaca bad record': (lambda t: ['alpaca', given(t / "a.json", json.dumps(ALPACA_RECORDS[:2] + [{"instruction": "x"}, 3]))],
                          "record 2 is not an object with string instruction, input and output"),
    'alpaca null input': (lambda t: ['alpaca', given(t / "a.json", json.dumps([{**ALPACA_RECORDS[0], "input": None}]))],
                          "record 0 is not"),
}


@pytest.mark.parametrize('case', BAD)
def test_bad_input(tmp_path, case):
    args, message = BAD[case]
    (tmp_path / 'in').mkdir()
    rc, out, err = run(*args(tmp_path / 'in'), '--out_dir=out', cwd=tmp_path)
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith('prepare.py: '), err
    assert message in err
    assert files_under(tmp_path / 'out') == []


def test_failed_download_says_how_to_pass_input(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, 'SHAKESPEARE_URL', 'http://127.0.0.1:9/input.txt')  # nothing listens
    with pytest.raises(SystemExit) as e:
        prepare.main(['shakespeare_char', f'--out_dir={tmp_path}'])
    assert str(e.value).startswith('prepare.py: cannot download http://127.0.0.1:9/input.txt')
    assert str(e.value).endswith('pass --input=PATH to a local copy of Tiny Shakespeare')
    assert files_under(tmp_path) == []


def test_interrupted_run_leaves_no_finished_looking_output(tmp_path, monkeypatch):
    src = write(tmp_path / 'in.txt', TEXT * 10)
    monkeypatch.setattr(prepare, 'CHUNK', 1000)

    def explode(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, 'finish', explode)  # everything written, nothing renamed
    with pytest.raises(KeyboardInterrupt):
        prepare.main(['mine', f'--input={src}', f'--out_dir={tmp_path / "out"}', '--tokenizer=char'])
    assert files_under(tmp_path / 'out') == []

# -----------------------------------------------------------------------------
# fineweb_edu, on local shards: the same shard loop and resume logic as the hub download


def docs_for(shard):
    return [f"doc {shard}.{i}: " + "Ünïcode text, a few words. " * (i % 7 + 1) + "\r\nend\n" for i in range(60)]


def write_jsonl(root, n=3):
    for s in range(n):
        write(root / f'{s:03d}.jsonl', ''.join(json.dumps({'text': t, 'id': i}) + '\n' for i, t in enumerate(docs_for(s))))


def fineweb(tmp_path, src, name, *extra):
    prepare.main(['fineweb_edu', f'--input={src}', f'--out_dir={tmp_path / name}', '--val_frac=0.2', '--workers=2', *extra])
    return [(tmp_path / name / 'fineweb_edu' / f).read_bytes() for f in ('train.bin', 'val.bin')]


def check_fineweb_docs(enc, out, n_shards):
    texts = [enc.decode(np.frombuffer(b, np.uint16).tolist()) for b in out]
    assert all(t.startswith('<|endoftext|>') for t in texts)  # EOT before each document
    got = [t.split('<|endoftext|>')[1:] for t in texts]
    want = [d for s in range(n_shards) for d in docs_for(s)]
    assert sorted(got[0] + got[1]) == sorted(want) and got[1] and not set(got[0]) & set(got[1])
    assert all(prepare.rank(d, 1337) < 0.2 * 2**64 for d in got[1])  # split by a seeded hash of the text


def test_fineweb_jsonl_shards_and_resume(tmp_path, monkeypatch, enc):
    write_jsonl(tmp_path / 'shards')
    clean = fineweb(tmp_path, tmp_path / 'shards', 'clean')
    check_fineweb_docs(enc, clean, 3)
    assert fineweb(tmp_path, tmp_path / 'shards', 'two', '--max_shards=2') != clean
    check_fineweb_docs(enc, fineweb(tmp_path, tmp_path / 'shards', 'two', '--max_shards=2'), 2)

    read_shard, calls = prepare.read_shard, []

    def interrupted(path):  # dies halfway through the second shard, after writing some of it
        calls.append(path)
        for i, t in enumerate(read_shard(path)):
            if len(calls) == 2 and i == 50:
                raise KeyboardInterrupt
            yield t
    monkeypatch.setattr(prepare, 'read_shard', interrupted)
    monkeypatch.setattr(prepare, 'CHUNK', 500)  # small batches, so part of shard 2 reaches the .tmp
    with pytest.raises(KeyboardInterrupt):
        fineweb(tmp_path, tmp_path / 'shards', 'resumed')
    out = tmp_path / 'resumed' / 'fineweb_edu'
    assert not (out / 'train.bin').exists() and not (out / 'val.bin').exists()
    state = json.loads((out / 'progress.json').read_text())
    assert [os.path.basename(s) for s in state['done']] == ['000.jsonl']
    assert (out / 'train.bin.tmp').stat().st_size > state['train']  # part of shard 2 got written
    monkeypatch.setattr(prepare, 'read_shard', read_shard)
    assert fineweb(tmp_path, tmp_path / 'shards', 'resumed') == clean
    assert files_under(out) == [str(out / 'train.bin'), str(out / 'val.bin')]


def test_fineweb_parquet_shards(tmp_path, enc):
    pa = pytest.importorskip('pyarrow', reason="pyarrow is not installed: pip install pyarrow")
    import pyarrow.parquet as pq
    (tmp_path / 'pq').mkdir()
    write_jsonl(tmp_path / 'jsonl')
    for s in range(3):
        pq.write_table(pa.table({'text': docs_for(s), 'id': list(range(60))}), tmp_path / 'pq' / f'{s:03d}.parquet', row_group_size=16)
    out = fineweb(tmp_path, tmp_path / 'pq', 'pq')
    check_fineweb_docs(enc, out, 3)
    assert out == fineweb(tmp_path, tmp_path / 'jsonl', 'jsonl')


def test_fineweb_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    write(tmp_path / 'pq' / '000.parquet', b'PAR1')
    monkeypatch.setitem(sys.modules, 'pyarrow', None)  # import pyarrow now raises ImportError
    with pytest.raises(SystemExit, match=r'^prepare.py: reading parquet shards needs pyarrow: pip install pyarrow$'):
        prepare.main(['fineweb_edu', f'--input={tmp_path / "pq"}', f'--out_dir={tmp_path / "out"}'])
    assert files_under(tmp_path / 'out') == []

# -----------------------------------------------------------------------------
# example datasets: <split>.npz with tokens, offsets and per-example arrays

SMS = HERE.parent / 'shared' / 'data' / 'sms_spam_collection' / 'SMSSpamCollection'
ALPACA = HERE.parent / 'shared' / 'data' / 'instruction_data' / 'instruction-data.json'


def load_segments(path):
    """The segments of an example .npz as lists of ids, and all its arrays."""
    z = dict(np.load(path))  # allow_pickle=False, the default: plain arrays only
    tokens, offsets = z['tokens'], z['offsets']
    assert tokens.dtype == np.uint16 and offsets.dtype == np.int64
    assert offsets[0] == 0 and offsets[-1] == len(tokens) and np.all(np.diff(offsets) >= 0)
    return [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])], z


def example_files(tmp_path, dataset, src, name='out', *extra):
    prepare.main([dataset, f'--input={src}', f'--out_dir={tmp_path / name}', *extra])
    d = tmp_path / name / dataset
    return {f.name: f.read_bytes() for f in sorted(d.iterdir())}, d


@pytest.mark.skipif(not SMS.exists(), reason=f"no local SMS Spam Collection at {SMS}")
def test_sms_spam_balanced_seeded_split(tmp_path, enc):
    source = collections.Counter(tuple(line.split('\t', 1)[::-1]) for line in SMS.read_text(encoding='utf-8').split('\n') if line)
    files, d = example_files(tmp_path, 'sms_spam', SMS)
    assert sorted(files) == ['test.npz', 'train.npz', 'val.npz']
    got, sizes = collections.Counter(), {}
    for split in ('train', 'val', 'test'):
        segs, z = load_segments(d / f'{split}.npz')
        assert z['labels'].dtype == np.int64 and len(z['labels']) == len(segs)
        assert z['classes'].tolist() == ['ham', 'spam']
        assert 0.4 < z['labels'].mean() < 0.6, split  # balanced, in every split
        got.update((enc.decode(s), ['ham', 'spam'][label]) for s, label in zip(segs, z['labels']))
        sizes[split] = len(segs)
    assert sizes == {'train': 1045, 'val': 149, 'test': 300}  # 70/10/20 of 2 x 747, as LLMs-from-scratch
    assert not got - source  # every message is from the file, with its own label, at most as often
    assert sum(n for (_, label), n in got.items() if label == 'spam') == 747  # all spam, as much ham
    assert example_files(tmp_path, 'sms_spam', SMS, 'again')[0] == files
    assert example_files(tmp_path, 'sms_spam', SMS, 'seed', '--seed=1')[0]['train.npz'] != files['train.npz']


def test_sms_spam_download_is_unzipped(tmp_path, monkeypatch, enc):
    lines = ['ham\t"quoted" start', 'spam\tWIN £100 now!', 'ham\tok\tsee you', 'spam\tcall 0800']
    lines += [f'{kind}\tmessage {i}' for i in range(4) for kind in ('ham', 'spam')]  # enough for a val message
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, 'w') as z:
        z.writestr('readme', 'not this one')
        z.writestr('SMSSpamCollection', '\r\n'.join(lines) + '\r\n')  # CRLF, as some copies have
    monkeypatch.setattr(prepare, 'fetch', lambda url, what: zipped.getvalue())
    prepare.main(['sms_spam', f'--out_dir={tmp_path}'])
    got = []
    for split in ('train', 'val', 'test'):
        segs, z = load_segments(tmp_path / 'sms_spam' / f'{split}.npz')
        got += [f"{['ham', 'spam'][label]}\t{enc.decode(s)}" for s, label in zip(segs, z['labels'])]
    assert sorted(got) == sorted(lines)
    monkeypatch.setattr(prepare, 'fetch', lambda url, what: b'<html>not a zip</html>')
    with pytest.raises(SystemExit, match=r'is not a zip file holding SMSSpamCollection: pass --input=PATH'):
        prepare.main(['sms_spam', f'--out_dir={tmp_path / "bad"}'])
    assert files_under(tmp_path / 'bad') == []


def test_alpaca_prompt_template():
    head = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    assert alpaca_prompt('Add 1 and 2.') == head + "\n\n### Instruction:\nAdd 1 and 2.\n\n### Response:\n"
    assert alpaca_prompt('Add.', '1, 2') == head + "\n\n### Instruction:\nAdd.\n\n### Input:\n1, 2\n\n### Response:\n"


def check_alpaca(enc, d, records, sizes):
    def want(r):  # the decoded prompt and response of record r
        return alpaca_prompt(r['instruction'], r['input']), r['output'] + '<|endoftext|>'
    rows = []
    for split in ('train', 'val', 'test'):
        segs, z = load_segments(d / f'{split}.npz')
        assert z['prompt_lens'].dtype == np.int64 and len(z['prompt_lens']) == len(segs) == sizes[split]
        for s, n in zip(segs, z['prompt_lens'].tolist()):
            assert s[-1] == EOT and EOT not in s[:-1]  # a literal "<|endoftext|>" stays text
            rows.append((enc.decode(s[:n]), enc.decode(s[n:])))
        if split == 'test':  # the raw records, in the order of test.npz
            test = json.loads((d / 'test.json').read_text(encoding='utf-8'))
            assert rows[-len(segs):] == [want(r) for r in test]
    assert sorted(rows) == sorted(map(want, records))


def test_alpaca_prompt_and_response(tmp_path, enc):
    src = write(tmp_path / 'data.json', json.dumps(ALPACA_RECORDS))
    files, d = example_files(tmp_path, 'alpaca', src)
    assert sorted(files) == ['test.json', 'test.npz', 'train.npz', 'val.npz']
    check_alpaca(enc, d, ALPACA_RECORDS, {'train': 17, 'val': 1, 'test': 2})
    assert example_files(tmp_path, 'alpaca', src, 'again')[0] == files
    assert example_files(tmp_path, 'alpaca', src, 'seed', '--seed=7')[0]['test.json'] != files['test.json']


def test_example_batch_masks_exactly_the_response(tmp_path, enc):
    src = write(tmp_path / 'data.json', json.dumps(ALPACA_RECORDS))
    d = example_files(tmp_path, 'alpaca', src)[1]
    z = dict(np.load(d / 'train.npz'))
    ids = np.arange(len(z['prompt_lens']))
    x, y = example_batch(z, ids, block_size=1024)
    records = {alpaca_prompt(r['instruction'], r['input']): r['output'] for r in ALPACA_RECORDS}
    for i in ids:
        row = z['tokens'][z['offsets'][i]:z['offsets'][i + 1]].tolist()
        n, p = len(row), z['prompt_lens'][i]
        assert x[i, :n - 1].tolist() == row[:-1] and (x[i, n - 1:] == EOT).all()  # padded with EOT
        # the loss falls on the response and its <|endoftext|>: nothing of the prompt, nothing of the padding
        assert (y[i, :p - 1] == -1).all() and (y[i, n - 1:] == -1).all()
        assert enc.decode(y[i][y[i] != -1].tolist()) == records[enc.decode(row[:p])] + '<|endoftext|>'
    x, y = example_batch(z, ids[:3], block_size=8)  # cut to block_size + 1 tokens: 8 inputs
    assert x.shape == y.shape == (3, 8)


def test_load_examples_uses_only_examples_with_a_response_token_within_block_size(tmp_path):
    src = write(tmp_path / 'data.json', json.dumps(ALPACA_RECORDS))
    d = example_files(tmp_path, 'alpaca', src)[1]
    z = load_examples(str(d), 'instruct', block_size=1024)
    assert all(len(s['use']) == len(s['prompt_lens']) for s in z.values())  # long enough for all
    b = int(max(s['prompt_lens'].min() for s in z.values()))  # each split keeps one at least
    z = load_examples(str(d), 'instruct', block_size=b)
    use = z['train']['use']
    assert 0 < len(use) < len(z['train']['prompt_lens']) and (z['train']['prompt_lens'][use] <= b).all()
    y = example_batch(z['train'], use, block_size=b)[1]
    assert ((y != -1).sum(1) > 0).all()  # every example used has a token to learn; the skipped ones would have none
    skipped = np.setdiff1d(np.arange(len(z['train']['prompt_lens'])), use)
    assert ((example_batch(z['train'], skipped, block_size=b)[1] != -1).sum(1) == 0).all()
    with pytest.raises(ValueError, match='example of .* has its response start within block_size=4: raise it'):
        load_examples(str(d), 'instruct', block_size=4)


def test_example_batch_classification(tmp_path):
    z = dict(tokens=np.array([5, 6, 7, 8, 9, 1], np.uint16), offsets=np.array([0, 3, 4, 6]),
             labels=np.array([1, 0, 1]))
    x, labels = example_batch(z, np.array([2, 0, 1]), block_size=2)
    assert x.tolist() == [[9, 1], [5, 6], [8, -1]] and labels.tolist() == [1, 1, 0]


@pytest.mark.skipif(not ALPACA.exists(), reason=f"no local instruction-data.json at {ALPACA}")
def test_alpaca_shared_file(tmp_path, enc):
    records = json.loads(ALPACA.read_text(encoding='utf-8'))
    check_alpaca(enc, example_files(tmp_path, 'alpaca', ALPACA)[1], records, {'train': 935, 'val': 55, 'test': 110})


@pytest.mark.parametrize('dataset,what', [('sms_spam', 'SMSSpamCollection'), ('alpaca', 'instruction-data.json')])
def test_example_download_failure_says_how_to_pass_input(tmp_path, monkeypatch, dataset, what):
    monkeypatch.setattr(prepare, f'{dataset.upper()}_URL', 'http://127.0.0.1:9/x')  # nothing listens
    with pytest.raises(SystemExit, match=rf'^prepare.py: cannot download http://127.0.0.1:9/x \(ConnectionError\): '
                                         rf'pass --input=PATH to a local copy of {what}$'):
        prepare.main([dataset, f'--out_dir={tmp_path}'])
    assert files_under(tmp_path) == []


def test_interrupted_example_run_leaves_nothing(tmp_path, monkeypatch, enc):  # enc: skips without the BPE
    src = write(tmp_path / 'data.json', json.dumps(ALPACA_RECORDS))
    write_examples = prepare.write_examples

    def dies_at_val(out, split, *a, **kw):  # train.npz.tmp and test.npz.tmp are written by then
        if split == 'val':
            raise KeyboardInterrupt
        write_examples(out, split, *a, **kw)
    monkeypatch.setattr(prepare, 'write_examples', dies_at_val)
    with pytest.raises(KeyboardInterrupt):
        prepare.main(['alpaca', f'--input={src}', f'--out_dir={tmp_path / "out"}'])
    assert files_under(tmp_path / 'out') == []


def test_a_folder_split_far_from_val_frac_warns(tmp_path):
    src = tmp_path / 'two'
    write(src / 'a.txt', 'a small file\n' * 10)
    write(src / 'b.txt', 'the big one\n' * 1000)
    for seed in range(20):  # whichever file the seeded hash sends to val, the split is far from 90/10
        rc, out, err = run('mine', f'--input={src}', '--tokenizer=char', f'--seed={seed}', f'--out_dir={tmp_path / "out"}',
                           cwd=tmp_path)
        assert rc == 0, err
        warned = [line for line in out.splitlines() if 'warning: val holds' in line]
        val = os.path.getsize(tmp_path / 'out' / 'mine' / 'val.bin') / (
            os.path.getsize(tmp_path / 'out' / 'mine' / 'val.bin') + os.path.getsize(tmp_path / 'out' / 'mine' / 'train.bin'))
        assert bool(warned) == (val > 0.25), (seed, val, out)
        if val > 0.25:
            break
    else:
        pytest.fail('no seed put the big file in val')
    assert 'split the text into more files, or pass one file' in warned[0]
    rc, out, _ = run('mine', f'--input={make_folder(tmp_path / "many") and tmp_path / "many"}', '--tokenizer=char',
                     f'--out_dir={tmp_path / "out2"}', cwd=tmp_path)
    assert rc == 0 and 'warning' not in out  # twelve files of similar size: no warning


def test_a_full_disk_is_one_line_and_keeps_nothing(tmp_path):
    small = tmp_path / 'small'
    small.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=200k', 'tmpfs', str(small)], capture_output=True).returncode:
        pytest.skip('cannot mount a small tmpfs here (not root?) to fill a disk')
    try:
        src = write(tmp_path / 'big.txt', 'To be, or not to be, that is the question.\n' * 20000)  # 880 KB of chars
        rc, out, err = run('mine', f'--input={src}', '--tokenizer=char', f'--out_dir={small}', cwd=tmp_path)
        assert rc == 1 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f'prepare.py: the disk of {small / "mine"} is full (') and 'no output was kept' in err
        assert files_under(small) == []
    finally:
        subprocess.run(['umount', str(small)])
