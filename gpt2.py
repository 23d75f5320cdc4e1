"""
GPT-2 in one file, in the order of the architecture: config, attention, MLP, block, model; then generation
with a KV cache, the Hugging Face GPT-2 layout (OpenAI's weights load here, ours in `transformers`),
fine-tuning (a classifier head, freezing, LoRA), and last the CPU training kernels.
"""
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence: the learned position embeddings have this many rows
    vocab_size: int = 50257  # real token ids; the embedding itself is padded to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in the Linears and LayerNorms, as in GPT-2
    n_classes: int = 0  # > 0: a GPTClassifier of this many classes


# OpenAI's four released sizes (block_size 1024 and vocab_size 50257 for all)
PRESETS = {
    'gpt2': dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    'gpt2-medium': dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    'gpt2-large': dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    'gpt2-xl': dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')  # HF's Conv1D: (in, out)


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f'n_embd={config.n_embd} must be a multiple of n_head={config.n_head}')
        self.n_head, self.block_size, self.dropout = config.n_head, config.block_size, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, cache=None, pos=0):
        B, T, C = x.size()  # batch, sequence length, n_embd
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:  # generation: keep this chunk's keys/values, attend to all kept so far
            if not cache:  # the first call allocates room for block_size positions, once
                cache += [k.new_empty(B, self.n_head, self.block_size, C // self.n_head) for _ in 'kv']
            assert T == 1 or pos == 0, 'a chunk of several tokens only goes into an empty cache (is_causal aligns top-left)'
            cache[0][:, :, pos:pos + T], cache[1][:, :, pos:pos + T] = k, v
            k, v = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]  # (B, nh, pos + T, hs)
        if self.training and cache is None and cpu_attention_pays(q, self.dropout):
            y = causal_attention(q, k, v, self.dropout)
        else:  # flash/memory-efficient kernels where they exist; one new token attends to everything before it
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True if T > 1 else False)  # a plain bool: a symbolic T > 1 broke compile's graph
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # the heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate='tanh')))  # GPT-2's GELU


