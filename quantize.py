"""
Faster sampling on the CPU, for inference only. Each new token reads every weight once, so on a CPU sampling
is bound by memory reads (bench.py measures the ceiling), and what helps is reading fewer or faster bytes:
- `fast_float32(model)`: float32 weights, the same values, laid out (in, out) in memory, and off Intel CPUs 1 to 4 rows
  times a large weight is one batched matmul over 4 slices of its input (SplitLinear). torch's CPU BLAS (MKL) ran a
  matrix-vector product on one thread at 10-17 GB/s on AMD's Zen4, half what its memory gives; in slices each thread
  takes its own. On a Zen3 this sampled 1.1-1.2x faster than the 16 blocks of output rows it replaced; on an Intel Xeon,
  where MKL's own product takes every thread, the slices sampled at 0.95-0.97x plain products (BENCH.md). sample.py
  applies this on a CPU in float32.
- `compiled_float32(model)`: the same, compiled; off Intel with inductor's own C++ products for the blocks: 1.2-1.5x
  fast_float32 on a Zen3, after a minute's compile; on a Xeon, with MKL's, 1.1x after 38-41 s. sample.py --compile=True
  applies this on a CPU in float32.
- `int8(model)`: the projections and the head as int8 with one scale per output row (a quarter of float32's
  bytes), the rest in bf16, multiplied by torch's own CPU kernel for this, torch._weight_int8pack_mm.
  torchao's int8 weight-only config (0.18, eager) dequantized each weight to bf16 before a plain matmul on
  the CPU, 2.3x slower than bf16 weights, so it is not used here. sample.py --dtype=int8 picks this.
- `float16(model)`: the projections and the head with float16 weights (half float32's bytes, each rounded once),
  everything else, every input and every sum in float32, multiplied by fbgemm's packed float16 kernel (torch's x86
  CPU build has it). On a Zen3 this sampled 1.2-1.7x faster than fast_float32 with the val perplexity unchanged to
  4 digits; float16 arithmetic on a CPU (model.to(float16)) was 3.7x slower than this. sample.py --dtype=float16
  picks this where fbgemm() says torch can.
Each only swaps what gpt2.projections names (as LoRA does) and the head: no block's internals change
(compiled_float32 also wraps model.hidden).
"""
import math
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2 import GPT, LoRALinear, projections


# MKL ran one row times a weight (a matrix-vector product) on one thread on AMD's EPYCs, on every thread on Intel's Xeons.
# Where it is slow (assumed off Intel; measured on AMD), SplitLinear and inductor's own products (CPP_GEMM) pay; on a Xeon
# neither did (BENCH.md)
SLOW_MV = 'GenuineIntel' not in (Path('/proc/cpuinfo').read_text() if os.path.exists('/proc/cpuinfo') else '')
ZERO = torch.zeros(())  # baddbmm's ignored input (beta=0): one tensor made once, not one per product (1.04x a token, Zen3)


class SplitLinear(nn.Linear):
    """nn.Linear with the same weight and bias (shared, not copied; the weight laid out (in, out) in memory, its shape and
    values unchanged), and for 1 to 4 rows a faster product on CPUs: the input cut into `blocks` slices, each slice
    times its own contiguous (in / blocks, out) part of the weight in one bmm that MKL spreads over the threads, and
    the partial products summed. More rows (a prompt) go through nn.Linear's own product."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.in_features, linear.out_features, bias=False, device='meta')
        self.weight, self.bias = linear.weight, linear.bias
        self.weight.data = self.weight.data.t().contiguous().t()  # a tied head's embedding too: a token's row is then strided
        # 4 slices, or the most that divide in_features: 2 to 8 ran alike on 2 threads (BENCH.md)
        self.blocks = math.gcd(linear.in_features, 4)

    def forward(self, x):
        rows = x.numel() // self.in_features
        if rows > 4 or x.size(-1) != self.in_features:  # from 8 rows on, nn.Linear was as fast (and it tells a wrong width)
            return super().forward(x)
        w = self.weight.t().reshape(self.blocks, -1, self.out_features)  # a view while the weight is (in, out) in memory
        h = x.reshape(rows, self.blocks, -1).transpose(0, 1)  # (blocks, rows, in / blocks)
        # baddbmm with beta=0, not bmm: inductor turns a one-row bmm on a CPU into its own multiply-and-sum loop, and
        # compiled sampling ran at 0.55x eager; it leaves baddbmm to MKL
        y = torch.baddbmm(ZERO, h, w, beta=0).sum(0)  # (rows, out)
        y = y if self.bias is None else y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def fast_float32(model: GPT, head_only=False, slow_mv=SLOW_MV) -> GPT:
    """Faster one token at a time for a float32 model on a CPU (sample.py calls it only then), the same
    parameters (the head stays tied): every projection and the head is stored (in, out) in memory, the same
    shape, for which one row times it ran 1.2x faster, and GPT.stream's (in, out) copy of a small head is then
    free; where slow_mv, those of 1 MB or more (2^18 weights) become a SplitLinear. Smaller ones are read from cache,
    where bmm's extra steps cost more than they gain (the 4 x 128 model sampled 1.2x slower split)."""
    for m, n in ([] if head_only else projections(model)) + [(model, 'lm_head')]:
        lin = getattr(m, n)
        if type(lin) is not nn.Linear:  # an unmerged LoRA layer stays as it is
            continue
        if slow_mv and lin.weight.numel() >= 2 ** 18:
            setattr(m, n, SplitLinear(lin))
        else:
            lin.weight.data = lin.weight.data.t().contiguous().t()
    return model


