"""
Turn a text corpus into data/<name>/train.bin and val.bin: flat uint16 token ids that train.py
reads with np.memmap, plus meta.pkl (vocab_size, stoi, itos) when the vocabulary is characters.

$ python prepare.py                          # stdlib: Python's own *.py files, chars, no network
$ python prepare.py shakespeare_char         # Tiny Shakespeare, characters (downloaded once)
$ python prepare.py shakespeare              # Tiny Shakespeare, GPT-2 BPE
$ python prepare.py mine --input=notes/ --tokenizer=char  # your own file, or folder of .txt files
$ python prepare.py fineweb_edu --max_shards=2            # FineWeb-Edu sample-10BT, GPT-2 BPE
$ python prepare.py sms_spam                 # SMS Spam Collection: ham or spam, to fine-tune a classifier
$ python prepare.py alpaca                   # LLMs-from-scratch's 1,100 instructions, Alpaca template

Splits. One text file: the first 90% of its bytes is train and the rest val, as nanoGPT does.
A folder: whole files go to val, picked by a seeded hash of their path in the folder, so no val
document is ever trained on; each split keeps its files in name order. FineWeb: a document goes
to val when a seeded hash of its text says so, which also keeps duplicates in one split.
With GPT-2 BPE every document of a folder or of FineWeb starts with <|endoftext|> (50256), like
llm.c, so the token after an EOT always begins a document; a single file gets no EOT at all.
Bytes that are not UTF-8 become U+FFFD, with one warning line per file that had any.

The last two are fine-tuning examples, GPT-2 BPE only, in data/<name>/<split>.npz (finetune_data.py
says the format). sms_spam: a segment per message, `labels` (0 ham, 1 spam), hams dropped to balance,
70/10/20% train/val/test. alpaca: prompt then response + <|endoftext|>, `prompt_lens` (the loss is on
the rest), 85/5/10%, and test.json. (HellaSwag, for evaluation, is hellaswag.py's.)
"""
import codecs
import collections
import difflib
import errno
import glob
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import sys
import sysconfig
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool

import numpy as np

import settings
from finetune_data import EOT, alpaca_prompt

SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
SMS_SPAM_URL = 'https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip'
ALPACA_URL = 'https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json'
FINEWEB_REPO, FINEWEB_DIR = 'HuggingFaceFW/fineweb-edu', 'sample/10BT/'
CHUNK = 1 << 20  # bytes of text per task for the workers: big enough to hide the IPC cost
DEFAULTS = dict(
    input='',  # a local file or folder; every dataset takes one, so all of them work offline
    tokenizer='gpt2',  # gpt2 or char
    glob='**/*.txt',  # which files of an --input folder to read
    out_dir='data',  # outputs go to <out_dir>/<dataset>/
    val_frac=0.1,  # the share of the text (one file) or of the documents (a folder, FineWeb) that goes to val
    seed=1337,  # seeds which documents go to val, and the fine-tuning sets' splits
    max_shards=0,  # fineweb_edu: stop after this many shards (0: all of them)
    workers=os.cpu_count() or 1,  # tokenizing processes
)

# -----------------------------------------------------------------------------
# reading text: in pieces cut where GPT-2's tokenizer would cut anyway

def safe_cut(buf: bytes) -> int:
    # GPT-2's pre-tokenizer regex never joins text across the point just before a newline that
    # is followed by a printable ASCII character, nor across a character that is not a space followed
    # by ASCII whitespace (no pattern runs from a non-space into a space), so encoding the pieces
    # one by one gives the same ids as encoding the whole text at once.
    i = len(buf) - 1
    while (i := buf.rfind(b'\n', 0, i)) > 0:
        if 0x21 <= buf[i + 1] <= 0x7e:
            return i
    for i in range(len(buf) - 1, max(len(buf) - 65536, 0), -1):  # one huge line, or CR line ends: a word's end
        if buf[i] in b' \t\n\r\x0b\x0c':
            j = i - 1
            while j > 0 and buf[j] & 0xC0 == 0x80:  # back to the start of the character before
                j -= 1
            if not buf[j:i].decode('utf-8', 'replace').isspace():
                return i
    i = len(buf) - 1  # no word end in the last 64 KB (e.g. CJK): a character's start, where the ids may differ a little
    while i > 0 and buf[i] & 0xC0 == 0x80:
        i -= 1
    return i or len(buf)