class Block(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), cache, pos)  # pre-norm residual blocks, as GPT-2
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        padded = -(-config.vocab_size // 64) * 64  # 50257 -> 50304 for faster matmuls; cut from the logits, never seen outside
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(padded, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, padded, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        for m in self.modules():  # GPT-2's init: weights normal(0, 0.02), biases zero
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():  # GPT-2 scales the residual projections by 1/sqrt(2*n_layer)
            if name.endswith('c_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_params(self, non_embedding=True) -> int:
        """Parameters, without the padding rows; without the position embeddings by default."""
        n = sum(p.numel() for p in self.parameters()) - (self.lm_head.out_features - self.config.vocab_size) * self.config.n_embd
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden(self, idx, cache=None, pos=0):
        """Final-LayerNorm hidden states (B, T, n_embd) of tokens idx (B, T) at positions pos, pos+1, ..."""
        T = idx.size(1)
        if pos + T > self.config.block_size:
            raise ValueError(f'sequence of {pos + T} tokens is longer than block_size={self.config.block_size}: crop it')
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(torch.arange(pos, pos + T, device=idx.device)))
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i], pos)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, loss_only=False):
        """Logits (B, T, vocab_size) of the token after each of idx (B, T); with targets (B, T), the mean
        cross-entropy where targets != -1. loss_only=True: (None, loss), the head run only there (it is most
        of a small model's compute, and instruction tuning masks most positions)."""
        h = self.hidden(idx)
        if loss_only and targets is not None:
            h, targets = h[targets != -1], targets[targets != -1]  # (N, n_embd), (N,)
        logits = self.lm_head(h)[..., :self.config.vocab_size]  # the padding ids cut off
        loss = None if targets is None else F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return (None if loss_only else logits), loss

    # ---------------------------------------------------------------- generation

    @torch.no_grad()
    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None, seed=None):
        """Yield the next token of each row of idx (B, T) as a (B, 1) tensor, up to max_new_tokens times. A KV
        cache makes each step cost one position; past block_size every step reads the last block_size tokens
        afresh, exactly what a cache-less model sees. Rows that produced stop_token repeat it until all have."""
        L, V = self.config.block_size, self.config.vocab_size
        gen = None if seed is None else torch.Generator(idx.device).manual_seed(seed)
        # on CPUs a plain head as (n_embd, vocab) in memory, 1.1-1.6x faster there for one row; free if it is so already
        head = self.lm_head.weight.t().contiguous() if idx.device.type == 'cpu' and type(self.lm_head) is nn.Linear else None
        cache = [[] for _ in self.transformer.h]
        seq = new = idx[:, -L:]  # the visible window, and the part of it the cache lacks
        pos, done = 0, torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            h = self.hidden(new, cache, pos)[:, -1]  # (B, n_embd): the last position only
            logits = (h @ head if head is not None else self.lm_head(h))[:, :V]  # (B, vocab): padding ids never sampled
            pos += new.size(1)
            nxt = pick(logits, temperature, top_k, top_p, gen)
            if stop_token is not None:
                nxt[done] = stop_token
                done |= nxt[:, 0] == stop_token
            yield nxt
            if done.all():
                return
            seq = torch.cat([seq, nxt], dim=1)[:, -L:]
            new, pos = (nxt, pos) if pos < L else (seq, 0)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None, seed=None):
        """idx (B, T) followed by up to max_new_tokens sampled tokens; temperature=0 is greedy. See stream."""
        was_training = self.training
        try:  # back in training mode even when interrupted (Ctrl-C in a notebook)
            return torch.cat([idx, *self.eval().stream(idx, max_new_tokens, temperature, top_k, top_p, stop_token, seed)], 1)
        finally:
            self.train(was_training)

    # ---------------------------------------------------------------- training helpers

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon=None):
        """[AdamW], decaying matrices and embeddings only (not biases and gains). With muon, an optimizer class called as
        muon(params, learning_rate, weight_decay) (train.py passes muon.Muon): [AdamW, muon], muon taking the blocks' matrices."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        mats = [p for n, p in named if muon and p.dim() == 2 and n.startswith('transformer.h.') and 'lora' not in n]
        decay = [p for n, p in named if p.dim() >= 2 and all(p is not q for q in mats)]
        groups = [dict(params=decay, weight_decay=weight_decay), dict(params=[p for n, p in named if p.dim() < 2], weight_decay=0.0)]
        fused = device_type in ('cuda', 'cpu')  # one kernel for all parameters; mps lacks it on older torch
        adamw = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)
        return [adamw, muon(mats, learning_rate, weight_decay)] if mats else [adamw]

    def crop_block_size(self, block_size: int):
        """Shrink the context (e.g. to fine-tune GPT-2 on shorter sequences): keep the first position rows."""
        assert block_size <= self.config.block_size, f'cannot grow block_size {self.config.block_size} to {block_size}'
        self.config.block_size = block_size
        w = self.transformer.wpe.weight  # frozen stays frozen
        self.transformer.wpe.weight = nn.Parameter(w[:block_size].clone(), requires_grad=w.requires_grad)
        for block in self.transformer.h:
            block.attn.block_size = block_size

    # ---------------------------------------------------------------- checkpoints and the Hugging Face GPT-2 layout

    @staticmethod
    def from_checkpoint(ck: dict):
        """The model of a train.py checkpoint (a GPTClassifier if it has classes), its LoRA adapters merged."""
        model = (GPTClassifier if ck['model_args'].get('n_classes') else GPT)(GPTConfig(**ck['model_args']))
        if ck['config'].get('lora_rank'):
            model.add_lora(ck['config']['lora_rank'], ck['config']['lora_alpha'])
        model.load_state(ck['model'])
        model.merge_lora()
        return model

    def load_state(self, sd: dict, hf=False):
        """Copy weights in, checking every name and shape. hf=True: Hugging Face GPT-2 names and Conv1D layout."""
        ours = self.state_dict()
        todo = set(ours) - {'lm_head.weight'}  # tied to wte
        if hf:  # a Hugging Face GPT-2 has no classifier or adapters: those keep their fresh init
            todo -= {k for k in ours if k.startswith('classifier.') or '.lora_' in k}
        for k, v in sd.items():
            k = k.removeprefix('module.').removeprefix('_orig_mod.')  # what DDP and torch.compile wrap a saved model's names in
            if hf:
                k = k if k.startswith(('transformer.', 'lm_head.')) else 'transformer.' + k
                v = v.t() if k.endswith(CONV1D) else v
            if k == 'lm_head.weight' or hf and k.endswith(('.attn.bias', '.attn.masked_bias')):
                continue  # tied to wte, which has its own name; old causal-mask buffers
            if k not in todo:
                raise ValueError(f'checkpoint has an unexpected weight {k}: it is not a GPT-2 of this layout')
            dst = ours[k][:self.config.vocab_size] if hf and k == 'transformer.wte.weight' else ours[k]  # HF lacks our padding
            if dst.shape != v.shape:
                raise ValueError(f'checkpoint weight {k} has shape {tuple(v.shape)} but the config '
                                 f'({self.config}) needs {tuple(dst.shape)}')
            dst.copy_(v)
            todo.discard(k)
        if todo:
            raise ValueError(f'checkpoint lacks {len(todo)} weights, e.g. {sorted(todo)[0]}')

    @classmethod
    def from_pretrained(cls, name_or_dir: str, **overrides):
        """OpenAI's GPT-2 by name (gpt2 ... gpt2-xl) from the Hugging Face hub, or a folder in its layout; overrides: e.g. dropout=0.1."""
        path = name_or_dir
        if not os.path.isdir(path):
            if name_or_dir not in PRESETS:
                raise ValueError(f'unknown model {name_or_dir!r}: use one of {", ".join(PRESETS)} '
                                 'or a folder with config.json and model.safetensors')
            from huggingface_hub import snapshot_download  # honours HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT
            try:
                path = snapshot_download('openai-community/' + name_or_dir,
                                         allow_patterns=['config.json', 'model.safetensors'])
            except Exception as e:
                raise ValueError(f'could not download {name_or_dir} from the Hugging Face hub ({type(e).__name__}): '
                                 'connect to the network, or pass a local folder with config.json and model.safetensors') from None
        try:
            with open(os.path.join(path, 'config.json')) as f:
                hf = json.load(f)
            cfg = dict(block_size=hf['n_positions'], **{k: hf[k] for k in ('vocab_size', 'n_layer', 'n_head', 'n_embd')})
            same = dict(activation_function=('gelu_new', 'gelu_pytorch_tanh'), layer_norm_epsilon=(1e-5,), scale_attn_weights=(True,),
                        scale_attn_by_inverse_layer_idx=(False,), tie_word_embeddings=(True,))  # GPT-2's: others change the math
            odd = [f'{k}={hf[k]!r}' for k, v in same.items() if k in hf and hf[k] not in v]
            if odd or not all(type(v) is int and v > 0 for v in cfg.values()):
                raise TypeError(f'{", ".join(odd)}: not the GPT-2 that gpt2.py computes' if odd else 'its sizes must be positive integers')
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{path} has no usable GPT-2 config.json ({type(e).__name__}: {e})') from None
        model = cls(GPTConfig(**{**cfg, 'bias': True, **overrides}))
        st, pt = os.path.join(path, 'model.safetensors'), os.path.join(path, 'pytorch_model.bin')
        try:  # safetensors and torch.load raise many kinds of error for a damaged file
            from safetensors.torch import load_file
            sd = load_file(st) if os.path.exists(st) else torch.load(pt, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f'cannot read the weights model.safetensors or pytorch_model.bin in {path} '
                             f'({type(e).__name__}: {str(e)[:100]})') from None
        model.load_state(sd, hf=True)
        return model

    def save_pretrained(self, out_dir: str):
        """Write config.json and model.safetensors so transformers.GPT2LMHeadModel.from_pretrained(out_dir) loads it."""
        from safetensors.torch import save_file
        cfg = self.config
        if cfg.n_classes or any(isinstance(m, LoRALinear) for m in self.modules()):
            raise ValueError("GPT-2's layout has no place for a classifier head or LoRA adapters: merge_lora() first, or keep the checkpoint")
        # bias=False models get zero biases: the same function in a layout that always has them
        sd = {name + '.bias': torch.zeros(m.weight.size(0)) for name, m in self.named_modules()
              if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is None and name not in ('lm_head', 'classifier')}
        for k, v in self.state_dict().items():
            if k != 'lm_head.weight' and not k.startswith('classifier.'):
                v = v[:cfg.vocab_size] if k == 'transformer.wte.weight' else v
                sd[k] = (v.t() if k.endswith(CONV1D) else v).detach().float().cpu().contiguous()
        hf = dict(model_type='gpt2', architectures=['GPT2LMHeadModel'], vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                  n_ctx=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function='gelu_new',
                  layer_norm_epsilon=1e-5, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                  bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True)
        os.makedirs(out_dir, exist_ok=True)  # each file whole or not at all: written aside, then renamed
        save_file(sd, os.path.join(out_dir, 'model.safetensors.tmp'), metadata={'format': 'pt'})
        with open(os.path.join(out_dir, 'config.json.tmp'), 'w') as f:
            json.dump(hf, f, indent=2)
        for name in ('model.safetensors', 'config.json'):
            os.replace(os.path.join(out_dir, name + '.tmp'), os.path.join(out_dir, name))

    # ---------------------------------------------------------------- fine-tuning

    def freeze(self, trainable_layers: int):
        """Train only the last trainable_layers blocks, the final LayerNorm and the head. A language model's
        head is tied to the token embedding, so that trains too (and backward runs through every block)."""
        n = len(self.transformer.h)
        if not 0 <= trainable_layers <= n:  # h[n - 20:] would quietly be the last 8 blocks of 12
            raise ValueError(f'trainable_layers={trainable_layers}: use 0 to n_layer={n}')
        self.requires_grad_(False)
        for m in [*self.transformer.h[n - trainable_layers:], self.transformer.ln_f, getattr(self, 'classifier', self.lm_head)]:
            m.requires_grad_(True)

    def add_lora(self, rank: int, alpha: float, dropout: float = 0.0):
        """Freeze the model and put trainable LoRA adapters on every projection (a classifier head stays trainable)."""
        self.requires_grad_(False)
        for m, n in projections(self):
            setattr(m, n, LoRALinear(getattr(m, n), rank, alpha, dropout))
        if hasattr(self, 'classifier'):
            self.classifier.requires_grad_(True)

    @torch.no_grad()
    def merge_lora(self):
        """Fold the adapters into the weights, leaving a plain GPT (that save_pretrained exports)."""
        for m, n in projections(self):
            lora = getattr(m, n)
            if isinstance(lora, LoRALinear):
                lora.weight += (lora.lora_B @ lora.lora_A) * lora.scale
                plain = nn.Linear(lora.in_features, lora.out_features, bias=lora.bias is not None, device='meta')
                plain.weight, plain.bias = lora.weight, lora.bias
                setattr(m, n, plain)


