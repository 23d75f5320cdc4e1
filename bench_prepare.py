"""
Benchmark prepare.py's GPT-2 BPE path on a generated corpus of about --mb MB (default 300):
throughput and peak memory, next to tiktoken's own encode_ordinary_batch on all cores.

$ TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python bench_prepare.py [--mb=300]
"""
import glob
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np
import tiktoken

import settings

mb = 300  # size of the generated corpus, in MB
settings.configure(globals(), sys.argv[1:], __file__)
here = os.path.dirname(os.path.abspath(__file__))


def make_corpus(path: str, size: int) -> None:
    # real prose and code (Tiny Shakespeare if it is here, and the stdlib's sources), shuffled
    # by paragraph so that the text is not one block repeated, written without holding it all
    rng = random.Random(0)
    sources = glob.glob(os.path.join(sysconfig.get_paths()['stdlib'], '*.py'))
    sources += glob.glob(os.path.join(here, '..', 'shared', 'data', 'tinyshakespeare', 'input.txt'))
    paras = [p + '\n\n' for s in sources for p in open(s, encoding='utf-8', errors='replace').read().split('\n\n')]
    with open(path, 'w', encoding='utf-8') as f:
        written = 0
        while written < size:
            block = ''.join(rng.choices(paras, k=2000))
            f.write(block)
            written += len(block.encode())


def rss_tree(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes, from /proc."""
    total, kids = 0, [pid]
    while kids:
        p = kids.pop()
        try:
            with open(f'/proc/{p}/statm') as f:
                total += int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
            for t in os.listdir(f'/proc/{p}/task'):
                with open(f'/proc/{p}/task/{t}/children') as f:
                    kids += [int(c) for c in f.read().split()]
        except OSError:
            pass  # it ended while we looked
    return total


with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, 'corpus.txt')
    make_corpus(corpus, mb << 20)
    nbytes = os.path.getsize(corpus)
    print(f"corpus: {nbytes / 1e6:.0f} MB, {os.cpu_count()} cores")

    cmd = [sys.executable, os.path.join(here, 'prepare.py'), 'bench', f'--input={corpus}', f'--out_dir={tmp}']
    t0, peak = time.time(), 0
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    while p.poll() is None:  # sample the whole process tree's memory while it runs
        peak = max(peak, rss_tree(p.pid))
        time.sleep(0.05)
    dt = time.time() - t0
    assert p.returncode == 0, f"prepare.py failed: {' '.join(cmd)}"
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # largest single process
    ntok = sum(os.path.getsize(os.path.join(tmp, 'bench', f'{s}.bin')) // 2 for s in ('train', 'val'))
    print(f"prepare.py: {nbytes / 1e6 / dt:.1f} MB/s ({ntok:,} tokens in {dt:.1f}s), "
          f"peak RSS {peak / 2**20:.0f} MiB for all its processes together, {maxrss / 2**20:.0f} MiB for the largest")

    # tiktoken alone on the same text, in the same 1 MB pieces, never all of it in memory at once
    enc = tiktoken.get_encoding('gpt2')
    t0, n = time.time(), 0
    with open(corpus, encoding='utf-8', newline='') as f:
        while piece := f.read(64 << 20):
            batch = [piece[i:i + (1 << 20)] for i in range(0, len(piece), 1 << 20)]
            n += sum(len(ids) for ids in enc.encode_ordinary_batch(batch, num_threads=os.cpu_count()))
    dt = time.time() - t0
    print(f"tiktoken encode_ordinary_batch(num_threads={os.cpu_count()}): {nbytes / 1e6 / dt:.1f} MB/s "
          f"({n:,} tokens in {dt:.1f}s)")
    ids = np.fromfile(os.path.join(tmp, 'bench', 'train.bin'), np.uint16, count=1000)
    assert enc.decode(ids.tolist()) and ntok > 0.95 * n
