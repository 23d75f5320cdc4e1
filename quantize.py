"""
Faster sampling on the CPU, for inference only. Each new token reads every weight once, so on a CPU sampling
is bound by memory reads (bench.py measures the ceiling), and what helps is reading fewer or faster bytes:
- `transpose_weights(model)`: float32 weights stored (in, out) in memory, the same values and shapes: a single
  row times a weight ran 1.1-1.6x faster so on the CPUs measured (BENCH.md).
- `int8(model)`: the projections and the head as int8 with one scale per output row (a quarter of float32's
  bytes), the rest in bf16, multiplied by torch's own CPU kernel for this, torch._weight_int8pack_mm.
  torchao's int8 weight-only config (0.18, eager) dequantized each weight to bf16 before a plain matmul on
  the CPU, 2.3x slower than bf16 weights, so it is not used here. sample.py --dtype=int8 picks this.
Both only swap what gpt2.projections names (as LoRA does) and the head: no block's internals change.
"""
import torch
import torch.nn as nn

from gpt2 import GPT, LoRALinear, projections


def transpose_weights(model: GPT) -> GPT:
    """Keep each projection's weight, and the head's (tied to the token embedding), (out, in) in shape but
    (in, out) in memory: GPT.stream then needs no transposed copy of the head either."""
    for w in [getattr(m, n).weight for m, n in projections(model)] + [model.lm_head.weight]:
        w.data = w.data.t().contiguous().t()
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