def chunks(path: str, start: int, end: int):
    """Yield bytes [start, end) of a file in pieces of about CHUNK bytes, never all of it."""
    with open(path, 'rb') as f:
        f.seek(start)
        buf, left = b'', end - start
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            buf += data
            if left > 0:
                cut = safe_cut(buf)
                yield buf[:cut]
                buf = buf[cut:]
        if buf:
            yield buf

bad = 0  # undecodable bytes met by the last decode() in this process

def count_bad(err: UnicodeDecodeError):  # errors='replace', but counting what it replaced
    global bad
    bad += err.end - err.start
    return '\ufffd', err.end

codecs.register_error('prepare_count', count_bad)

def decode(data: bytes) -> tuple[str, int]:
    # bytes, not text mode: newline translation would turn \r\n into \n and break the round trip
    global bad
    bad = 0
    return data.decode('utf-8', 'prepare_count'), bad

def rank(s: str, seed: int) -> int:
    # a seeded hash, stable across machines and library versions, unlike a seeded permutation
    h = hashlib.blake2b(s.encode('utf-8', 'surrogatepass'), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), 'little')

# -----------------------------------------------------------------------------
# the workers

tok = None  # in each worker: a tiktoken Encoding, or a code point -> id lookup table for chars

def init(tokenizer: str, lut) -> None:
    global tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    tok = lut if tokenizer == 'char' else load_gpt2()

def encode_chunk(task: tuple[str, bytes, bool]) -> tuple[str, np.ndarray, int]:
    path, data, eot = task
    text, n_bad = decode(data)
    if isinstance(tok, np.ndarray):  # chars: one table lookup per code point
        ids = tok[np.frombuffer(text.encode('utf-32-le'), np.uint32)]
    else:
        ids = np.array(([EOT] if eot else []) + tok.encode_ordinary(text), np.uint16)
    return path, ids, n_bad

def encode_docs(task: tuple[list[str], int, float]) -> dict[str, np.ndarray]:
    texts, seed, val_frac = task
    ids = {'train': [], 'val': []}
    for t in texts:
        ids['val' if rank(t, seed) < val_frac * 2**64 else 'train'] += [EOT] + tok.encode_ordinary(t)
    return {k: np.array(v, np.uint16) for k, v in ids.items()}