# ---------------------------------------------------------------- sampling one token, for GPT.stream
def pick(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One id per row of logits (B, V): greedy at temperature 0, else drawn from softmax(logits / temperature)
    kept to exactly the top_k likeliest ids (ties as torch.topk breaks them) and/or the smallest set reaching top_p."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits, ids = logits.float() / temperature, None
    if top_k is not None and top_k < logits.size(-1):  # draw among the k likeliest alone: far cheaper than all ids
        logits, ids = torch.topk(logits, top_k)  # (B, k) each, likeliest first
    probs = F.softmax(logits, dim=-1)
    if top_p is not None:
        p, i = probs.sort(dim=-1, descending=True)
        p[:, 1:][(p.cumsum(-1) - p)[:, 1:] >= top_p] = 0  # drop ids whose likelier ones reach top_p (never the first)
        probs = torch.zeros_like(probs).scatter_(-1, i, p)
    nxt = torch.multinomial(probs, 1, generator=generator)
    return nxt if ids is None else ids.gather(-1, nxt)


class GPTClassifier(GPT):
    """GPT-2 with a head of config.n_classes classes on each row's last real token (LLMs-from-scratch ch. 6)."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.classifier = nn.Linear(config.n_embd, config.n_classes, bias=False)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """Class logits (B, n_classes) of rows idx (B, T) padded on the right with -1, and the loss for class ids (B,)."""
        last = (idx >= 0).sum(1) - 1  # (B,) where each row ends; causal attention: padding cannot change it
        h = self.hidden(idx.clamp(min=0))
        logits = self.classifier(h[torch.arange(idx.size(0), device=idx.device), last])
        return logits, None if targets is None else F.cross_entropy(logits, targets)


def projections(model):  # (module, name) of each attention and MLP projection: where LoRA adapters go
    return [(m, n) for b in model.transformer.h for m, n in
            ((b.attn, 'c_attn'), (b.attn, 'c_proj'), (b.mlp, 'c_fc'), (b.mlp, 'c_proj'))]


class LoRALinear(nn.Linear):
    """nn.Linear (the same weight and bias, so the same names) plus a trainable low-rank update:
    y = x W^T + b + alpha/rank * dropout(x) A^T B^T. B starts at zero: training starts from the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.weight, self.bias = base.in_features, base.out_features, base.weight, base.bias
        self.lora_A = nn.Parameter(torch.randn(rank, self.in_features, device=base.weight.device) / self.in_features ** 0.5)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=base.weight.device))
        self.scale, self.lora_dropout = alpha / rank, Dropout(dropout)

    def forward(self, x):
        return super().forward(x) + (self.lora_dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale


# ---------------------------------------------------------------- CPU training kernels (GPUs use torch's fused ones)

def cpu_attention_pays(q, p: float) -> bool:
    """Whether training attention is faster as causal_attention than in SDPA: on the CPU with dropout (SDPA's
    fallback was 2-3x slower) or in bf16 up to 512 positions (flash was 2x slower; past 512 it won)."""
    return q.device.type == 'cpu' and (p > 0 or (q.dtype != torch.float32 and q.size(2) <= 512))


def causal_attention(q, k, v, p: float):
    """F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), written out. bf16 scores are rounded
    before the softmax (flash keeps float32), yet the loss curve follows float32's (bench_train.py)."""
    B, H, T, D = q.shape
    future = torch.full((T, T), float('-inf'), dtype=q.dtype, device=q.device).triu(1)  # no look-ahead
    att = torch.baddbmm(future, q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2), alpha=D ** -0.5).softmax(-1)
    if p > 0:  # dropout on the attention weights, (B * H, T, T)
        att = att * keep_mask(att.shape, p, att.dtype, q.device)
    return (att @ v.reshape(B * H, T, D)).view(B, H, T, D)


def keep_mask(shape, p: float, dtype, device) -> torch.Tensor:
    """Dropout's mask in dtype: 0 (dropped) or 1/(1-p) (kept), p rounded to k/65536, k < 65536. torch's CPU
    bernoulli_ (a draw per element) took a quarter of a step; one 64-bit draw (the explicit range makes all
    64 bits random) gives four 16-bit uniforms, and a float mask multiplies 10x faster than a bool one."""
    n, drop = math.prod(shape), min(round(p * 65536), 65535)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, 2**63 - 1)
    keep = torch.ge(bits.view(torch.int16)[:n].view(shape), drop - 32768, out=torch.empty(shape, dtype=dtype, device=device))
    return keep.mul_(65536 / (65536 - drop))


class Dropout(nn.Dropout):
    """nn.Dropout, with the cheaper mask above on the CPU (elsewhere torch's fused kernel is faster)."""

    def forward(self, x):
        if not self.training or self.p in (0.0, 1.0) or x.device.type != 'cpu':
            return super().forward(x)
        return x * keep_mask(x.shape, self.p, x.dtype, x.device)
