"""
Faster sampling on the CPU, for inference only. Each new token reads every weight once, so on a CPU sampling
is bound by memory reads (bench.py measures the ceiling), and what helps is reading fewer or faster bytes:
- `fast_float32(model)`: float32 weights, the same values, but 1 to 4 rows times a large weight is one batched
  matmul over 16 blocks of its output rows (SplitLinear). torch's CPU BLAS (MKL) ran a matrix-vector product on
  one thread at 10-17 GB/s on the Zen4, half what its memory gives; in blocks each thread takes its own: 22-40
  GB/s (BENCH.md). sample.py applies this on a CPU in float32.
- `int8(model)`: the projections and the head as int8 with one scale per output row (a quarter of float32's
  bytes), the rest in bf16, multiplied by torch's own CPU kernel for this, torch._weight_int8pack_mm.
  torchao's int8 weight-only config (0.18, eager) dequantized each weight to bf16 before a plain matmul on
  the CPU, 2.3x slower than bf16 weights, so it is not used here. sample.py --dtype=int8 picks this.
Both only swap what gpt2.projections names (as LoRA does) and the head: no block's internals change.
"""
import math

import torch
import torch.nn as nn

from gpt2 import GPT, LoRALinear, projections


class SplitLinear(nn.Linear):
    """nn.Linear with the same weight and bias (shared, not copied), and for 1 to 4 rows a faster product on CPUs:
    the (out, in) weight viewed as `blocks` stacked (out / blocks, in) blocks, each a matrix-vector product of its
    own in one bmm that MKL spreads over the threads. More rows (a prompt) go through nn.Linear's own product."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.in_features, linear.out_features, bias=False, device='meta')
        self.weight, self.bias = linear.weight, linear.bias
        # 16 blocks, or the most that divide out_features: 4 to 64 ran alike on 2 threads; 16 leaves room for more
        self.blocks = math.gcd(linear.out_features, 16)

    def forward(self, x):
        rows = x.numel() // self.in_features
        if rows > 4 or x.size(-1) != self.in_features:  # from 8 rows on, nn.Linear was as fast (and it tells a wrong width)
            return super().forward(x)
        w = self.weight.view(self.blocks, -1, self.in_features)
        # x.t() for every block with its strides spelled out: under torch.compile an x.t().expand() got strides
        # (0, 1, 0) that MKL ran several times slower, and compiled sampling ran at 0.4x eager's speed
        h = x.contiguous().as_strided((self.blocks, self.in_features, rows), (0, 1, self.in_features))
        y = torch.bmm(w, h) if self.bias is None else torch.baddbmm(self.bias.view(self.blocks, -1, 1), w, h)
        y = y.view(self.out_features, rows)  # (blocks, out / blocks, rows) in memory is (out, rows)
        return (y if rows == 1 else y.t()).reshape(*x.shape[:-1], self.out_features)


def fast_float32(model: GPT) -> GPT:
    """Faster one token at a time for a float32 model on a CPU (sample.py calls it only then), the same
    parameters (the head stays tied): each projection and the head of 1 MB or more (2^18 weights) becomes a
    SplitLinear. Smaller ones are read from cache, where bmm's extra steps cost more than it gains (the 4 x 128
    model sampled 1.2x slower split); they are instead stored (in, out) in memory, the same shape, for which one
    row times them ran 1.2x faster, and GPT.stream's (in, out) copy of a small head is then free."""
    for m, n in projections(model) + [(model, 'lm_head')]:
        lin = getattr(m, n)
        if type(lin) is not nn.Linear:  # an unmerged LoRA layer stays as it is
            continue
        if lin.weight.numel() >= 2 ** 18:
            setattr(m, n, SplitLinear(lin))
        else:
            lin.weight.data = lin.weight.data.t().contiguous().t()
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
        return y.view(*x.shape[:-1], -1)


def int8(model: GPT) -> GPT:
    """int8 projections and head, everything else in bf16 (the head is no longer tied to the embedding)."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError('dtype=int8 quantizes plain projections: merge_lora() first (GPT.from_checkpoint does)')
    if model.config.n_embd % 16:  # torch 2.13's kernel gave wrong numbers for inputs of 40 and crashed for 100
        raise ValueError(f"dtype=int8 needs n_embd to be a multiple of 16 (torch's int8 kernel), not {model.config.n_embd}: "
                         'use float32')
    model.eval().to(torch.bfloat16)
    for m, n in projections(model):
        setattr(m, n, Int8Linear(getattr(m, n)))
    model.lm_head = Int8Linear(model.lm_head)
    return model
