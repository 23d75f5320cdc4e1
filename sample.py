"""
Sample text from a trained checkpoint or from OpenAI's GPT-2, streaming tokens as they come.
    python sample.py --out_dir=out-stdlib                       # from out-stdlib/ckpt.pt
    python sample.py --init_from=gpt2 --start="Hello, I'm a language model,"
    python sample.py --init_from=gpt2 --interactive=True        # You: / GPT: in a loop
    python sample.py --out_dir=out-alpaca --start="Name three primes."   # an instruction model answers
    python sample.py --out_dir=out-spam --start="WIN a FREE prize now!"    # a classifier labels the text
    python sample.py --help                                     # every setting
"""
import codecs
import os
import sys
import time

import torch

import settings
import quantize
from beam import beam_search
from gpt2 import GPT

init_from = 'resume'  # resume (out_dir/ckpt.pt) | gpt2, gpt2-medium, gpt2-large, gpt2-xl | a Hugging Face GPT-2 folder
out_dir = 'out'  # where resume finds ckpt.pt
start = '\n'  # the prompt, or FILE:path to read it from a file
num_samples = 3  # samples, one after another
max_new_tokens = 500  # tokens per sample, at most
temperature = 0.8  # 1.0 samples the model's distribution; lower is more conservative; 0 is greedy
top_k = 200  # sample only among the k likeliest tokens (None: all)
top_p = None  # sample only among the likeliest tokens whose probabilities sum to top_p (None: all)
num_beams = 1  # > 1: beam search (beam.py) instead of sampling: deterministic, the likeliest continuation it finds
length_penalty = 1.0  # beam search: a finished beam scores sum(log p) / length ** length_penalty; > 0 favours longer ones
stop_at_eot = True  # end a sample at <|endoftext|> (GPT-2 BPE models)
instruct = None  # wrap each prompt in the Alpaca template and print the response; None: if trained so
interactive = False  # read prompts from the terminal in a loop instead of using start
seed = 1337  # sample i uses seed + i, so every sample is reproducible alone
device = 'auto'  # auto picks cuda, then mps, then cpu; or e.g. cpu, cuda:1
dtype = 'auto'  # auto: bfloat16 on GPUs that have it, float16 on other GPUs, float32 on cpu; or name one. On an x86 CPU
#   float16 means float16 weights with float32 arithmetic (quantize.py): 1.2-1.7x float32's speed on a 124M model on a
#   Zen3, perplexity unchanged to 4 digits (elsewhere, as on ARM, float16 arithmetic). int8 (CPU): int8 weights, bf16
#   activations: 1.3-1.9x float32's speed with AVX-512, 1.1-1.5x with AVX2 only; perplexity within 0.02% (BENCH.md)
compile = False  # torch.compile the forward pass (needs a working compiler). On a CPU in float32 the one-token step
#   (quantize.compiled_float32): off Intel with inductor's C++ products, 1.2-1.5x eager for the 124M model on a Zen3 after
#   a minute's compile, the blocks' weights twice in memory; on Intel with MKL's, 1.1x after 38-41 s on a Xeon; int8 about
#   as eager, float16 weights 0.6x (their packed kernel breaks the graph): BENCH.md
threads = 0  # CPU threads; 0: one for models under 30M parameters (more threads only cost them), else torch's default
settings.configure(globals(), sys.argv[1:], __file__)


def die(msg):
    raise SystemExit(f'sample.py: {msg}')


def load_model():
    """The model, its vocabulary as (encode, decode_bytes, eot), and the checkpoint's config (or {})."""
    if init_from != 'resume':  # GPT-2 BPE: a larger vocabulary (nanoGPT's 50304) is padding, never sampled
        model = GPT.from_pretrained(init_from)
        if model.config.vocab_size < 50257:
            raise ValueError(f'{init_from} has {model.config.vocab_size} tokens, too few for GPT-2 BPE (50257 ids, which sample.py '
                             'reads a folder as): sample from the train.py checkpoint instead (--out_dir=...)')
        model.config.vocab_size = 50257
        return model, bpe(), {}
    ckpt = settings.read_checkpoint(os.path.join(out_dir, 'ckpt.pt'))
    model = GPT.from_checkpoint(ckpt)
    cfg = dict(ckpt['config'], classes=ckpt.get('classes'))
    meta = os.path.join(cfg.get('data_dir', 'data'), cfg['dataset'], 'meta.pkl')
    if not os.path.exists(meta):  # GPT-2 BPE (nanoGPT's checkpoints pad it to 50304 ids, never sampled)
        if not 50257 <= model.config.vocab_size <= 50304:
            raise ValueError(f'{meta} is gone, and the model has {model.config.vocab_size} symbols, not GPT-2 BPE: '
                             f"prepare {cfg['dataset']} again as for training (it writes meta.pkl)")
        model.config.vocab_size = 50257
        return model, bpe(), cfg
    m = settings.read_meta(meta)
    if m['vocab_size'] != model.config.vocab_size:
        raise ValueError(f"{meta} has {m['vocab_size']} characters but the model has {model.config.vocab_size}: "
                         f"prepare.py rewrote it for other data; prepare {cfg['dataset']} again as for training")
    stoi, itos = m['stoi'], m['itos']

    def encode(s):
        missing = sorted(set(s) - set(stoi))
        if missing:
            raise ValueError(f'the prompt has characters this model never saw: {"".join(missing)!r}')
        return [stoi[c] for c in s]
    return model, (encode, lambda i: itos[i].encode(), None), cfg


