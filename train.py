"""
Train a GPT-2 on data/<dataset>/{train,val}.bin, on a laptop CPU or on many GPUs, resumably.

$ python train.py --batch_size=8                         # one process: cuda, else mps, else cpu
$ python train.py config/train_shakespeare_char.py       # a config file of globals, then --key=value
$ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py   # DDP on 8 GPUs
$ python train.py config/train_gpt2.py --init_from=resume  # continue exactly where it stopped
Batches are a pure function of (seed, iteration): ranks, micro-steps and resumed runs see one process's rows.
"""
import contextlib
import csv
import math
import os
import platform
import signal
import sys
import time

import numpy as np
import torch

import settings
from gpt2 import GPT, PRESETS, GPTClassifier, GPTConfig
from muon import Muon

# ----------------------------------------------------------------------------- settings
# I/O
out_dir = 'out'  # checkpoint ckpt.pt and log.csv go here
eval_interval = 2000  # evaluate train/val loss (and save a checkpoint) every this many iterations
log_interval = 1  # print and log a training line every this many iterations
eval_iters = 200  # batches per evaluation, shared out over all ranks
eval_only = False  # evaluate once and exit (with init_from=resume or gpt2*)
always_save_checkpoint = True  # save at every evaluation, the end and SIGINT/SIGTERM: ckpt.pt is the last model
#   False: save only at evaluations that improve val loss, the first too: ckpt.pt is the best model; resume goes on from it
init_from = 'scratch'  # scratch | resume (out_dir/ckpt.pt) | gpt2, gpt2-medium, gpt2-large, gpt2-xl | a Hugging Face folder
# wandb (imported only when wandb_log is True)
wandb_log = False  # also send the log lines to Weights & Biases
wandb_project = 'gpt2'  # its project ...
wandb_run_name = 'run'  # ... and run name
# data
data_dir = 'data'  # datasets live in <data_dir>/<dataset>/, as prepare.py writes them
dataset = 'stdlib'  # prepare.py's default corpus: Python's standard library, characters
gradient_accumulation_steps = 1  # micro-steps per iteration, in total over all ranks (as nanoGPT)
batch_size = 12  # rows per micro-step per rank
block_size = 256  # tokens per row
# model
n_layer = 6  # transformer blocks
n_head = 6  # attention heads per block (n_embd must be a multiple)
n_embd = 384  # width of the embeddings and the residual stream
dropout = 0.0  # 0 for pretraining; 0.1+ when fine-tuning or for small data
bias = False  # biases in Linears and LayerNorms (GPT-2 has them; without is a little better and faster)
# optimizer
optimizer = 'adamw'  # adamw | muon: Muon for the blocks' weight matrices, AdamW for the rest
learning_rate = 1e-3  # peak learning rate
max_iters = 5000  # total iterations (optimizer steps) of the run
weight_decay = 1e-1  # on matrices and embeddings only
beta1 = 0.9  # AdamW's decay of the gradient's running mean ...
beta2 = 0.99  # ... and of its square (0.95 for GPT-2 sized runs)
grad_clip = 1.0  # clip the gradient's global norm to this; 0 disables
# learning rate schedule: linear warmup, then cosine down to min_lr
decay_lr = True  # False: constant learning_rate
warmup_iters = 100  # lr = learning_rate * (it + 1) / (warmup_iters + 1) for it < warmup_iters: above 0 at step 0
lr_decay_iters = 5000  # the cosine reaches min_lr here (usually = max_iters)
min_lr = 1e-4  # floor; usually learning_rate / 10
# system
backend = 'auto'  # DDP backend: auto picks nccl on cuda, gloo on cpu
device = 'auto'  # auto picks cuda, then mps, then cpu; or e.g. cuda:1, cpu
dtype = 'auto'  # float32 | bfloat16 | float16 (autocast). auto: bfloat16 on cuda GPUs that have it, float16 + GradScaler
#   on other cuda GPUs, float32 on mps; on a CPU bfloat16 only if its bf16 matmuls measure 1.2x faster than float32
compile = None  # torch.compile the model; None: True on cuda (not Windows; minutes of start-up), False elsewhere
seed = 1337  # model init, dropout and the batch draws all follow from it
peak_flops = 0.0  # FLOP/s that MFU is relative to; 0: a GPU's datasheet peak (settings.GPU_PEAKS), a CPU's measured rate
# fine-tuning and evaluation
task = 'lm'  # lm: next tokens of train.bin | classify: labels of train.npz | instruct: responses of train.npz
trainable_layers = -1  # >= 0: train only the last k blocks, the final LayerNorm and the head; -1: all
lora_rank = 0  # > 0: freeze the model and train LoRA adapters of this rank on every projection instead
lora_alpha = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
lora_dropout = 0.0  # dropout on the adapters' input
hellaswag_interval = 0  # > 0: HellaSwag accuracy (hellaswag.py) at evaluations every this many iterations
hellaswag_examples = 0  # score the first this many HellaSwag examples (0: all 10,042)
hellaswag_input = ''  # hellaswag_val.jsonl; '' downloads it once to <data_dir>/hellaswag/
# -----------------------------------------------------------------------------
_defaults = settings.plain(globals())
_given = settings.configure(globals(), sys.argv[1:], __file__)  # {key: '--' (a flag) or the config file that set it}