# inductor's own C++ matrix products (max-autotune's CPP GEMM template, on weights that freezing packs once for them): one
# row times a block's weight read at 25-30 GB/s on a Zen3, where MKL's products read at 14-21 (BENCH.md)
CPP_GEMM = dict(freezing=True, max_autotune=True, max_autotune_gemm_backends='CPP,ATEN',
                autotune_num_choices_displayed=0, max_autotune_report_choices_stats=False)  # quiet: no tables on stderr


class BiasApart(nn.Linear):
    """An nn.Linear with a bias, the same weight and bias (shared), the bias added after the product, not inside it. Compiled,
    the sum joins the next fused kernel and the product is a plain mm, where nn.Linear's addmm had ATen broadcast and copy
    the bias into the output first: an expand and a copy a projection, 96 a token (compiled float32 1.01x on a Xeon)."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.in_features, linear.out_features, bias=False, device='meta')
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return F.linear(x, self.weight) + self.bias


def guards_off_the_model(guards) -> list[bool]:
    """compiled_float32's filter of dynamo's guards: those on the step's inputs (idx, cache, pos), which tell its graphs
    apart (1 row or 3, the first position or any), and on global state (grad mode) stay; those on the model itself (its
    modules' types, flags and hooks, every weight's shape and dtype: 1,790 of 1,870 a graph) go, since its graphs are its
    own. Dynamo's lookup then took 76 us a token on a Xeon, not 350 (1.01x). Dynamo names a guard by what it checks, here
    after the step's closure variable `whole` (`whole...`, `type(whole...)`); should it name them otherwise, none goes."""
    return [not g.name.startswith(('whole', 'type(whole')) for g in guards]