def bpe():
    import tiktoken
    try:
        enc = tiktoken.get_encoding('gpt2')
    except Exception as e:  # tiktoken downloads the BPE files once, then reads its cache
        raise ValueError(f"could not load GPT-2's BPE ({type(e).__name__}): connect to the network once, "
                         "or set TIKTOKEN_CACHE_DIR to a folder that holds tiktoken's cached gpt2 files") from None
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'}), enc.decode_single_token_bytes,
            enc.eot_token)


def classify(text: str):
    """Print the classifier's likeliest label for text, with its probability."""
    ids = encode(text)[:model.config.block_size]
    if not ids:
        raise ValueError('nothing to classify: give --start=TEXT')
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids], device=device))[0].float(), dim=-1)[0]
    k = probs.argmax().item()
    print(f'{classes[k]} (p={probs[k]:.3f})')


def sample(ids: list[int], k: int):
    """Stream one continuation of the prompt ids to stdout; return (tokens, seconds)."""
    if num_beams > 1:
        return beam(ids)
    idx = torch.tensor([ids[-model.config.block_size:]], device=device)
    utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')  # a character may span tokens
    n, t0 = 0, time.perf_counter()
    for nxt in model.stream(idx, max_new_tokens, temperature, top_k, top_p,
                            eot if stop_at_eot else None, seed + k):
        n += 1
        tok = nxt.item()
        if tok == eot and stop_at_eot:
            break
        print(utf8.decode(decode_bytes(tok)), end='', flush=True)
    print(utf8.decode(b'', final=True))
    return n, time.perf_counter() - t0


def beam(ids: list[int]):
    """Print the continuation of the prompt ids that beam search finds, whole at the end (it cannot stream);
    return (tokens, seconds). The prompt is cropped to leave room for max_new_tokens in block_size."""
    idx = torch.tensor([ids[max(0, len(ids) + max_new_tokens - model.config.block_size):]], device=device)
    t0 = time.perf_counter()
    new = beam_search(model, idx, max_new_tokens, num_beams, eot if stop_at_eot else None, length_penalty)[0, idx.size(1):]
    new = new.tolist()
    shown = new[:-1] if stop_at_eot and new and new[-1] == eot else new  # ends at <|endoftext|>, not printed
    print(b''.join(map(decode_bytes, shown)).decode('utf-8', errors='replace'))
    return len(new), time.perf_counter() - t0


def prompt_ids(text: str) -> list[int]:
    """The prompt's ids, wrapped in the Alpaca template for an instruction model; an empty prompt starts a
    fresh document at <|endoftext|>."""
    ids = encode(wrap(text)) or ([eot] if eot is not None else [])
    if not ids:
        raise ValueError('the prompt is empty and this vocabulary has no <|endoftext|>: give --start=TEXT')
    return ids


# ----------------------------------------------------------------------------- checks, then the model
try:
    device = settings.resolve_device(device)
except ValueError as e:
    die(str(e))
if dtype == 'auto':
    dtype = 'float32' if not device.startswith('cuda') else 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
if dtype not in ('float32', 'bfloat16', 'float16', 'int8'):
    die(f'unknown dtype {dtype!r}: use auto, float32, bfloat16, float16 or int8 (CPU)')
if dtype == 'int8' and device != 'cpu':
    die(f'dtype=int8 is for CPUs (its kernel is torch\'s CPU one): on {device} use bfloat16 or float16')