def die(msg):
    raise SystemExit(f'train.py: {msg}')

def user_error(fn, *a, **kw):  # gpt2.py raises ValueError for what a user can fix
    try:
        return fn(*a, **kw)
    except ValueError as e:
        die(str(e))

# ----------------------------------------------------------------------------- resume (1/2): the run's settings
ckpt = user_error(settings.read_checkpoint, os.path.join(out_dir, 'ckpt.pt')) if init_from == 'resume' else None
for k, v in (ckpt['config'] if ckpt else {}).items():  # a resumed run goes on with its own settings; flags win
    if k in _defaults and _given.get(k) != '--' and k not in ('init_from', 'out_dir', 'eval_only'):
        v = 'auto' if v == '' and _defaults[k] == 'auto' else v  # older checkpoints said ''
        if k in _given and v != globals()[k] and os.environ.get('RANK', '0') == '0':  # (the run may have had a flag)
            print(f"note: resuming with the run's {k}={v!r}, not {_given[k]}'s {globals()[k]!r}: a --{k}= flag would win")
        globals()[k] = v
config = {k: globals()[k] for k in _defaults}  # saved in every checkpoint: the exact settings of the run

# ----------------------------------------------------------------------------- checks, processes, device
settings.check(globals(), __file__, minimum=dict(batch_size=1, block_size=1, gradient_accumulation_steps=1, eval_iters=1,
               eval_interval=1, log_interval=1, max_iters=0, n_layer=1, n_head=1, n_embd=1, seed=0, learning_rate=0, min_lr=0,
               weight_decay=0, grad_clip=0, lora_rank=0, warmup_iters=0, lr_decay_iters=0, peak_flops=0, hellaswag_interval=0,
               hellaswag_examples=0), maximum=dict(seed=2 ** 63 - 1), fraction=('dropout', 'lora_dropout', 'beta1', 'beta2'),
               choices=dict(dtype=('auto', 'float32', 'bfloat16', 'float16'), compile=(None, True, False),
                            task=('lm', 'classify', 'instruct'), optimizer=('adamw', 'muon')))
if init_from not in ('scratch', 'resume', *PRESETS) and not os.path.isdir(init_from):
    die(f"unknown init_from {init_from!r}: use scratch, resume, {', '.join(PRESETS)}, or a Hugging Face GPT-2 folder")
if not out_dir or os.path.exists(out_dir) and not os.path.isdir(out_dir):
    die(f'out_dir {out_dir!r} is {"a file" if out_dir else "empty"}: name a folder')
if init_from != 'resume' and not eval_only and os.path.exists(os.path.join(out_dir, 'ckpt.pt')):
    die(f'{out_dir} holds another run: continue it with --init_from=resume, or start this one in a new --out_dir')
if lora_rank > 0 and trainable_layers >= 0 and not eval_only:
    die('lora_rank trains adapters only: drop trainable_layers (or lora_rank)')