def compiled_float32(model: GPT, slow_mv=SLOW_MV) -> GPT:
    """sample.py --compile=True for a float32 model on a CPU: the one-token step compiled, a prompt run eagerly, once, and
    the head outside the graph, as fast_float32 leaves it (the compiled head read slower). Where slow_mv, the blocks' products
    are CPP_GEMM's, whose packed copies double the blocks' weights in memory, and the first tokens wait about a minute for
    the compile (the 124M model, a 2-core Zen3); elsewhere they are MKL's, as fast_float32 lays them out, the biases added
    apart (BiasApart; 38-41 s on a Xeon, 4 s there once inductor's cache, /tmp/torchinductor_$USER, holds the graphs). The
    options hold only inside these calls: other compiled code in the process keeps its own. Convert last: the compiled step
    checks its inputs, not the model, so later changes to the model's modules or hooks (and where slow_mv its weights) go
    unseen."""
    if 'hidden' in vars(model):
        raise ValueError('compiled_float32: this model is converted already (its hidden is wrapped): convert a fresh copy')
    fast_float32(model, head_only=slow_mv, slow_mv=slow_mv)  # CPP_GEMM packs the blocks' weights itself
    for m, n in [] if slow_mv else projections(model):  # (untried with CPP_GEMM's products)
        if type(lin := getattr(m, n)) is nn.Linear and lin.bias is not None:
            setattr(m, n, BiasApart(lin))
    # C++, not Python, calls the graph's kernels: 1.05x on a Xeon for 8 s more cold compile (with CPP_GEMM, on the Xeon:
    # 1.00-1.01x; untried on an AMD)
    inductor_options = CPP_GEMM if slow_mv else dict(cpp_wrapper=True)
    whole = model.hidden

    def one_token(idx, cache, pos):
        return whole(idx, cache, pos)
    # one token a row: a graph for the first position, then one for any (automatic dynamic), for the rows it first sees; a
    # second number of rows gets one more, symbolic in the rows (dynamic=True made them symbolic from the start, and beam
    # search's 3 rows then ran at half eager's speed)
    one_token.__code__ = one_token.__code__.replace()  # dynamo keeps graphs per code object, and a nested function's is
    # shared by every call of compiled_float32: this model's copy of its own means no other model's graphs are tried here
    step = torch.compile(one_token, options=dict(guard_filter_fn=guards_off_the_model))

    def hidden(idx, cache=None, pos=0):
        # eager: a prompt, and a one-token prompt too (its empty cache would be a graph of its own), the window's last
        # position (there the cache's slice is whole, and inductor compiled a graph for that alone), and training mode
        # (the model's flags are not guarded: a graph traced with dropout would keep it)
        if idx.size(1) > 1 or not cache or not cache[0] or pos + 1 >= model.config.block_size or model.training:
            return whole(idx, cache, pos)
        with torch._inductor.config.patch(inductor_options), warnings.catch_warnings():  # 44 us a call with CPP_GEMM's, ~0.2%
            warnings.filterwarnings('ignore', 'TypedStorage is deprecated')  # torch's own, from CPP_GEMM's autotuning
            return step(idx, cache, pos)
    model.hidden = hidden
    return model


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights: w ~ q * scale per output row, q = round(w / scale) in [-127, 127]."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float().contiguous()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,): the row's largest weight maps to 127
        self.register_buffer('q', torch.round(w / scale[:, None]).to(torch.int8))  # (out, in)
        self.register_buffer('scale', scale.to(torch.bfloat16))
        self.register_buffer('bias', None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x):
        y = torch._weight_int8pack_mm(x.reshape(-1, x.size(-1)).to(torch.bfloat16), self.q, self.scale)
        y = y if self.bias is None else y + self.bias
        return y.view(*x.shape[:-1], self.q.size(0))


def refuse_lora(model: GPT, dtype: str) -> None:
    if any(isinstance(m, LoRALinear) for m in model.modules()):  # the base weights alone would be converted, the adapters lost
        raise ValueError(f'dtype={dtype} converts plain projections: merge_lora() first (GPT.from_checkpoint does)')


def swap(model: GPT, layer) -> GPT:
    """Every projection, and the head unless a classifier's (it never uses it), replaced by layer(linear)."""
    for m, n in projections(model):
        setattr(m, n, layer(getattr(m, n)))
    if not model.config.n_classes:
        model.lm_head = layer(model.lm_head)
    return model


def int8(model: GPT) -> GPT:
    """int8 projections and head, everything else in bf16 (the head is no longer tied to the embedding)."""
    refuse_lora(model, 'int8')
    if model.config.n_embd % 16:  # torch 2.13's kernel gave wrong numbers for inputs of 40 and crashed for 100
        raise ValueError(f"dtype=int8 needs n_embd to be a multiple of 16 (torch's int8 kernel), not {model.config.n_embd}: "
                         'use float32')
    return swap(model.eval().to(torch.bfloat16), Int8Linear)


def fbgemm() -> bool:
    """Whether torch's quantized ops run on fbgemm here, which has the float16 kernel: on x86, unless the engine was changed."""
    return torch.backends.quantized.engine in ('x86', 'fbgemm')


class Float16Linear(nn.Module):
    """nn.Linear with its weight rounded to float16 once, packed for fbgemm; inputs, outputs, bias and sums in float32.
    The packed weight is a TorchScript object, not a buffer: it is not in state_dict() (this is for sampling only)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.out_features = linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float().contiguous(), bias)

    def forward(self, x):
        y = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.size(-1)), self.packed)  # it refuses 1-D inputs
        return y.view(*x.shape[:-1], self.out_features)


def float16(model: GPT) -> GPT:
    """float16 weights in the projections and the head (untied from the embedding, which stays float32), float32 the rest."""
    refuse_lora(model, 'float16')
    if not fbgemm():
        raise ValueError(f'float16 weights need fbgemm (torch builds it for x86 CPUs), not the {torch.backends.quantized.engine} '
                         'engine: use float32 here')
    return swap(model.eval().float(), Float16Linear)
