"""
The speed claims of the README, measured in one run on this machine, each next to a ceiling measured here too:
- ceilings (always): memory read bandwidth (the best of summing a 512 MB float32 tensor and a float32 matrix-vector
  product over one), and the matrix-multiply rate in float32 and bfloat16 (1024 x 1024, best of 3)
- train: config/train_shakespeare_char_cpu.py against nanoGPT's CPU recipe (its README's command: 4 x 128,
  block 64, batch 12, AdamW at 1e-3, 2000 iterations), run in turn, each final model then evaluated on every
  window of the val split. With --nanogpt=path/to/nanoGPT its own train.py runs there (prepare its data
  first: python data/shakespeare_char/prepare.py, in that folder); else its recipe runs in our train.py,
  whose float32 steps cost what nanoGPT's do per token, so the ratio is then the recipe's alone
- sample: the GPT-2 124M shape, batch 1 (random weights: the speed does not depend on them): transformers'
  generate in float32, ours in float32 (its memory reads per second as a share of the ceiling: each token reads
  every weight once), ours in int8 and, on x86, with float16 weights (quantize.py; sample.py's --dtype=int8
  and --dtype=float16), each also compiled (as with sample.py --compile=True; the compile time is printed, not
  timed); then the perplexity of the trained model of `train` (or of --ckpt) on the whole val split, float32
  against int8 and float16
The machines here are shared and drift 10-30% within minutes: variants run in turn, ratios are taken within a
round, and the medians over rounds are printed.

$ python prepare.py shakespeare_char
$ python bench.py                                  # everything: about 6 minutes on 2 cores
$ python bench.py --parts=sample --rounds=3       # the ceilings and sampling only
$ python bench.py --nanogpt=../nanoGPT
"""
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

import quantize
import settings
from gpt2 import GPT

parts = 'train,sample'  # which parts to run after the ceilings, comma-separated
rounds = 2  # rounds of each comparison, its variants in turn
nanogpt = ''  # a nanoGPT checkout to run its train.py in; '' runs its recipe in our train.py
data_dir = 'data'  # where prepare.py wrote shakespeare_char/
new_tokens = 256  # tokens sampled per timed run
compile = True  # also time ours with the forward pass compiled (sample.py --compile=True)
ckpt = ''  # a train.py checkpoint (shakespeare_char) for the int8 and float16 perplexities when `train` does not run

HERE = os.path.dirname(os.path.abspath(__file__))
NANOGPT_FLAGS = ['--device=cpu', '--compile=False', '--eval_iters=20', '--log_interval=1', '--block_size=64',
                 '--batch_size=12', '--n_layer=4', '--n_head=4', '--n_embd=128', '--max_iters=2000',
                 '--lr_decay_iters=2000', '--dropout=0.0']
# nanoGPT's config/train_shakespeare_char.py under those flags, in train.py's settings (float32, as nanoGPT on a CPU)
RECIPE = ['--dataset=shakespeare_char', '--optimizer=adamw', '--dtype=float32', '--learning_rate=1e-3', '--min_lr=1e-4',
          '--warmup_iters=100', '--beta2=0.99', '--eval_interval=250', '--always_save_checkpoint=False', '--bias=False',
          *NANOGPT_FLAGS]


def best(f, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def ceilings():
    x = torch.ones(768 * 174763)  # 512 MB
    v = torch.ones(1, 768)
    read = max(x.numel() * 4 / best(x.sum), x.numel() * 4 / best(lambda: v @ x.view(768, -1)))
    return read, {dt: settings.cpu_flops(dt, 1024) for dt in (torch.float32, torch.bfloat16)}  # seconds where bf16 is emulated


def val_loss(model, windows, batch=64):
    """Mean loss over every non-overlapping window (x, y) of the val split."""
    x, y = windows
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])[0].float()
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y[i:i + batch].reshape(-1), reduction='sum').item()
    return total / y.numel()


def windows(block):
    val = np.memmap(os.path.join(data_dir, 'shakespeare_char', 'val.bin'), dtype=np.uint16, mode='r')
    n = (len(val) - 1) // block
    xy = torch.from_numpy(val[:n * block + 1].astype(np.int64))
    return xy[:-1].view(n, block), xy[1:].view(n, block)