if hellaswag_interval and eval_interval % hellaswag_interval and hellaswag_interval % eval_interval and not eval_only:
    die('hellaswag_interval runs at evaluations: make it a multiple or a divisor of eval_interval')
wandb = user_error(settings.require, 'wandb', 'wandb_log=True') if wandb_log and not eval_only else None  # only if asked

ddp = 'RANK' in os.environ  # started by torchrun
rank, local_rank, world_size = (int(os.environ.get(k, d)) for k, d in (('RANK', 0), ('LOCAL_RANK', 0), ('WORLD_SIZE', 1)))
master = rank == 0
device = user_error(settings.resolve_device, device)  # auto: cuda, then mps, then cpu
device_type = device.split(':')[0]
if device_type == 'cuda':
    device = f'cuda:{local_rank}' if ddp else device
    torch.cuda.set_device(device)
if gradient_accumulation_steps % world_size and not eval_only:  # it is the total over all ranks
    config['gradient_accumulation_steps'] = gradient_accumulation_steps = -(-gradient_accumulation_steps // world_size) * world_size
    if master:
        print(f'note: gradient_accumulation_steps rounded up to {gradient_accumulation_steps}, a multiple of the {world_size} processes')
micro_steps = gradient_accumulation_steps // world_size  # this rank's share

# bf16 autocast pays on a CPU only where its matmuls are faster (2.3x on a Zen4, 0.55x on a Xeon): float32 runs skip timing it
cpu_peak = {d: settings.cpu_flops(getattr(torch, d)) for d in (('float32',) if dtype == 'float32' else ('float32', 'bfloat16'))} if device_type == 'cpu' else {}
ratio = cpu_peak['bfloat16'] / cpu_peak['float32'] if 'bfloat16' in cpu_peak else 0.0
if dtype == 'auto' and device_type == 'cuda':
    dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
elif dtype == 'auto':  # mps: float32. Within 2x of the line, where noise could flip it, a resumed run keeps its dtype
    dtype = ckpt.get('dtype', 'float32') if ckpt and ckpt.get('device') == device and 0.6 < ratio < 2.4 else \
        'bfloat16' if ratio > 1.2 else 'float32'
compile = device_type == 'cuda' and platform.system() != 'Windows' if compile is None else compile
if optimizer == 'muon' and (dtype == 'float16' or lora_rank > 0 or trainable_layers == 0):  # (GradScaler skips per optimizer)
    die(f"optimizer=muon trains whole weight matrices in bf16 or float32, not {'in float16' if dtype == 'float16' else 'frozen (LoRA, trainable_layers=0)'}: use adamw")
if ddp:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group(backend={'auto': 'nccl' if device_type == 'cuda' else 'gloo'}.get(backend, backend))
torch.manual_seed(seed + rank)  # model init is then overwritten by rank 0's weights in DDP; dropout differs per rank
torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere and later
autocast = contextlib.nullcontext() if dtype == 'float32' else torch.autocast(device_type, getattr(torch, dtype))

# ----------------------------------------------------------------------------- data: token streams
path = os.path.join(data_dir, dataset)
# a stream per kind of draw, seeded by (seed, stream, iteration): eval draws repeat, not moving training's (ids kept for resumes)
STREAMS = {('train', False): 0, ('train', True): 2, ('val', True): 3}
vocab_size = 50257  # GPT-2 BPE, when prepare.py wrote no meta.pkl (the model pads it to 50304 itself)
if task == 'lm':
    for split in ('train', 'val'):
        if not os.path.exists(os.path.join(path, f'{split}.bin')):
            die(f'no data at {os.path.join(path, f"{split}.bin")}: run `python prepare.py {dataset}` first '
                '(or --data_dir=... where it is)')
    data_len = {s: os.path.getsize(os.path.join(path, f'{s}.bin')) // 2 for s in ('train', 'val')}
    if os.path.exists(os.path.join(path, 'meta.pkl')):
        vocab_size = user_error(settings.read_meta, os.path.join(path, 'meta.pkl'))['vocab_size']
    if any(os.path.getsize(os.path.join(path, f'{s}.bin')) % 2 for s in data_len):
        die(f'a .bin file in {path} has an odd number of bytes, so it is not uint16 token ids: prepare it again')
    if min(data_len.values()) <= block_size:
        s = min(data_len, key=data_len.get)
        die(f'block_size={block_size} is larger than the data: {s}.bin has only {data_len[s]} tokens')

def draw(split, it, high, evaluation=False):
    """This rank's row indices in [0, high) for iteration it (one draw for all ranks, sliced), or the it-th eval batch's."""
    ix = np.random.default_rng([seed, STREAMS[split, evaluation], it]).integers(
        0, high, size=batch_size * (1 if evaluation else gradient_accumulation_steps))
    return ix if evaluation else ix[rank * micro_steps * batch_size:(rank + 1) * micro_steps * batch_size]

def get_batch(split, it, evaluation=False):
    """(x, y) of the token windows draw() picks, each (rows, block_size)."""
    ix = draw(split, it, data_len[split] - block_size, evaluation)
    # A fresh memmap per batch: a long-lived one keeps every page it ever touched in this process's
    # resident set (nanoGPT #287), while opening one costs a few syscalls, nothing next to a step.
    data = np.memmap(os.path.join(path, f'{split}.bin'), dtype=np.uint16, mode='r')
    xy = torch.from_numpy(np.stack([data[i:i + block_size + 1] for i in ix]).astype(np.int64))
    if xy.max() >= vocab_size:  # e.g. GPT-2 BPE .bin files beside a character meta.pkl left from other data
        die(f'{split}.bin holds token id {int(xy.max())}, but the vocabulary has {vocab_size}: prepare {dataset} again')
    x, y = xy[:, :-1], xy[:, 1:]
    if device_type == 'cuda':  # pinned, asynchronous copy to the GPU
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)

# batches per evaluation: never more than the run trains on, so a short run on a laptop is not all evaluation
n_eval = dict.fromkeys(('train', 'val'), eval_iters if eval_only else min(eval_iters, max_iters * gradient_accumulation_steps or 1))

# ----------------------------------------------------------------------------- data: fine-tuning examples
# task = classify | instruct reads the .npz examples of prepare.py sms_spam / alpaca (finetune_data.py). This block replaces
# get_batch and n_eval above: batches are padded to their longest example, and val and test are evaluated whole, in order.
classes = None  # the class names of a classifier
if task != 'lm':
    from finetune_data import example_batch, load_examples
    examples = user_error(load_examples, path, task, block_size)
    classes = examples['train']['classes'].tolist() if task == 'classify' else None
    data_len = {s: len(z['use']) for s, z in examples.items()}  # examples used per split
    n_eval = {s: min(-(-n // batch_size), eval_iters if s == 'train' else n) for s, n in data_len.items()}  # val, test whole
    if (cut := sum(len(z['offsets']) - 1 - data_len[s] for s, z in examples.items())) and master:
        print(f'warning: {cut} examples have prompts longer than block_size={block_size}: skipped (raise block_size)')

    def get_batch(split, it, evaluation=False):  # noqa: F811 (examples instead of token streams)
        ix = np.arange(it * batch_size, min((it + 1) * batch_size, data_len[split])) if evaluation else \
            draw(split, it, data_len[split])
        return tuple(torch.from_numpy(a).to(device) for a in example_batch(examples[split], examples[split]['use'][ix], block_size))
# -----------------------------------------------------------------------------

if hellaswag_interval:
    import hellaswag
    if task == 'classify' or vocab_size != 50257:
        die(f"HellaSwag is GPT-2 BPE text: {'a classifier' if task == 'classify' else f'a {vocab_size}-symbol model'} cannot read it")
    hs = user_error(hellaswag.load, hellaswag_input or os.path.join(data_dir, 'hellaswag', hellaswag.FILE), not hellaswag_input)

# ----------------------------------------------------------------------------- model
Model = GPTClassifier if task == 'classify' else GPT
step_kwargs = dict(loss_only=True) if task == 'instruct' else {}  # instruct: the LM head on response tokens only
if init_from == 'scratch':
    model_args = dict(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                      n_embd=n_embd, dropout=dropout, bias=bias, n_classes=len(classes or []))
    model = user_error(Model, GPTConfig(**model_args))
elif init_from == 'resume':
    model_args = dict(ckpt['model_args'], dropout=dropout)  # resume: the shape is the checkpoint's
    if bool(model_args.get('n_classes')) != (task == 'classify'):
        die(f'task={task} but the checkpoint in {out_dir} was trained with task={ckpt["config"].get("task", "lm")}')
    model = Model(GPTConfig(**model_args))
else:  # OpenAI's GPT-2 by name, or a Hugging Face folder
    if vocab_size != 50257:
        die(f'{dataset} has a {vocab_size}-symbol vocabulary (meta.pkl), but {init_from} reads GPT-2 BPE: '
            f'prepare a GPT-2 BPE dataset (e.g. `python prepare.py shakespeare`)')
    model = user_error(Model.from_pretrained, init_from, dropout=dropout, n_classes=len(classes or []))
    if block_size > model.config.block_size:
        die(f'block_size={block_size} is larger than the model allows ({model.config.block_size})')
    model.crop_block_size(block_size)  # e.g. fine-tune GPT-2 (1024) on shorter rows
    model_args = {k: getattr(model.config, k) for k in GPTConfig.__dataclass_fields__}
was = dict(model_args, optimizer=ckpt['config'].get('optimizer', 'adamw') if ckpt else optimizer)
for k in ('block_size', 'n_layer', 'n_head', 'n_embd', 'bias', 'optimizer'):  # a resumed or pretrained model's, and a run's
    if k in _given and config[k] != was[k]:  # a flag or config file that asks for another is refused
        die(f"{k}={config[k]!r} ({'a flag' if _given[k] == '--' else _given[k]}) differs from {'the checkpoint' if ckpt else init_from}"
            f"'s {was[k]!r}: a run keeps its model's shape and its optimizer")
    config[k] = was[k]  # so the checkpoint's config records the shape the model has
if vocab_size == 50257 and 50257 < model.config.vocab_size <= 50304:  # nanoGPT's GPT-2 BPE: padded to 50304 ids, never tokens
    model.config.vocab_size = model_args['vocab_size'] = 50257
if model.config.vocab_size != vocab_size:
    die(f"the model's vocabulary has {model.config.vocab_size} tokens but {dataset}'s has {vocab_size}: "
        f'use the dataset it was trained on (--dataset=...)')
if not -1 <= trainable_layers <= model.config.n_layer:
    die(f'trainable_layers={trainable_layers}: use -1 (all) or 0 to {model.config.n_layer} (the last blocks)')
if lora_rank > 0:  # before a resumed state is loaded: that state holds the adapters
    model.add_lora(lora_rank, lora_alpha, lora_dropout)
elif trainable_layers >= 0:
    model.freeze(trainable_layers)
model.to(device)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')  # fp16 only: bf16 needs no scaling
muon = (lambda params, lr, wd: Muon(params, lr, wd, getattr(torch, dtype))) if optimizer == 'muon' else None  # N-S in our dtype
optimizers = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, muon)

# ----------------------------------------------------------------------------- resume (2/2): the run's state
iter_num, best_val_loss = 0, float('inf')
log_rows, evaluated_at = [], -1  # log.csv rows to keep; the iteration the checkpoint's run last evaluated at
if ckpt is not None:
    user_error(model.load_state, ckpt['model'])
    for opt, state in zip(optimizers, [ckpt['optimizer']] + ckpt.get('muon', [])):
        user_error(opt.load_state_dict, state)
    if ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    evaluated_at = iter_num if ckpt.get('evaluated', True) else -1  # False: saved on a signal, before evaluating
    rngs = ckpt.get('rng') or []
    if rank < len(rngs) and ckpt.get('world_size') == world_size:  # dropout continues exactly as it would have
        torch.set_rng_state(rngs[rank]['torch'])
        if device_type == 'cuda' and 'cuda' in rngs[rank]:
            torch.cuda.set_rng_state(rngs[rank]['cuda'], device)
    elif master:
        print(f"warning: the checkpoint is of {ckpt.get('world_size')} process(es), this run {world_size}: dropout will differ")
    for k in ('batch_size', 'gradient_accumulation_steps', 'seed', 'dataset'):
        if master and ckpt['config'].get(k) != config[k]:
            print(f"warning: {k}={config[k]!r} differs from the checkpoint's {ckpt['config'].get(k)!r}: "
                  'the run will not see the batches the uninterrupted run would have')
    if master and os.path.exists(os.path.join(out_dir, 'log.csv')):  # drop rows written after the checkpoint
        with open(os.path.join(out_dir, 'log.csv'), newline='') as f:
            log_rows = [r for r in csv.DictReader(f) if r.get('iter', '').isdigit() and (
                int(r['iter']) < iter_num or r['kind'] == 'eval' and int(r['iter']) == iter_num)]
    del ckpt

raw_model = model  # plain keys in checkpoints, whatever wraps it
model = torch.compile(model) if compile else model
model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else model

# MFU: against a GPU's datasheet peak (bf16/fp16, fp32 as TF32), or the CPU's measured above
half, full = next((p for key, p in settings.GPU_PEAKS.items() if device_type == 'cuda' and key in torch.cuda.get_device_name(device)),
                  (cpu_peak.get('bfloat16', 0), cpu_peak.get('float32', 0)))
frozen = task == 'instruct' or trainable_layers >= 0 or lora_rank > 0  # no MFU: no weight gradients, or a varying head
peak = 0 if frozen else peak_flops or (full if dtype == 'float32' else max(half, full))  # (a CPU may emulate bf16)
cfg = raw_model.config  # forward+backward FLOPs per token: 6 per weight plus attention (PaLM appendix B)
flops_per_token = 6 * (raw_model.num_params() - (cfg.vocab_size * cfg.n_embd if cfg.n_classes else 0)) \
    + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size  # (a classifier has no LM head)

def get_lr(it):  # linear warmup (above 0 at it=0), cosine from learning_rate down to min_lr at lr_decay_iters
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

def all_sum(values):  # a list of floats summed over all ranks (identity with one process)
    t = torch.tensor(values, dtype=torch.float64, device=device if device_type == 'cuda' else 'cpu')
    if ddp:
        dist.all_reduce(t)
    return t.tolist()

@torch.no_grad()
def estimate_loss(splits=('train', 'val'), with_hellaswag=False):
    """Mean loss over each split's evaluation batches (and a classifier's accuracy as split_acc, HellaSwag's
    as hellaswag); rank r evaluates batches r, r + world_size, ..."""
    out = {}
    model.eval()
    if with_hellaswag:
        with autocast:
            right, n = all_sum(hellaswag.score(raw_model, hs, hellaswag_examples, rank, world_size))
        out['hellaswag'] = right / n
    for split in splits:
        total, count, correct = 0.0, 0, 0  # the mean over all loss terms: a short last batch weighs less
        for k in range(rank, n_eval[split], world_size):
            x, y = get_batch(split, k, evaluation=True)
            with autocast:
                logits, loss = model(x, y, **step_kwargs)
            terms = (y != -1).sum().item()
            total, count = total + loss.item() * terms, count + terms
            correct += (logits.argmax(-1) == y).sum().item() if task == 'classify' else 0
        total, count, correct = all_sum([total, count, correct])
        out[split] = total / count
        if task == 'classify':
            out[split + '_acc'] = correct / count
    model.train()
    return out

def save_checkpoint(evaluated=True):
    """Called on every rank (it gathers each rank's RNG state); rank 0 writes, atomically, and every rank returns once it has."""
    rng = dict(torch=torch.get_rng_state(), **({'cuda': torch.cuda.get_rng_state(device)} if device_type == 'cuda' else {}))
    rngs = [rng] * world_size
    if ddp:
        dist.all_gather_object(rngs, rng)
    if master:
        ck = dict(model=raw_model.state_dict(), optimizer=optimizers[0].state_dict(), muon=[o.state_dict() for o in optimizers[1:]],
                  scaler=scaler.state_dict() if scaler.is_enabled() else None, model_args=model_args,
                  iter_num=iter_num, best_val_loss=best_val_loss, config=config, rng=rngs, world_size=world_size,
                  classes=classes, device=device, dtype=dtype, evaluated=evaluated)
        t = time.time()
        user_error(settings.write_checkpoint, os.path.join(out_dir, 'ckpt.pt'), ck)
        print(f'saved checkpoint at iteration {iter_num} to {out_dir}/ckpt.pt ({time.time() - t:.1f} s)')
    if ddp:  # the classifier's test below reads the file on every rank
        dist.barrier()

# ----------------------------------------------------------------------------- log
LOG_FIELDS = ['kind', 'iter', 'loss', 'val_loss', 'lr', 'ms_per_iter', 'tokens_per_s', 'mfu', 'grad_norm', 'elapsed_s',
              'train_acc', 'val_acc', 'hellaswag']
log_path = os.path.join(out_dir, 'log.csv')

def write_log(p, rows, mode='a'):
    with open(p, mode, newline='') as f:
        w = csv.DictWriter(f, LOG_FIELDS, extrasaction='ignore')
        if mode == 'w':
            w.writeheader()
        w.writerows(rows)

if master and not eval_only:
    os.makedirs(out_dir, exist_ok=True)
    if init_from != 'resume' and os.path.exists(log_path):  # a run stopped before its first checkpoint: its log aside
        os.replace(log_path, f'{log_path}.{time.strftime("%Y%m%d-%H%M%S")}')
    settings.atomic_write(log_path, lambda p: write_log(p, log_rows, 'w'))  # the header, and a resumed run's rows
    if wandb:
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
t_start = time.time()

def log(**row):  # eval_only leaves the run's log as it is
    if not master or eval_only:
        return
    row['elapsed_s'] = round(time.time() - t_start, 3)
    write_log(log_path, [row])
    if wandb:
        wandb.log({k: v for k, v in row.items() if v != '' and k != 'kind'}, step=row['iter'])

# ----------------------------------------------------------------------------- signals
stop_signal = None  # SIGINT or SIGTERM: finish the current iteration, save, exit; a second signal kills

def on_signal(signum, frame):
    global stop_signal
    stop_signal = signal.Signals(signum).name
    signal.signal(signum, signal.SIG_DFL)

signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

# ----------------------------------------------------------------------------- training loop
if master:
    print(f'{raw_model.num_params() / 1e6:.2f}M parameters, vocabulary {vocab_size}; {world_size} process(es) on {device} in {dtype}'
          f'{f" (bf16 matmuls at {ratio:.2f}x float32 here)" if ratio else ""}{" compiled" if compile else ""}; {gradient_accumulation_steps} x {batch_size} x {block_size} tokens per iteration'
          f'{" at most (examples are padded)" if task != "lm" else ""}; iteration {iter_num} of {max_iters}')
first_iter, stops, timed, n_timed, timed_tokens = iter_num, 0.0, 0.0, 0, 0.0
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in (g for opt in optimizers for g in opt.param_groups):
        group['lr'] = lr
    due = iter_num % eval_interval == 0 or iter_num == max_iters
    if eval_only or due and iter_num != evaluated_at:  # (a resumed run evaluated there already)
        losses = estimate_loss(with_hellaswag=hellaswag_interval > 0 and (eval_only or iter_num % hellaswag_interval == 0))
        if master:
            print(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                  + (f", accuracy train {losses['train_acc']:.2%} val {losses['val_acc']:.2%}" if task == 'classify'
                     else f", val perplexity {math.exp(min(losses['val'], 700)):.2f}")
                  + (f", HellaSwag {losses['hellaswag']:.4f}" if 'hellaswag' in losses else ''))
        log(kind='eval', iter=iter_num, loss=round(losses['train'], 6), val_loss=round(losses['val'], 6), lr=lr,
            **{k: round(v, 4) for k, v in losses.items() if k in ('train_acc', 'val_acc', 'hellaswag')})
        if not math.isfinite(losses['val']):
            die(f"val loss is {losses['val']} at iteration {iter_num}: stopping, saving nothing over {out_dir}/ckpt.pt")
        improved, best_val_loss = losses['val'] < best_val_loss, min(best_val_loss, losses['val'])
        if eval_only:
            break
        if (iter_num > first_iter or iter_num >= max_iters) if always_save_checkpoint else improved:  # (the end evaluates)
            save_checkpoint()
    if iter_num >= max_iters:
        break

    t0, it = time.time(), iter_num
    x, y = get_batch('train', it)
    loss_sum = 0.0
    for micro in range(micro_steps):
        xb, yb = (t[micro * batch_size:(micro + 1) * batch_size] for t in (x, y))
        # gradients are synchronised once, on the last micro-step: no_sync covers forward AND backward
        sync = contextlib.nullcontext() if not ddp or micro == micro_steps - 1 else model.no_sync()
        with sync:
            with autocast:
                _, loss = model(xb, yb, **step_kwargs)
            loss = loss / micro_steps  # the mean over micro-steps; DDP averages over ranks
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    # the mean loss over all rows of all ranks, whether any rank was asked to stop, and the positions
    # processed (examples are padded to their batch's longest, not to block_size): one all-reduce
    loss_all, stops, n_tokens = all_sum([float(loss_sum) / world_size, float(stop_signal is not None), float(x.numel())])
    if not math.isfinite(loss_all):
        die(f'loss is {loss_all} at iteration {iter_num}: stopping before the optimizer step, saving nothing over '
            f'{out_dir}/ckpt.pt (try a lower learning_rate, or dtype=bfloat16/float32)')
    grad_norm = ''
    if grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    for opt in optimizers:
        scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    scaler.update()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    timed, n_timed, timed_tokens = timed + time.time() - t0, n_timed + 1, timed_tokens + n_tokens
    iter_num += 1

    if it % log_interval == 0 or stops:
        dt, tok_s = timed / n_timed, timed_tokens / timed
        mfu = flops_per_token * tok_s / world_size / peak if peak else float('nan')
        if master:
            print(f'iter {it}: loss {loss_all:.4f}, lr {lr:.3e}, {dt * 1000:.1f} ms/iter, '
                  f'{tok_s:,.0f} tok/s' + ('' if math.isnan(mfu) else f', mfu {mfu * 100:.1f}%'))
        log(kind='train', iter=it, loss=round(loss_all, 6), lr=lr, ms_per_iter=round(dt * 1000, 2),
            tokens_per_s=round(tok_s), mfu='' if math.isnan(mfu) else round(mfu, 4),
            grad_norm='' if grad_norm == '' else round(grad_norm, 4))
        timed, n_timed, timed_tokens = 0.0, 0, 0.0
    if stops:
        if master:
            print(f'stopping on {stop_signal or "a signal to another rank"} at iteration {iter_num}' + ('' if always_save_checkpoint else
                  f', keeping {out_dir}/ckpt.pt: the best model (always_save_checkpoint=False)'))
        if always_save_checkpoint:
            save_checkpoint(evaluated=False)
        break

if task == 'classify' and 'test' in examples and not stops:  # the held-out figure, once, at the end, of the model kept
    if not always_save_checkpoint:  # ckpt.pt holds the best evaluation's weights, maybe not the last ones
        raw_model.load_state(settings.read_checkpoint(os.path.join(out_dir, 'ckpt.pt'))['model'])
    test = estimate_loss(('test',))
    if master:
        print(f"test accuracy {test['test_acc']:.2%} ({data_len['test']} examples), test loss {test['test']:.4f}")
code = 128 + signal.Signals[stop_signal or 'SIGTERM'] if stops else 0  # stopped by a signal: not finished, for schedulers
if ddp:  # a gloo thread may free a collective's tensors after it returns; once Python shuts down, that aborts the process
    dist.barrier()  # (1 exit in ~120, torch 2.13): ranks leave by os._exit, without exit hooks (die's errors still shut down)
    dist.destroy_process_group()  # (without the barrier before it, 1 exit in 4 crashed)
    if wandb:
        wandb.finish(exit_code=code)
    sys.stdout.flush()
    os._exit(code)
raise SystemExit(code)