for bad, msg in ((temperature < 0 or 0 < temperature < 1e-4, f'temperature must be 0 (greedy) or at least 1e-4, got {temperature}'),
                 (not (top_k is None or type(top_k) is int and top_k >= 1), f'top_k must be at least 1, or None for all tokens; got {top_k!r}'),
                 (not (top_p is None or type(top_p) in (int, float) and 0 < top_p <= 1), f'top_p must be in (0, 1], or None; got {top_p!r}'),
                 (instruct not in (None, True, False), f'instruct must be True, False or None (as trained); got {instruct!r}'),
                 (max_new_tokens < 0, f'max_new_tokens must be >= 0, got {max_new_tokens}'),
                 (num_beams < 1, f'num_beams must be at least 1 (1: sample, > 1: beam search), got {num_beams}'),
                 (num_samples < 1 or threads < 0, f'num_samples must be at least 1 and threads at least 0; got {num_samples}, {threads}'),
                 (not 0 <= seed < 2 ** 63, f'seed must be in [0, 2**63), got {seed}')):
    if bad:
        die(msg)
try:
    if start.startswith('FILE:'):
        with open(start[5:], encoding='utf-8') as f:
            start = f.read()
    model, (encode, decode_bytes, eot), trained = load_model()
    if num_beams > 1 and max_new_tokens >= model.config.block_size:  # beam search cannot slide the window
        raise ValueError(f'beam search needs the prompt and max_new_tokens={max_new_tokens} new tokens in one window '
                         f'of block_size={model.config.block_size}: lower max_new_tokens')
except (ValueError, OSError) as e:  # what a user can fix: a missing file, a wrong checkpoint or folder
    die(e)
classes = trained.get('classes') or [str(i) for i in range(model.config.n_classes)]
if instruct is None:
    instruct = trained.get('task') == 'instruct'
if instruct:
    from finetune_data import alpaca_prompt as wrap  # the one template, shared with the training data
else:
    def wrap(text):
        return text
n_params = model.num_params()  # (int8 and packed float16 weights are not parameters)
x86_float16 = device == 'cpu' and dtype == 'float16' and quantize.fbgemm()
if dtype == 'int8' or x86_float16:
    try:
        (quantize.int8 if dtype == 'int8' else quantize.float16)(model)
    except ValueError as e:
        die(e)
else:  # weights in dtype: no per-step casts as under autocast
    model.eval().to(device, getattr(torch, dtype))
cpu_float32 = device == 'cpu' and dtype == 'float32'
if cpu_float32:
    (quantize.compiled_float32 if compile else quantize.fast_float32)(model)
if device == 'cpu' and (threads or n_params < 30e6):
    torch.set_num_threads(threads or 1)
if compile and not cpu_float32:
    model.hidden = torch.compile(model.hidden, dynamic=True)
try:  # a prompt it cannot read is one line, before anything is printed
    ids = None if interactive or model.config.n_classes else prompt_ids(start)
except ValueError as e:
    die(e)
print(f'{init_from if init_from != "resume" else out_dir}: {n_params / 1e6:.1f}M parameters, '
      f'{device}, {dtype}' + (' weights, float32 arithmetic' if x86_float16 else ''), file=sys.stderr)

# ----------------------------------------------------------------------------- sampling
compiling = ', compiling included' if compile else ''  # the first sample's time, told so it is not taken for the speed
try:
    if interactive:  # Ctrl-C stops a reply; at the prompt, Ctrl-C or Ctrl-D quits
        k = 0
        while True:
            try:
                prompt = input('You: ')
            except (EOFError, KeyboardInterrupt):
                print()
                break
            try:  # (the print inside: a Ctrl-C right after it stops this reply too, not the program)
                print('GPT: ', end='', flush=True)
                if model.config.n_classes:
                    classify(prompt)
                else:
                    n, dt = sample(prompt_ids(prompt), k)
                    print(f'({n} tokens, {n / dt:.1f} tokens/s{compiling})', file=sys.stderr)
                    compiling = ''  # only the first sample compiles
            except KeyboardInterrupt:
                print('\n(stopped)')
            except ValueError as e:  # e.g. a character the model never saw: say so, ask again
                print(f'({e})')
            k += 1
    elif model.config.n_classes:
        try:
            classify(start)
        except ValueError as e:
            die(e)
    else:
        for k in range(num_samples):
            print('' if instruct else start, end='')
            n, dt = sample(ids, k)
            print(f'--- {n} tokens, {n / dt:.1f} tokens/s{compiling}', file=sys.stderr)
            compiling = ''  # only the first sample compiles
except KeyboardInterrupt:
    print()