def run_ours(out, flags):
    t = time.time()
    subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), *flags, f'--data_dir={os.path.abspath(data_dir)}',
                    f'--out_dir={out}'], check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    model = GPT.from_checkpoint(settings.read_checkpoint(os.path.join(out, 'ckpt.pt'))).eval()
    return wall, val_loss(model, windows(model.config.block_size)), model


def run_nanogpt(out):
    t = time.time()
    subprocess.run([sys.executable, 'train.py', 'config/train_shakespeare_char.py', *NANOGPT_FLAGS, f'--out_dir={out}'],
                   cwd=nanogpt, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    sys.path.insert(0, os.path.abspath(nanogpt))
    from model import GPT as NanoGPT, GPTConfig as NanoConfig  # nanoGPT's model.py, to evaluate its checkpoint
    ck = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=False)
    model = NanoGPT(NanoConfig(**ck['model_args']))
    model.load_state_dict({k.removeprefix('_orig_mod.'): v for k, v in ck['model'].items()})
    x, y = windows(ck['model_args']['block_size'])
    with torch.no_grad():
        loss = sum(model.eval()(x[i:i + 64], y[i:i + 64])[1].item() * y[i:i + 64].numel() for i in range(0, len(x), 64))
    return wall, loss / y.numel()


def train():
    ref_name = 'nanoGPT' if nanogpt else "nanoGPT's recipe in train.py"
    rows, model = [], None
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            ref = run_nanogpt(os.path.join(d, 'ref')) if nanogpt else run_ours(os.path.join(d, 'ref'), RECIPE)[:2]
            wall, loss, model = run_ours(os.path.join(d, 'ours'), [os.path.join(HERE, 'config', 'train_shakespeare_char_cpu.py')])
        rows.append((ref[0], ref[1], wall, loss))
        print(f'  round {r + 1}: {ref_name} {ref[0]:.1f} s to val {ref[1]:.4f}; ours {wall:.1f} s to val {loss:.4f}: '
              f'{wall / ref[0]:.2f}x the time' + ('' if loss <= ref[1] else ' (but to a higher loss)'))
    med = [statistics.median(c) for c in zip(*rows)]
    print(f'train: ours reached val {med[3]:.4f} in {med[2]:.1f} s, {ref_name} {med[1]:.4f} in {med[0]:.1f} s: '
          f'{statistics.median(w / rw for rw, _, w, _ in rows):.2f}x its wall time (median of {rounds})')
    return model


