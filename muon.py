"""
Muon (optimizer='muon' in train.py): torch.optim.Muon's update for the blocks' weight matrices, with its
Newton-Schulz products in a dtype of your choice. torch's always run in bf16, which a CPU without bf16
instructions multiplies ~100x slower than float32 (BENCH.md): there the CPU recipe took 1.8x nanoGPT's time
with torch's Muon and 0.39x with this one. train.py picks the model's training dtype.
"""
import math

import torch


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon(params, lr, weight_decay, adjust_lr_fn='match_rms_adamw'): the same arithmetic and state (its
    checkpoints load either way), with the Newton-Schulz products in dtype."""

    def __init__(self, params, lr: float, weight_decay: float, dtype=torch.bfloat16):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=0.95, nesterov=True, eps=1e-7, ns_steps=5,
                                      ns_coefficients=(3.4445, -4.7750, 2.0315), adjust_lr_fn='match_rms_adamw'))  # torch's
        self.dtype = dtype

    @torch.no_grad()
    def step(self):
        for group, p in ((g, p) for g in self.param_groups for p in g['params'] if p.grad is not None):
            (lr, mu), (a, b, c), state = (group['lr'], group['momentum']), group['ns_coefficients'], self.state[p]
            if 'momentum_buffer' not in state:
                state['momentum_buffer'] = torch.zeros_like(p)
            buf = state['momentum_buffer'].lerp_(p.grad, 1 - mu)
            x = p.grad.lerp(buf, mu).to(self.dtype)  # Nesterov momentum
            x = x.T if p.size(0) > p.size(1) else x  # wide, so that the Gram matrix x x^T is the smaller one
            x = x / x.norm().clamp(min=group['eps'])  # every singular value <= 1
            for _ in range(group['ns_steps']):  # quintic Newton-Schulz: singular values to about 1 (Keller Jordan's)
                g = x @ x.T
                x = torch.addmm(x, torch.addmm(g, g, g, beta=b, alpha=c), x, beta=a)
            p.mul_(1 - lr * group['weight_decay'])  # decoupled weight decay, then a step of AdamW's RMS
            p.add_(x.T if p.size(0) > p.size(1) else x, alpha=-(lr * (0.2 * math.sqrt(max(p.shape)))))