def ordered(pool, fn, tasks, depth: int):
    # pool.imap, but never more than `depth` tasks ahead: imap drains its input as fast as the
    # disk allows, and memory would grow with the corpus
    pending = collections.deque()
    for t in tasks:
        pending.append(pool.apply_async(fn, (t,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()

def load_gpt2():
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # tiktoken fetches its files on first use; any failure means the same
        raise SystemExit(f"prepare.py: cannot load the GPT-2 BPE ({type(e).__name__}): connect once, "
                         "or set TIKTOKEN_CACHE_DIR to a tiktoken cache, or pass --tokenizer=char")

def report(label: str, n: int, t0: float, end: str = '') -> None:
    if end or sys.stdout.isatty():  # rewritten in place on a terminal, the last one only in a log
        print(f"\r{label}: {n:,} tokens, {n / (time.time() - t0 + 1e-9):,.0f} tok/s", end=end, flush=True)

# -----------------------------------------------------------------------------
# datasets

def split_docs(cfg: dict) -> dict[str, list[tuple[str, int, int]]]:
    """The byte ranges (path, start, end) that make up each split."""
    src, fix = cfg['input'], "pass --input=FILE or a folder of .txt files"
    if os.path.isdir(src):
        paths = sorted(p for p in glob.glob(os.path.join(src, cfg['glob']), recursive=True) if os.path.isfile(p))
        if not paths:
            raise SystemExit(f"prepare.py: no text files ({cfg['glob']}) in {src}: {fix}")
    elif os.path.isfile(src):
        paths = [src]
    else:
        raise SystemExit(f"prepare.py: no such file or folder {src!r}: {fix}")
    paths = [p for p in paths if os.path.getsize(p)]  # an empty file is no document: val must not be one
    sizes = [os.path.getsize(p) for p in paths]
    if sum(sizes) == 0:
        raise SystemExit(f"prepare.py: {src} is empty: {fix}")
    heads = {}
    for p in paths:  # the first bytes: a byte order mark says UTF-16, or a UTF-8 one to skip
        with open(p, 'rb') as f:
            heads[p] = f.read(3)
    if utf16 := next((p for p, h in heads.items() if h[:2] in (b'\xff\xfe', b'\xfe\xff')), None):
        raise SystemExit(f"prepare.py: {utf16} is UTF-16 text (it starts with its byte order mark): convert it to UTF-8, "
                         f"e.g. iconv -f UTF-16 -t UTF-8 {utf16} > {utf16}.utf8.txt")
    bom = {p: 3 * (h == b'\xef\xbb\xbf') for p, h in heads.items()}  # a UTF-8 byte order mark is no text: skipped
    if len(paths) == 1:  # one document: split by position, at a character boundary
        n = sizes[0]
        s = int(n * (1 - cfg['val_frac']))
        with open(paths[0], 'rb') as f:
            f.seek(s)
            while s < n and f.read(1)[0] & 0xC0 == 0x80:
                s += 1
        if s == 0:
            raise SystemExit(f"prepare.py: {src} is too small to split: {fix}")
        return {'train': [(paths[0], bom[paths[0]], s)], 'val': [(paths[0], s, n)]}
    n_val = min(len(paths) - 1, max(1, round(len(paths) * cfg['val_frac'])))
    val = set(sorted(paths, key=lambda p: rank(os.path.relpath(p, src), cfg['seed']))[:n_val])
    docs = [(p, bom[p], n) for p, n in zip(paths, sizes)]
    share = sum(n for p, _, n in docs if p in val) / sum(sizes)
    if share > 2 * cfg['val_frac'] + 0.05:  # whole files go to val: a few big ones can make it far too large
        print(f"prepare.py: warning: val holds {share:.0%} of the bytes (val_frac={cfg['val_frac']}), since whole "
              f"files go to val: split the text into more files, or pass one file (split {1 - cfg['val_frac']:.0%}/"
              f"{cfg['val_frac']:.0%} by position), or another --seed")
    return {'train': [d for d in docs if d[0] not in val], 'val': [d for d in docs if d[0] in val]}

def prepare_text(cfg: dict, out: str) -> None:
    splits = split_docs(cfg)
    docs = splits['train'] + splits['val']
    eot = cfg['tokenizer'] == 'gpt2' and len(docs) > 1 and docs[0][0] != docs[1][0]  # many files
    meta = lut = None
    if cfg['tokenizer'] == 'char':  # a first pass for the vocabulary, chunk by chunk
        chars = set()
        for p, a, b in docs:
            for data in chunks(p, a, b):
                chars.update(decode(data)[0])
        chars = sorted(chars)
        if len(chars) > 1 << 16:
            raise SystemExit(f"prepare.py: {len(chars):,} distinct characters, more than the 65,536 ids "
                             "uint16 can hold: pass --tokenizer=gpt2")
        meta = dict(vocab_size=len(chars), stoi={c: i for i, c in enumerate(chars)}, itos=dict(enumerate(chars)))
        lut = np.zeros(0x110000, np.uint16)
        lut[[ord(c) for c in chars]] = np.arange(len(chars))
    else:
        load_gpt2()  # fail here with one line, not in every worker
    os.makedirs(out, exist_ok=True)
    counts, n_bad = {}, collections.Counter()
    with Pool(cfg['workers'], init, (cfg['tokenizer'], lut)) as pool:
        for split, docs in splits.items():
            tasks = ((p, data, eot and i == 0) for p, a, b in docs for i, data in enumerate(chunks(p, a, b)))
            n, t0 = 0, time.time()
            with open(os.path.join(out, f'{split}.bin.tmp'), 'wb') as f:
                for i, (p, ids, nb) in enumerate(ordered(pool, encode_chunk, tasks, 2 * cfg['workers'] + 2)):
                    ids.tofile(f)
                    n, n_bad[p] = n + len(ids), n_bad[p] + nb
                    if i % 16 == 0:
                        report(split, n, t0)
            report(split, n, t0, end='\n')
            counts[split] = n
    for p, nb in n_bad.items():
        if nb:
            print(f"prepare.py: warning: {p}: {nb:,} undecodable bytes replaced with U+FFFD")
    finish(out, counts, meta)

def fetch(url: str, what: str) -> bytes:
    try:
        return settings.download(url, f"pass --input=PATH to a local copy of {what}")
    except ValueError as e:
        raise SystemExit(f"prepare.py: {e}")

def prepare_shakespeare(cfg: dict, out: str) -> None:
    if not cfg['input']:  # download once, next to the outputs, as nanoGPT does
        cfg['input'] = os.path.join(out, 'input.txt')
        if not os.path.exists(cfg['input']):
            data = fetch(SHAKESPEARE_URL, 'Tiny Shakespeare')
            os.makedirs(out, exist_ok=True)
            with open(cfg['input'] + '.tmp', 'wb') as f:
                f.write(data)
            settings.replace_durably(cfg['input'] + '.tmp', cfg['input'])
    prepare_text(cfg, out)

def read_shard(path: str):
    """The documents of one .parquet or .jsonl shard, a batch of rows at a time. A shard that is not rows with a
    string 'text' is a one-line error naming it (and the line, for jsonl)."""
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8', errors='replace') as f:  # as text files: bad bytes become U+FFFD
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        text = json.loads(line)['text']
                    except (ValueError, KeyError, TypeError):
                        text = None
                    if not isinstance(text, str):
                        raise SystemExit(f"prepare.py: {path} line {n} is not a JSON object with a string 'text': "
                                         "fix or remove the shard")
                    yield text
    else:
        import pyarrow
        import pyarrow.parquet as pq
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=['text']):
                texts = batch.column(0).to_pylist()
                if not all(isinstance(t, str) for t in texts):
                    raise TypeError('a text that is not a string')
                yield from texts
        except (pyarrow.ArrowException, TypeError, IndexError, ValueError) as e:
            raise SystemExit(f"prepare.py: {path} is not a parquet shard with a string column 'text' "
                             f"({type(e).__name__}: {str(e)[:80]}): fix or remove the shard") from None

def batches(texts):  # documents grouped into tasks of about CHUNK characters
    batch, n = [], 0
    for t in texts:
        batch.append(t)
        n += len(t)
        if n >= CHUNK:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch

def prepare_fineweb(cfg: dict, out: str) -> None:
    if cfg['tokenizer'] != 'gpt2':
        raise SystemExit("prepare.py: fineweb_edu is GPT-2 BPE only: drop --tokenizer")
    local, fix = cfg['input'], "check the network, or pass --input=DIR of .parquet/.jsonl shards"
    if local:
        shards = sorted(glob.glob(os.path.join(local, '*.parquet')) + glob.glob(os.path.join(local, '*.jsonl')))
        if not shards:
            raise SystemExit(f"prepare.py: no .parquet or .jsonl shards in {local!r}: pass --input=DIR of shards")
    else:
        from huggingface_hub import hf_hub_download, list_repo_files
        from huggingface_hub.utils import logging
        logging.set_verbosity_error()  # its retry warnings would bury our one-line error
        try:  # the hub client raises many kinds of errors; for us they all mean "no network"
            shards = sorted(f for f in list_repo_files(FINEWEB_REPO, repo_type='dataset')
                            if f.startswith(FINEWEB_DIR) and f.endswith('.parquet'))
        except Exception as e:
            raise SystemExit(f"prepare.py: cannot list {FINEWEB_REPO} on the hub ({type(e).__name__}): {fix}")
    shards = shards[:cfg['max_shards'] or None]
    if any(s.endswith('.parquet') for s in shards):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SystemExit("prepare.py: reading parquet shards needs pyarrow: pip install pyarrow")
    load_gpt2()

    def fetch(name: str) -> str:  # a downloaded shard is deleted once done, so disk stays small
        if local:
            return name
        try:
            return hf_hub_download(FINEWEB_REPO, name, repo_type='dataset', local_dir=os.path.join(out, 'shards'))
        except Exception as e:
            raise SystemExit(f"prepare.py: cannot download {name} from {FINEWEB_REPO} ({type(e).__name__}): {fix}")

    # resume: progress.json lists the finished shards and the length of each .bin.tmp after them;
    # whatever an interrupted shard appended beyond that is cut off and the shard done again
    os.makedirs(out, exist_ok=True)
    state_path, tmp = os.path.join(out, 'progress.json'), {s: os.path.join(out, f'{s}.bin.tmp') for s in ('train', 'val')}
    state = dict(done=[], train=0, val=0, seed=cfg['seed'], val_frac=cfg['val_frac'])
    if os.path.exists(state_path):
        with open(state_path) as f:
            old = json.load(f)
        if all(old[k] == state[k] for k in ('seed', 'val_frac')) and \
                all(os.path.exists(tmp[s]) and os.path.getsize(tmp[s]) >= old[s] for s in tmp):
            state = old
            print(f"resuming after {len(state['done'])} finished shards")
    files = {s: open(tmp[s], 'r+b' if state['done'] else 'wb') for s in tmp}
    for s, f in files.items():
        f.truncate(state[s])
        f.seek(state[s])
    todo = [s for s in shards if s not in state['done']]
    with Pool(cfg['workers'], init, ('gpt2', None)) as pool, ThreadPoolExecutor(1) as ex:
        nxt = ex.submit(fetch, todo[0]) if todo else None
        for i, name in enumerate(todo):
            path = nxt.result()
            if i + 1 < len(todo):  # download the next shard while this one is tokenized
                nxt = ex.submit(fetch, todo[i + 1])
            n, t0 = 0, time.time()
            label = f"shard {shards.index(name) + 1}/{len(shards)} {os.path.basename(name)}"
            tasks = ((b, cfg['seed'], cfg['val_frac']) for b in batches(read_shard(path)))
            for j, ids in enumerate(ordered(pool, encode_docs, tasks, 2 * cfg['workers'] + 2)):
                for s, f in files.items():
                    ids[s].tofile(f)
                n += len(ids['train']) + len(ids['val'])
                if j % 16 == 0:
                    report(label, n, t0)
            report(label, n, t0, end='\n')
            for s, f in files.items():
                f.flush()
                os.fsync(f.fileno())
                state[s] = f.tell()
            state['done'].append(name)
            with open(state_path + '.tmp', 'w') as f:
                json.dump(state, f)
            settings.replace_durably(state_path + '.tmp', state_path)
            if not local:
                os.remove(path)
    for f in files.values():
        f.close()
    finish(out, {s: state[s] // 2 for s in tmp}, None)
    os.remove(state_path)
    shutil.rmtree(os.path.join(out, 'shards'), ignore_errors=True)  # hf_hub_download's leftovers

def finish(out: str, counts: dict[str, int], meta: dict | None) -> None:
    """Rename the outputs into place: until now only *.tmp files existed."""
    if empty := [s for s, n in counts.items() if n == 0]:
        raise SystemExit(f"prepare.py: {empty[0]} would have no tokens: give it more text, or a --val_frac that leaves both "
                         "splits some; no output was kept")
    meta_path = os.path.join(out, 'meta.pkl')
    if meta is not None:
        with open(meta_path + '.tmp', 'wb') as f:
            pickle.dump(meta, f)
        settings.replace_durably(meta_path + '.tmp', meta_path)
    elif os.path.exists(meta_path):  # a stale char vocabulary would make sample.py misread BPE ids
        os.remove(meta_path)
    for split, n in counts.items():
        path = os.path.join(out, f'{split}.bin')
        settings.replace_durably(path + '.tmp', path)
        print(f"{split}: {n:,} tokens -> {path}")

# -----------------------------------------------------------------------------
# example datasets, for fine-tuning and evaluation

def read_source(cfg: dict, url: str, what: str, member: str = '') -> str:
    """The text of --input, or else of the download (or of one file in it, when it is a zip)."""
    src, fix = cfg['input'] or url, f"pass --input=PATH to a local copy of {what}"
    if cfg['input']:
        if not os.path.isfile(src):
            raise SystemExit(f"prepare.py: no such file {src!r}: {fix}")
        with open(src, 'rb') as f:
            data = f.read()
    else:
        data = fetch(url, what)
        if member:
            try:
                data = zipfile.ZipFile(io.BytesIO(data)).read(member)
            except (zipfile.BadZipFile, KeyError):
                raise SystemExit(f"prepare.py: {url} is not a zip file holding {member}: {fix}")
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise SystemExit(f"prepare.py: {src} is not UTF-8 (byte {e.start:,}): {fix}")
    if not text.strip():
        raise SystemExit(f"prepare.py: {src} is empty: {fix}")
    return text

def gpt2_only(cfg: dict, out: str) -> None:
    """The fine-tuning sets are GPT-2 BPE; each loads it only after checking its input (offline errors)."""
    if cfg['tokenizer'] != 'gpt2':
        raise SystemExit(f"prepare.py: {os.path.basename(out)} is GPT-2 BPE only: drop --tokenizer")

def write_examples(out: str, split: str, segments: list[list[int]], **arrays) -> None:
    if not segments:
        raise SystemExit(f"prepare.py: the {split} split would have no examples: the data has too few records; no output was kept")
    offsets = np.cumsum([0] + [len(s) for s in segments], dtype=np.int64)
    tokens = np.array([t for s in segments for t in s], np.uint16)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f'{split}.npz.tmp'), 'wb') as f:  # a file object: np.savez adds no .npz
        np.savez(f, tokens=tokens, offsets=offsets, **arrays)

def put_in_place(out: str, notes: dict[str, str]) -> None:
    """Rename every output into place at the end, so a failed run leaves only *.tmp files."""
    for name, note in notes.items():
        path = os.path.join(out, name)
        settings.replace_durably(path + '.tmp', path)
        print(f"{name.split('.')[0]}: {note} -> {path}")

def prepare_sms_spam(cfg: dict, out: str) -> None:
    gpt2_only(cfg, out)
    texts, labels = [], []
    # not the csv module: with its default quoting, messages that start with " swallow the next rows
    for i, line in enumerate(read_source(cfg, SMS_SPAM_URL, 'SMSSpamCollection', 'SMSSpamCollection').split('\n'), 1):
        if not line.strip():
            continue
        label, tab, text = line.removesuffix('\r').partition('\t')
        if not tab or label not in ('ham', 'spam'):
            raise SystemExit(f"prepare.py: line {i} is not ham or spam, a tab, then the message: {line[:40]!r}")
        texts.append(text)
        labels.append(int(label == 'spam'))
    labels = np.array(labels, np.int64)
    spam, ham = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if not len(spam) or len(ham) < len(spam):
        raise SystemExit(f"prepare.py: {len(ham)} ham and {len(spam)} spam messages: need some spam and as much ham")
    # balance the classes by keeping as many hams as spams, as LLMs-from-scratch does. RandomState,
    # not default_rng: its stream is frozen across numpy versions, so a seed is the same split anywhere
    rng = np.random.RandomState(cfg['seed'])
    keep = np.concatenate([rng.choice(ham, len(spam), replace=False), spam])
    rng.shuffle(keep)
    n_train, n_val = int(len(keep) * 0.7), int(len(keep) * 0.1)
    enc, notes = load_gpt2(), {}
    for split, idx in zip(('train', 'val', 'test'), np.split(keep, [n_train, n_train + n_val])):
        write_examples(out, split, [enc.encode_ordinary(texts[i]) for i in idx],
                       labels=labels[idx], classes=np.array(['ham', 'spam']))
        n_spam = int(labels[idx].sum())
        notes[f'{split}.npz'] = f"{len(idx):,} messages, {len(idx) - n_spam:,} ham / {n_spam:,} spam"
    put_in_place(out, notes)

def prepare_alpaca(cfg: dict, out: str) -> None:
    gpt2_only(cfg, out)
    try:
        records = json.loads(read_source(cfg, ALPACA_URL, 'instruction-data.json'))
    except json.JSONDecodeError as e:
        raise SystemExit(f"prepare.py: {cfg['input'] or ALPACA_URL} is not JSON: {e}")
    if not isinstance(records, list) or not records:
        raise SystemExit("prepare.py: expected a non-empty JSON list of {instruction, input, output} records")
    for i, r in enumerate(records):
        if not (isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ('instruction', 'input', 'output'))):
            raise SystemExit(f"prepare.py: record {i} is not an object with string instruction, input and output")
    records = [records[i] for i in np.random.RandomState(cfg['seed']).permutation(len(records))]
    n_train, n_test = int(len(records) * 0.85), int(len(records) * 0.1)  # the rest, 5%, is val
    splits = {'train': records[:n_train], 'test': records[n_train:n_train + n_test], 'val': records[n_train + n_test:]}
    enc, notes = load_gpt2(), {}
    for split, recs in splits.items():
        # prompt and response encoded apart, so prompt_lens is exactly where the loss starts
        prompts = [enc.encode_ordinary(alpaca_prompt(r['instruction'], r['input'])) for r in recs]
        segments = [p + enc.encode_ordinary(r['output']) + [EOT] for p, r in zip(prompts, recs)]
        write_examples(out, split, segments, prompt_lens=np.array([len(p) for p in prompts], np.int64))
        notes[f'{split}.npz'] = f"{len(recs):,} records, {sum(map(len, segments)):,} tokens"
    with open(os.path.join(out, 'test.json.tmp'), 'w', encoding='utf-8') as f:  # answers to compare with
        json.dump(splits['test'], f, indent=1, ensure_ascii=False)
    put_in_place(out, {**notes, 'test.json': f"{len(splits['test']):,} reference records"})

DATASETS = {  # name -> (function, its defaults); any other name is the user's own --input
    'stdlib': (prepare_text, dict(input=sysconfig.get_paths()['stdlib'], glob='*.py', tokenizer='char')),
    'shakespeare_char': (prepare_shakespeare, dict(tokenizer='char')),
    'shakespeare': (prepare_shakespeare, {}),
    'fineweb_edu': (prepare_fineweb, dict(val_frac=0.001)),  # 0.1% of 10B tokens is plenty of val
    'sms_spam': (prepare_sms_spam, dict(seed=123)),  # the seed of LLMs-from-scratch
    'alpaca': (prepare_alpaca, dict(seed=123)),
}

# -----------------------------------------------------------------------------

def parse(argv: list[str]) -> tuple[str, dict]:
    names = [a for a in argv if not a.startswith('-')]
    if len(names) > 1:
        raise SystemExit(f"prepare.py: one dataset at a time, got {' '.join(names)}")
    name = names[0] if names else 'stdlib'
    if os.path.basename(name) != name or name in ('.', '..'):
        raise SystemExit(f"prepare.py: the dataset name {name!r} is a path: outputs go to <out_dir>/<name>, so give a "
                         "plain name (and --out_dir for the folder, --input for the text)")
    cfg = dict(DEFAULTS)
    given = settings.configure(cfg, [a for a in argv if a.startswith('-')], __file__)
    cfg.update({k: v for k, v in DATASETS.get(name, (None, {}))[1].items() if k not in given})
    if name == 'hellaswag':  # an evaluation set: it has a script of its own, which reads the jsonl itself
        raise SystemExit("prepare.py: HellaSwag is hellaswag.py's: python hellaswag.py --init_from=gpt2 [--input=hellaswag_val.jsonl]")
    if name not in DATASETS and not cfg['input']:
        close = difflib.get_close_matches(name, DATASETS, 1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SystemExit(f"prepare.py: unknown dataset {name!r}: {hint}pick one of {', '.join(DATASETS)}, or pass --input=PATH")
    if cfg['tokenizer'] not in ('gpt2', 'char'):
        raise SystemExit(f"prepare.py: --tokenizer is gpt2 or char, got {cfg['tokenizer']!r}")
    if not 0 < cfg['val_frac'] < 1 or cfg['workers'] < 1 or cfg['max_shards'] < 0:
        raise SystemExit("prepare.py: --val_frac must be in (0, 1), --workers at least 1 and --max_shards at least 0")
    return name, cfg

def main(argv: list[str]) -> None:
    name, cfg = parse(argv)
    out = os.path.join(cfg['out_dir'], name)
    made = not os.path.isdir(out)
    try:
        DATASETS.get(name, (prepare_text,))[0](cfg, out)
    except BaseException as e:  # leave no half-written output, except what a fineweb run resumes from
        if not os.path.exists(os.path.join(out, 'progress.json')):
            for p in glob.glob(os.path.join(out, '*.tmp')):
                os.remove(p)
            if made and os.path.isdir(out) and not os.listdir(out):
                os.rmdir(out)
        if isinstance(e, OSError) and (e.errno == errno.ENOSPC or 'requested and' in str(e)):  # numpy's tofile
            free = shutil.disk_usage(cfg['out_dir'] if os.path.isdir(cfg['out_dir']) else '.').free / 2**20
            raise SystemExit(f"prepare.py: the disk of {out} is full ({free:.0f} MB free): make room, or pass "
                             "--out_dir=... on another disk; no output was kept") from None
        raise

if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        raise SystemExit("\nprepare.py: interrupted; run it again (fineweb_edu resumes where it stopped)")
    except OSError as e:
        raise SystemExit(f"prepare.py: {e}")