def sample(read, trained):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    ref = GPT2LMHeadModel(GPT2Config()).eval()
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = GPT.from_pretrained(d).eval()
    idx = torch.randint(0, 50257, (1, 16))
    convert = {'int8': quantize.int8, 'float16': quantize.float16} if quantize.fbgemm() else {'int8': quantize.int8}
    models = {name: f(copy.deepcopy(ours)) for name, f in convert.items()}  # as sample.py
    plain = copy.deepcopy(ours) if compile else None  # for compiled_float32, which takes a model before fast_float32
    models = {'float32': quantize.fast_float32(ours), **models}
    runs = {'transformers float32': lambda: ref.generate(idx, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                         do_sample=True, top_k=200, pad_token_id=50256)}
    for name, m in list(models.items()):
        runs[f'ours {name}'] = lambda m=m: m.generate(idx, new_tokens, top_k=200)
    held = os.environ.get('ATEN_CPU_CAPABILITY')  # torch held below its CPU: inductor's code then gave NaN (BENCH.md)
    if compile and held:
        print(f'  (compiled runs skipped: ATEN_CPU_CAPABILITY={held})')
    if compile and not held:  # sample.py --compile=True: float32 as quantize.compiled_float32, the others' forward compiled
        for name, m in list(models.items()):
            t = time.time()
            if name == 'float32':
                m = quantize.compiled_float32(copy.deepcopy(plain))
            else:
                m = copy.deepcopy(m)
                m.hidden = torch.compile(m.hidden, dynamic=True)
            m.generate(idx, 8)
            print(f'  (ours {name} compiled in {time.time() - t:.0f} s)')
            runs[f'ours {name} compiled'] = lambda m=m: m.generate(idx, new_tokens, top_k=200)
    cfg = ours.config  # bytes one token reads: every block weight and bias, the head's vocab rows, 2 embedding rows
    weights = sum(p.numel() for n, p in ours.named_parameters() if n.startswith('transformer.h.')) + cfg.vocab_size * cfg.n_embd
    rates = []
    with torch.no_grad():
        for r in range(rounds):  # the bandwidth again each round, beside the runs it bounds
            rates.append({k: new_tokens / best(f, 2) for k, f in runs.items()})
            rates[-1]['ceiling'] = (ceilings()[0] if r else read) / (4 * weights)
    med = {k: statistics.median(r[k] for r in rates) for k in rates[0]}
    print(f'sample (batch 1, {new_tokens} new tokens; medians of {rounds} rounds of best-of-2): float32 reads '
          f"{4 * weights / 1e6:.0f} MB of weights per token: the memory's read rate allows {med['ceiling']:.1f} tok/s")
    for k in runs:  # float16 weights are half the bytes: twice the float32 ceiling
        bound = next((d for d in ('float32', 'float16') if d in k), None)
        share = statistics.median(r[k] / r['ceiling'] / (2 if bound == 'float16' else 1) for r in rates)
        print(f'  {k:<24} {med[k]:6.1f} tok/s  {statistics.median(r[k] / r["transformers float32"] for r in rates):.2f}x '
              'transformers' + (f', {share:.0%} of the {bound} ceiling' if bound else ''))
    if trained is None and ckpt:
        trained = GPT.from_checkpoint(settings.read_checkpoint(ckpt)).eval()
    if trained is not None:
        w = windows(trained.config.block_size)
        a = val_loss(trained, w)
        for name, f in convert.items():
            b = val_loss(f(copy.deepcopy(trained)), w)
            print(f'{name} quality: val perplexity {np.exp(a):.4f} in float32, {np.exp(b):.4f} in {name} '
                  f'({np.exp(b - a) - 1:+.2%}), {trained.num_params() / 1e6:.2f}M-parameter shakespeare_char model, '
                  f'{w[1].numel():,} val tokens')


def main():
    settings.configure(globals(), sys.argv[1:], __file__)
    todo = parts.split(',')
    if set(todo) - {'train', 'sample', ''}:
        sys.exit(f'bench.py: unknown part in {parts!r}: use train, sample or both')
    if not os.path.exists(os.path.join(data_dir, 'shakespeare_char', 'val.bin')) and ('train' in todo or ckpt):
        sys.exit('bench.py: no shakespeare_char data: run `python prepare.py shakespeare_char` first (or --data_dir=...)')
    if 'sample' in todo:
        try:
            import transformers  # noqa: F401 (the reference the sampling part compares against)
        except ImportError:
            sys.exit('bench.py: the sampling part compares against transformers: pip install transformers, or --parts=train')
    if nanogpt and not os.path.exists(os.path.join(nanogpt, 'data', 'shakespeare_char', 'train.bin')):
        sys.exit(f'bench.py: {nanogpt}/data/shakespeare_char has no train.bin: run its data/shakespeare_char/prepare.py first')
    flags = open('/proc/cpuinfo').read() if os.path.exists('/proc/cpuinfo') else ''
    model = next((line.split(':', 1)[1].strip() for line in flags.splitlines() if line.startswith('model name')), platform.processor())
    print(f'{model}, {os.cpu_count()} CPUs, avx512_bf16 {"yes" if "avx512_bf16" in flags else "no"}, '
          f'amx {"yes" if "amx_bf16" in flags else "no"}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} '
          f'kernels), {torch.get_num_threads()} threads')
    read, mm = ceilings()
    print(f'ceilings: memory read {read / 1e9:.1f} GB/s; matmul float32 {mm[torch.float32] / 1e9:.0f} GFLOP/s, '
          f'bfloat16 {mm[torch.bfloat16] / 1e9:.0f} GFLOP/s')
    trained = train() if 'train' in todo else None
    if 'sample' in todo:
        sample(read, trained)


if __name__ == '__main__':
    main()
