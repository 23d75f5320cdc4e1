"""
What gpt2.py and sample.py promise, checked against the reference GPT-2 of Hugging Face transformers.
Run: pytest -q   (transformers is a test-only dependency: pip install -r requirements-dev.txt)
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hellaswag
from gpt2 import GPT, Dropout, GPTClassifier, GPTConfig, causal_attention, keep_mask, pick
from muon import Muon

transformers = pytest.importorskip('transformers')
HERE = os.path.dirname(os.path.abspath(__file__))
TIKTOKEN_CACHE = os.path.join(HERE, '..', 'shared', 'data', 'tiktoken_cache')  # conftest.py points tiktoken here


def hf_model(path, seed=0, **kw):
    """A transformers GPT-2 with random weights, saved with save_pretrained to path."""
    torch.manual_seed(seed)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).eval()
    with torch.no_grad():  # random biases and LayerNorm gains too, so that a dropped or misplaced one shows
        for name, p in ref.named_parameters():
            if not name.endswith(('wte.weight', 'wpe.weight')) and 'attn.c_attn' not in name:
                p.add_(torch.randn_like(p) * 0.02)
    ref.save_pretrained(path)
    return ref


TINY = dict(n_layer=2, n_head=4, n_embd=32, n_positions=24, vocab_size=97)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('tiny'))
    return hf_model(path, **TINY), GPT.from_pretrained(path).eval(), path


@pytest.mark.parametrize('shape', ['tiny', '124M'])
def test_logits_and_loss_match_transformers(tmp_path, shape):
    kw = TINY if shape == 'tiny' else {}  # transformers' defaults are the GPT-2 124M shape
    ref = hf_model(str(tmp_path), **kw)
    ours = GPT.from_pretrained(str(tmp_path)).eval()
    V, T = ref.config.vocab_size, min(ref.config.n_positions, 64)
    idx = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(1))
    labels = idx.clone()
    labels[0, :5] = -100  # ignored by both: -100 there, -1 here
    with torch.no_grad():
        out = ref(idx, labels=labels)
        targets = labels[:, 1:].masked_fill(labels[:, 1:] == -100, -1)
        logits, loss = ours(idx[:, :-1], targets)
        full, _ = ours(idx)
    assert full.shape == (2, T, V)
    assert (full - out.logits).abs().max() <= 1e-4
    assert (logits - out.logits[:, :-1]).abs().max() <= 1e-4
    assert abs(loss.item() - out.loss.item()) <= 1e-5


def test_greedy_generate_matches_transformers(tiny):
    ref, ours, _ = tiny
    idx = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(2))
    n = ref.config.n_positions - idx.size(1)  # transformers cannot go past n_positions
    with torch.no_grad():
        want = ref.generate(idx, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(idx, n, temperature=0), want)


def uncached_greedy(model, idx, n):
    """The plainest possible generation: the whole (cropped) window every step, no cache."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def test_kv_cache_equals_uncached_past_block_size(tiny):
    _, ours, _ = tiny
    idx = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(3))
    n = 3 * ours.config.block_size  # well past block_size=24: the window slides
    assert torch.equal(ours.generate(idx, n, temperature=0), uncached_greedy(ours, idx, n))
    long = torch.randint(0, 97, (1, 40))  # a prompt longer than block_size is cropped the same way
    assert torch.equal(ours.generate(long, 10, temperature=0), uncached_greedy(ours, long, 10))


def test_generation_traces_as_one_graph(tiny):
    # sample.py --compile=True compiles hidden with dynamic shapes; a graph break (is_causal got a symbolic T > 1)
    # once split it into a graph per block. fullgraph raises on any, and on the recompile limit; the eager backend
    # traces without compiling (the strides inductor chose for SplitLinear are for bench.py to see)
    _, ours, _ = tiny
    m = copy.deepcopy(ours)
    m.hidden = torch.compile(m.hidden, dynamic=True, fullgraph=True, backend='eager')
    idx = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(5))
    assert torch.equal(m.generate(idx, 8, temperature=0), ours.generate(idx, 8, temperature=0))


def test_batch_of_prompts_equals_one_at_a_time(tiny):
    _, ours, _ = tiny
    idx = torch.randint(0, 97, (4, 7), generator=torch.Generator().manual_seed(4))
    batch = ours.generate(idx, 30, temperature=0)
    for row in range(4):
        assert torch.equal(batch[row:row + 1], ours.generate(idx[row:row + 1], 30, temperature=0))


def test_generate_returns_to_training_mode_even_when_interrupted(tiny):
    _, _, path = tiny
    model = GPT.from_pretrained(path).train()
    with pytest.raises(IndexError):  # an id past the embedding raises from inside generation, as Ctrl-C would
        model.generate(torch.full((1, 2), 10 ** 6), 1, temperature=0)
    assert model.training and all(m.training for m in model.modules())


def test_stop_token_ends_each_row(tiny):
    _, ours, _ = tiny
    idx = torch.randint(0, 97, (3, 4), generator=torch.Generator().manual_seed(5))
    free = ours.generate(idx, 20, temperature=0)
    stop = free[0, 4 + 2].item()  # the token row 0 produces third
    out = ours.generate(idx, 20, temperature=0, stop_token=stop)
    for row in range(3):
        new = free[row, 4:].tolist()
        first = new.index(stop) if stop in new else None
        if first is None:  # a row that never produces it runs to max_new_tokens
            assert out.size(1) == 24 and out[row, 4:].tolist() == new
        else:  # the same tokens up to the stop token, then only stop tokens
            assert out[row, 4:4 + first + 1].tolist() == new[:first + 1]
            assert (out[row, 4 + first:] == stop).all()
    if all(stop in free[row, 4:].tolist() for row in range(3)):
        assert out.size(1) < 24  # all rows stopped: generation ended early


def test_sampling_is_reproducible_under_a_seed(tiny):
    _, ours, _ = tiny
    idx = torch.zeros(2, 1, dtype=torch.long)
    a = ours.generate(idx, 40, top_k=50, top_p=0.9, seed=7)
    assert torch.equal(a, ours.generate(idx, 40, top_k=50, top_p=0.9, seed=7))
    assert not torch.equal(a, ours.generate(idx, 40, top_k=50, top_p=0.9, seed=8))


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    probs = torch.softmax(logits, -1)[0]  # about 0.03, 0.64, 0.09, 0.24
    draws = torch.cat([pick(logits.clone(), top_k=2, generator=torch.Generator().manual_seed(i)) for i in range(300)])
    assert set(draws.flatten().tolist()) == {1, 3}
    p = probs[1].item() + 0.01  # token 1 alone falls short of p; adding token 3 reaches it
    draws = torch.cat([pick(logits.clone(), top_p=p, generator=torch.Generator().manual_seed(i)) for i in range(300)])
    assert set(draws.flatten().tolist()) == {1, 3}
    assert pick(logits.clone(), top_p=0.0).item() == 1  # the likeliest token is always kept
    assert pick(logits.clone(), temperature=0).item() == 1


def exact_distribution(logits, temperature, top_k=None, top_p=None):
    """What pick promises, in float64 and written out: softmax(logits / temperature); then only the top_k likeliest
    ids, renormalised; then only the smallest set of likeliest ids whose probability reaches top_p, renormalised."""
    p = torch.softmax(logits.double() / temperature, -1)
    kept = p.argsort(descending=True).tolist()[:top_k]  # likeliest first; [:None] keeps all
    if top_p is not None:
        total = 0.0
        for n, i in enumerate(kept, 1):
            total += p[i].item() / p[kept].sum().item()
            if total >= top_p:
                kept = kept[:n]
                break
    q = torch.zeros_like(p)
    q[kept] = p[kept]
    return q / q.sum()


# no top_p here lies within 0.02 of a boundary of its nucleus, so float32 rounding cannot change the set
@pytest.mark.parametrize('temperature, top_k, top_p', [
    (0.5, None, None), (1.0, None, None), (2.0, None, None),  # temperature alone
    (1.0, 3, None), (2.0, 5, None),  # top-k: 3 / 5 ids kept, renormalised
    (1.0, None, 0.8), (2.0, None, 0.8),  # nucleus: 3 / 5 ids (cumulative 0.856 / 0.849)
    (1.0, 3, 0.8),  # top-k, then the nucleus of what it kept: 2 ids (0.837)
])
def test_pick_draws_from_the_exact_distribution(temperature, top_k, top_p):
    logits = torch.tensor([1.2, -0.3, 2.5, 0.4, 3.1, -1.0, 1.9, 0.0])
    want = exact_distribution(logits, temperature, top_k, top_p)
    N = 40_000  # rows; every other one the logits reversed (so id i there is id 7 - i): each row draws from its own
    rows = torch.stack([logits, logits.flip(0)]).repeat(N // 2, 1)  # (N, 8)
    draws = pick(rows, temperature, top_k, top_p, torch.Generator().manual_seed(0))
    assert draws.shape == (N, 1)
    n = N // 2
    for got, w in ((draws[0::2, 0], want), (7 - draws[1::2, 0], want)):
        freq = torch.bincount(got, minlength=8).double() / n
        # each frequency is a mean of n Bernoulli(w) draws: within 5 standard errors, which a correct pick
        # misses about once in 10^6 per id; an id outside the kept set must never be drawn at all
        se = (w * (1 - w) / n).sqrt()
        assert (freq[w == 0] == 0).all(), (freq, w)
        assert ((freq - w).abs() <= 5 * se).all(), (freq, w)
        if temperature != 1.0 or top_k or top_p:  # and the band is narrow enough to tell plain T=1 sampling apart
            plain = torch.softmax(logits.double(), -1)
            assert ((freq - plain).abs() > 5 * (plain * (1 - plain) / n).sqrt()).any()


def test_top_p_keeps_the_smallest_set_at_an_exact_boundary():
    logits = torch.tensor([0.5, 0.25, 0.25]).log()  # softmax gives exactly 0.5, 0.25, 0.25
    draws = pick(logits.expand(2000, -1).clone(), top_p=0.5, generator=torch.Generator().manual_seed(0))
    assert draws.unique().tolist() == [0]  # {id 0} already reaches 0.5 (transformers' TopPLogitsWarper keeps it alone)


def test_padded_vocabulary_never_emits_padding_ids():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257)).eval()
    assert model.transformer.wte.weight.size(0) == 50304  # padded for speed
    with torch.no_grad():  # make the padding rows the likeliest by far, were they reachable
        model.transformer.wte.weight[50257:] = model.transformer.wte.weight[:50257].abs().max() * 100
    idx = torch.zeros(4, 1, dtype=torch.long)
    assert model(idx)[0].size(-1) == 50257
    for temperature in (0, 1.0, 5.0):
        assert model.generate(idx, 20, temperature=temperature).max() < 50257


def test_save_pretrained_loads_in_transformers(tiny, tmp_path):
    _, ours, _ = tiny
    idx = torch.randint(0, 97, (2, 24))
    for model in (ours, GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=97, bias=False))):
        model.save_pretrained(str(tmp_path))
        back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
        with torch.no_grad():
            assert (back(idx).logits - model(idx)[0]).abs().max() <= 1e-5
        assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_gelu_pytorch_tanh_is_gpt2s_gelu_too(tmp_path):
    ref = hf_model(str(tmp_path), activation_function='gelu_pytorch_tanh', **TINY)  # what newer exports may say
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        assert (GPT.from_pretrained(str(tmp_path)).eval()(idx)[0] - ref(idx).logits).abs().max() <= 1e-5


def test_pytorch_model_bin_loads_too(tiny, tmp_path):
    ref, ours, _ = tiny
    ref.config.save_pretrained(str(tmp_path))  # the older layout: config.json beside a torch.save'd state dict
    torch.save(ref.state_dict(), tmp_path / 'pytorch_model.bin')
    idx = torch.randint(0, 97, (1, 10))
    assert torch.equal(GPT.from_pretrained(str(tmp_path))(idx)[0], ours(idx)[0])


def test_clear_errors(tiny, tmp_path):
    _, ours, path = tiny
    with pytest.raises(ValueError, match='unknown model .*gpt2, gpt2-medium, gpt2-large, gpt2-xl'):
        GPT.from_pretrained('gpt-2')
    with pytest.raises(ValueError, match='longer than block_size=24'):
        ours(torch.zeros(1, 25, dtype=torch.long))
    cfg = json.load(open(os.path.join(path, 'config.json')))
    os.system(f'cp {path}/model.safetensors {tmp_path}/')
    json.dump({**cfg, 'n_embd': 64}, open(tmp_path / 'config.json', 'w'))
    with pytest.raises(ValueError, match=r'checkpoint weight \S+ has shape \(\d+,.*\) but the config .*n_embd=64.* needs'):
        GPT.from_pretrained(str(tmp_path))
    for broken, msg in [({k: v for k, v in cfg.items() if k != 'n_positions'}, "KeyError: 'n_positions'"),
                        ({**cfg, 'n_layer': '2'}, 'TypeError: its sizes must be positive integers'),
                        # transformers reads these, and computes another function than GPT-2's with them
                        ({**cfg, 'activation_function': 'relu'}, "activation_function='relu': not the GPT-2 that gpt2.py computes"),
                        ({**cfg, 'tie_word_embeddings': False, 'layer_norm_epsilon': 0.1},
                         'layer_norm_epsilon=0.1, tie_word_embeddings=False: not the GPT-2'),
                        ({**cfg, 'scale_attn_by_inverse_layer_idx': True}, 'scale_attn_by_inverse_layer_idx=True: not')]:
        json.dump(broken, open(tmp_path / 'config.json', 'w'))
        with pytest.raises(ValueError, match=f'has no usable GPT-2 config.json .*{msg}'):
            GPT.from_pretrained(str(tmp_path))
    json.dump(cfg, open(tmp_path / 'config.json', 'w'))
    (tmp_path / 'model.safetensors').write_bytes(b'not a safetensors file at all')
    with pytest.raises(ValueError, match='cannot read the weights model.safetensors or pytorch_model.bin in'):
        GPT.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match='lacks'):
        GPT(ours.config).load_state({})
    copy = GPT(ours.config)
    copy.load_state(ours.state_dict())  # our own state dict, tied head included, loads back
    assert torch.equal(copy(torch.zeros(1, 3, dtype=torch.long))[0], ours(torch.zeros(1, 3, dtype=torch.long))[0])


def test_crop_block_size_keeps_the_first_positions(tiny):
    _, ours, path = tiny
    small = GPT.from_pretrained(path).eval()
    small.crop_block_size(8)
    idx = torch.randint(0, 97, (2, 8))
    assert torch.equal(small(idx)[0], ours(idx)[0])
    with pytest.raises(ValueError, match='block_size=8'):
        small(torch.zeros(1, 9, dtype=torch.long))
    assert small.generate(idx[:, :3], 20, temperature=0).size(1) == 23


@pytest.mark.parametrize('p', [0.1, 0.2, 0.5])
def test_cpu_dropout_drops_p_and_rescales_the_rest(p):
    torch.manual_seed(0)
    keep = keep_mask((1000, 1000), p, torch.float32, 'cpu')
    scale = 1 / (1 - round(p * 65536) / 65536)  # p as the mask rounds it
    assert torch.equal(keep.unique(), torch.tensor([0.0, scale]))
    # each 64-bit draw makes four masks: every one of the four must drop at rate p
    rates = [(keep.flatten()[i::4] == 0).float().mean().item() for i in range(4)]
    assert all(abs(r - p) < 0.003 for r in rates), rates
    x = torch.randn(500, 600, requires_grad=True)
    drop = Dropout(p).train()
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.005
    assert torch.allclose(y[kept], x[kept] * scale, rtol=1e-6)
    y.sum().backward()
    assert torch.allclose(x.grad, kept * scale, rtol=1e-6)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    near_one = keep_mask((10000,), 1 - 1e-7, torch.float32, 'cpu')  # rounds to 65535/65536, not to 1
    assert torch.isfinite(near_one).all() and (near_one == 0).float().mean() > 0.99
    assert torch.equal(drop.eval()(x), x)


def test_cpu_attention_matches_sdpa_without_dropout():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, requires_grad=True) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
    got = causal_attention(q, k, v, 0.0)
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(torch.autograd.grad(got.square().sum(), (q, k, v)), want_grads):
        assert torch.allclose(g, w, atol=1e-4)
    half = causal_attention(*(t.detach().bfloat16() for t in (q, k, v)), 0.0)
    assert (half.float() - want).abs().max() < 0.05


def test_cpu_attention_dropout_is_causal_and_unbiased():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 5:], v2[:, :, 5:] = 9.0, 9.0  # the future of position 4
    torch.manual_seed(1)
    a = causal_attention(q, k, v, 0.3)
    torch.manual_seed(1)
    b = causal_attention(q, k2, v2, 0.3)
    assert torch.equal(a[:, :, :5], b[:, :, :5]) and not torch.equal(a, b)
    ys = torch.stack([causal_attention(q, k, v, 0.3) for _ in range(4000)])
    se = ys.std(0) / 4000 ** 0.5
    assert ((ys.mean(0) - causal_attention(q, k, v, 0.0)).abs() <= 5 * se + 1e-6).all()


@pytest.mark.parametrize('path', ['causal_attention', 'sdpa'])
def test_training_drops_attention_weights_inside_the_model(path, monkeypatch):
    # The model's own forward in train mode, with every dropout but the attention weights' set to p=0: what
    # varies between forwards is then that dropout alone. On the CPU, training with dropout > 0 takes
    # causal_attention; the SDPA path (GPUs) is taken here by telling the model the CPU kernel does not pay.
    import gpt2
    p, B, T = 0.3, 4000, 8
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=T, vocab_size=50, dropout=p)).train()
    model.transformer.drop.p = 0.0
    for block in model.transformer.h:
        block.attn.resid_dropout.p = block.mlp.dropout.p = 0.0
    kernel_ps = []  # the p each causal_attention call was given
    kernel = gpt2.causal_attention
    monkeypatch.setattr(gpt2, 'causal_attention', lambda q, k, v, p: kernel_ps.append(p) or kernel(q, k, v, p))
    if path == 'sdpa':
        monkeypatch.setattr(gpt2, 'cpu_attention_pays', lambda q, p: False)
    else:
        assert gpt2.cpu_attention_pays(torch.empty(B, 2, T, 8), p)  # (B, n_head, T, head size) on the CPU
    seen = {}
    attn = model.transformer.h[0].attn  # its input does not vary (no dropout before it), so its output is linear in the mask
    attn.register_forward_hook(lambda m, args, out: seen.update(out=out))
    attn.c_proj.register_forward_pre_hook(lambda m, args: seen.update(heads=args[0]))  # (B, T, C): the heads' outputs

    idx = torch.randint(0, 50, (1, T), generator=torch.Generator().manual_seed(1)).expand(B, -1)  # B rows, B masks

    def forward(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            logits = model(idx)[0]
        return logits, seen['out'], seen['heads']

    logits, out, heads = forward(1)
    assert kernel_ps == ([p] * 2 if path == 'causal_attention' else [])  # both blocks, through the path under test
    assert torch.equal(forward(1)[0], logits)  # a seed fixes the masks
    assert not torch.equal(forward(2)[0], logits)  # another seed draws others
    for block in model.transformer.h:
        block.attn.dropout = 0.0
    ref_logits, ref_out, ref_heads = forward(1)
    assert torch.equal(forward(2)[0], ref_logits)  # attention dropout 0: nothing varies
    for block in model.transformer.h:
        block.attn.dropout = p
    with torch.no_grad():
        assert torch.allclose(model.eval()(idx)[0], ref_logits, atol=1e-6)  # eval: no dropout even with p > 0
    # position 0 attends to itself alone, with weight 1: each head's output there is dropped whole (p) or kept,
    # scaled by 1 / (1 - p)
    hs = heads[:, 0].view(B, 2, 8)  # (B, n_head, head size)
    dropped = (hs == 0).all(-1)
    assert ((dropped.float().mean(0) - p).abs() <= 5 * (p * (1 - p) / B) ** 0.5).all(), dropped.float().mean(0)
    want = (ref_heads[:, 0].view(B, 2, 8) / (1 - p)).expand_as(hs)
    assert torch.allclose(hs[~dropped], want[~dropped], rtol=1e-4, atol=1e-7)
    # unbiased: the mean of the B attention outputs is the output without dropout, within 5 standard errors
    se = out.std(0) / B ** 0.5
    assert ((out.mean(0) - ref_out[0]).abs() <= 5 * se + 1e-7).all()


def test_init_and_optimizer_groups():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=32, vocab_size=100)
    model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(model.transformer.h[0].mlp.c_proj.weight.std().item() - 0.02 / (2 * 8) ** 0.5) < 0.001
    [opt] = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert all(p.dim() == 2 for p in decay['params']) and all(p.dim() == 1 for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))
    # muon: the 4 weight matrices of each block go to Muon, everything else (embeddings, gains) stays with AdamW
    adamw, muon = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', Muon)
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    blocks = {id(m.weight) for b in model.transformer.h for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj)}
    assert {id(p) for p in muon.param_groups[0]['params']} == blocks
    rest = [p for g in adamw.param_groups for p in g['params']]
    assert {id(p) for p in rest} == {id(p) for p in model.parameters()} - blocks and len(rest) == len(set(map(id, rest)))
    model.add_lora(4, 8.0)  # LoRA: the frozen matrices train nothing, the adapters stay with AdamW
    assert len(model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', Muon)) == 1
    # 124M: OpenAI's count, less the 1024x768 position embeddings
    assert GPT(GPTConfig()).num_params() == 124_439_808 - 1024 * 768


def test_muon_is_torchs_muon_with_its_newton_schulz_in_float32_if_asked():
    """Muon in bf16 is torch.optim.Muon(adjust_lr_fn='match_rms_adamw') bit for bit, and their checkpoints load into
    each other; in float32 its products are float32 (far closer to float64's than bf16's are)."""
    torch.manual_seed(0)
    shapes = [(32, 96), (96, 32), (48, 48)]  # wide, tall (transposed inside), square
    start = [torch.randn(s) for s in shapes]
    runs = [[nn.Parameter(w.clone()) for w in start] for _ in range(4)]
    opts = [torch.optim.Muon(runs[0], lr=2e-2, weight_decay=0.1, adjust_lr_fn='match_rms_adamw'),
            *(Muon(params, 2e-2, 0.1, dt) for params, dt in zip(runs[1:], (torch.bfloat16, torch.float32, torch.float64)))]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]

    def step(params, opt, g):
        for p, gp in zip(params, g):
            p.grad = gp.clone()
        opt.step()
    for g in grads[:5]:
        for params, opt in zip(runs, opts):
            step(params, opt, g)
    theirs, ours, ours32, ours64 = runs
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    assert all((c - d).abs().max() < 0.1 * (a - d).abs().max() for a, c, d in zip(theirs, ours32, ours64))
    # resume across the two: each takes the other's state, and the next step is still the same
    mine, torchs = [nn.Parameter(w.clone()) for w in theirs], [nn.Parameter(w.clone()) for w in theirs]
    mine_opt, torchs_opt = Muon(mine, 2e-2, 0.1), torch.optim.Muon(torchs, lr=2e-2)
    mine_opt.load_state_dict(copy.deepcopy(opts[0].state_dict()))  # (as from a file: its own tensors)
    torchs_opt.load_state_dict(copy.deepcopy(opts[1].state_dict()))
    for params, opt in ((theirs, opts[0]), (mine, mine_opt), (torchs, torchs_opt)):
        step(params, opt, grads[5])
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(theirs, mine, torchs))


# OpenAI's four models as their config.json files on the Hugging Face hub give them (n_layer, n_head, n_embd)
@pytest.mark.parametrize('name, n_layer, n_head, n_embd', [
    ('gpt2', 12, 12, 768), ('gpt2-medium', 24, 16, 1024), ('gpt2-large', 36, 20, 1280), ('gpt2-xl', 48, 25, 1600)])
def test_presets_have_openais_shapes_and_parameter_counts(name, n_layer, n_head, n_embd):
    # the oracle: transformers' GPT-2 of those sizes (its defaults: 1024 positions, 50257 ids, a tied head); as a
    # cross-check, OpenAI's published counts are 124,439,808 / 354,823,168 / 774,030,080 / 1,557,611,200
    import gpt2
    kw = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    assert gpt2.PRESETS[name] == kw
    with torch.device('meta'):  # shapes without memory: gpt2-xl would be 6 GB
        ours = GPT(GPTConfig(**gpt2.PRESETS[name]))
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw))
    assert (ours.config.block_size, ours.config.vocab_size) == (ref.config.n_positions, ref.config.vocab_size)
    assert ref.lm_head.weight is ref.transformer.wte.weight  # so parameters() counts the head once
    n = sum(p.numel() for p in ref.parameters())
    assert ours.num_params(non_embedding=False) == n
    assert ours.num_params() == n - ref.transformer.wpe.weight.numel()
    # every weight, in the Hugging Face layout: Conv1D transposed, and our embedding/head has padding rows
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}
    got = {k: tuple((v.t() if k.endswith(gpt2.CONV1D) else v).shape) for k, v in ours.state_dict().items()}
    padded = -(-ref.config.vocab_size // 64) * 64  # 50304
    for k in ('transformer.wte.weight', 'lm_head.weight'):
        assert got.pop(k) == (padded, n_embd) and want.pop(k) == (ref.config.vocab_size, n_embd)
    assert got == want


def run(*args, **env):
    return subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.skipif(not os.path.isdir(TIKTOKEN_CACHE), reason='needs ../shared/data/tiktoken_cache (GPT-2 BPE offline)')
def test_sample_py_streams_what_generate_makes(tmp_path):
    import tiktoken
    hf_model(str(tmp_path), n_layer=2, n_head=2, n_embd=32, n_positions=64)
    enc = tiktoken.get_encoding('gpt2')
    r = run('sample.py', f'--init_from={tmp_path}', '--start=Hello, world', '--num_samples=1',
            '--max_new_tokens=20', '--temperature=0', '--stop_at_eot=False')
    assert r.returncode == 0, r.stderr
    ids = torch.tensor([enc.encode('Hello, world')])
    want = GPT.from_pretrained(str(tmp_path)).generate(ids, 20, temperature=0)
    assert r.stdout == enc.decode(want[0].tolist()) + '\n'
    assert 'tokens/s' in r.stderr
    r = subprocess.run([sys.executable, 'sample.py', f'--init_from={tmp_path}', '--interactive=True',
                        '--max_new_tokens=5'], cwd=HERE, input='hi\n', capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.startswith('You: GPT: '), r.stderr


def greedy_hf(ref, ids, n):
    """transformers' GPT-2 decoding greedily, written out: n new ids, and the final hidden state that chose each."""
    ids, hidden = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            hidden.append(ref.transformer(torch.tensor([ids])).last_hidden_state[0, -1])
            ids.append(ref.lm_head(hidden[-1]).argmax().item())
    return ids[-n:], torch.stack(hidden)


@pytest.mark.skipif(not os.path.isdir(TIKTOKEN_CACHE), reason='needs ../shared/data/tiktoken_cache (GPT-2 BPE offline)')
def test_sample_py_stops_at_endoftext(tmp_path):
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    eot, at, n = enc.eot_token, 5, 30  # 50256, to be greedy's 6th new token of 30
    ref = hf_model(str(tmp_path), n_layer=2, n_head=2, n_embd=32, n_positions=64)
    prompt = enc.encode('Hello, world')
    new, h = greedy_hf(ref, prompt, at + 1)
    assert eot not in new
    # <|endoftext|>'s row of the tied embedding and head, solved so that its logit is 2 under the winner's at
    # each of the first `at` steps and 2 over it at step `at` (at + 1 equations, 32 unknowns). Those steps'
    # hidden states do not depend on that row: no input before then is <|endoftext|>.
    with torch.no_grad():
        logits = ref.lm_head(h).double()  # (at + 1, vocab)
        logits[:, eot] = -float('inf')
        target = logits.max(-1).values + torch.tensor([-2.0] * at + [2.0], dtype=torch.float64)
        row = torch.linalg.pinv(h.double()) @ target
        assert torch.allclose(h.double() @ row, target, atol=1e-6)
        ref.transformer.wte.weight[eot] = row.float()
    ref.save_pretrained(str(tmp_path))
    new, _ = greedy_hf(ref, prompt, n)
    assert new.index(eot) == at  # the oracle: transformers now emits it there, and then goes on
    args = ['sample.py', f'--init_from={tmp_path}', '--start=Hello, world', '--num_samples=2', f'--max_new_tokens={n}',
            '--temperature=0']
    r = run(*args)  # stop_at_eot=True by default
    assert r.returncode == 0, r.stderr
    assert r.stdout == 2 * (enc.decode(prompt + new[:at]) + '\n')  # each sample: the tokens before it, not it
    assert r.stderr.count(f'--- {at + 1} tokens,') == 2, r.stderr  # and generation ended there
    r = run(*args, '--stop_at_eot=False')
    assert r.returncode == 0, r.stderr
    assert r.stdout == 2 * (enc.decode(prompt + new) + '\n')  # <|endoftext|> printed as text, and the rest after it
    assert r.stderr.count(f'--- {n} tokens,') == 2, r.stderr


def test_sample_py_errors_are_one_line(tmp_path):
    for args, msg in [(['--init_from=gpt3'], "unknown model 'gpt3'"),
                      ([f'--out_dir={tmp_path}'], 'no checkpoint at'),
                      (['--temprature=1'], "did you mean 'temperature'"),
                      (['--dtype=fp8'], 'unknown dtype'),
                      (['--init_from=gpt2'], 'could not download gpt2')]:
        r = run('sample.py', *args, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'))
        assert r.returncode == 1 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr


@pytest.mark.skipif(not os.path.isdir(TIKTOKEN_CACHE), reason='needs ../shared/data/tiktoken_cache (GPT-2 BPE offline)')
def test_sample_py_reads_a_folder_of_nanogpts_padded_vocabulary_and_refuses_a_small_one(tmp_path):
    ref = hf_model(str(tmp_path / 'padded'), n_layer=1, n_head=2, n_embd=32, n_positions=32, vocab_size=50304)
    with torch.no_grad():  # every hidden state is ln_f's bias, and the padding rows point along it: they win every draw
        ref.transformer.ln_f.weight.zero_()
        ref.transformer.wte.weight[50257:] = 100 * ref.transformer.ln_f.bias
        assert (ref(torch.zeros(1, 1, dtype=torch.long)).logits[0, -1].argmax() >= 50257)
    ref.save_pretrained(str(tmp_path / 'padded'))
    r = run('sample.py', f'--init_from={tmp_path / "padded"}', '--num_samples=1', '--max_new_tokens=5')
    assert r.returncode == 0, r.stderr[-2000:]  # ids past 50257 are padding: never drawn, so tiktoken never sees them
    hf_model(str(tmp_path / 'small'), **TINY)
    r = run('sample.py', f'--init_from={tmp_path / "small"}')
    assert r.returncode == 1 and 'has 97 tokens, too few for GPT-2 BPE' in r.stderr and 'Traceback' not in r.stderr, r.stderr


@pytest.mark.skipif(not os.path.isdir(TIKTOKEN_CACHE), reason='needs ../shared/data/tiktoken_cache (GPT-2 BPE offline)')
def test_sample_py_reads_a_nanogpt_checkpoint_padded_to_50304_with_ddp_and_compile_prefixes(tmp_path):
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, bias=True, vocab_size=50304, dropout=0.0)  # nanoGPT's model_args
    model = GPT(GPTConfig(**args))
    with torch.no_grad():  # as in the folder test above: the padding rows would win every draw if they were not cut
        model.transformer.ln_f.weight.zero_()
        model.transformer.wte.weight[50257:] = 100 * model.transformer.ln_f.bias
    sd = model.state_dict()
    wraps = ('module.', '_orig_mod.', 'module._orig_mod.')  # DDP's, torch.compile's, and DDP around a compiled model
    sd = {wraps[i % 3] + k: v for i, (k, v) in enumerate(sd.items())}
    (tmp_path / 'out').mkdir()
    torch.save(dict(model=sd, optimizer={}, model_args=args, iter_num=10, best_val_loss=3.0,
                    config=dict(dataset='openwebtext', init_from='scratch')), tmp_path / 'out' / 'ckpt.pt')
    r = run('sample.py', '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--num_samples=1', '--max_new_tokens=5',
            '--seed=1')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]  # no meta.pkl: GPT-2 BPE, the padding cut
    args['vocab_size'] = 50400  # more ids than padding explains: not GPT-2 BPE, and without meta.pkl nothing to decode them
    torch.save(dict(model=GPT(GPTConfig(**args)).state_dict(), optimizer={}, model_args=args, iter_num=10, best_val_loss=3.0,
                    config=dict(dataset='openwebtext', init_from='scratch')), tmp_path / 'out' / 'ckpt.pt')
    r = run('sample.py', '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--num_samples=1', '--max_new_tokens=5')
    assert r.returncode == 1 and 'meta.pkl is gone, and the model has 50400 symbols' in r.stderr and 'Traceback' not in r.stderr


# ---------------------------------------------------------------- fine-tuning: freezing, LoRA, classifier, HellaSwag

def train_steps(model, idx, targets, steps=3):
    [opt] = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    for _ in range(steps):
        _, loss = model(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_frozen_parameters_stay_bit_identical(tiny):
    _, _, path = tiny
    model = GPTClassifier.from_pretrained(path, n_classes=2)
    model.freeze(trainable_layers=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, torch.randint(0, 97, (4, 10)), torch.tensor([0, 1, 1, 0]))
    for k, v in model.state_dict().items():
        trainable = k.startswith(('transformer.h.1.', 'transformer.ln_f.', 'classifier.'))
        assert torch.equal(v, before[k]) != trainable, k  # frozen: untouched; trainable: moved


def test_freeze_refuses_more_layers_than_the_model_has(tiny):
    _, _, path = tiny
    model = GPT.from_pretrained(path)
    for k in (-1, 3):  # 2 blocks: 3 would slice as the last block alone, -1 as none at all
        with pytest.raises(ValueError, match='0 to n_layer=2'):
            model.freeze(k)
    model.freeze(2)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ['transformer.wpe.weight']  # all blocks train


def test_lora_trains_only_adapters_and_merges_exactly(tiny, tmp_path):
    _, _, path = tiny
    model = GPT.from_pretrained(path)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_lora(rank=4, alpha=8)
    idx = torch.randint(0, 97, (2, 12))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ('.lora_' in name), name
    model.zero_grad()
    train_steps(model, idx[:, :-1], idx[:, 1:])
    for k, v in base.items():
        assert torch.equal(model.state_dict()[k], v), k  # the base never moves
    model.eval()
    with torch.no_grad():
        adapted = model(idx)[0]
        assert (adapted - GPT.from_pretrained(path)(idx)[0]).abs().max() > 1e-4  # the adapters did something
        with pytest.raises(ValueError, match='merge_lora'):  # transformers would drop the adapters without a word
            model.save_pretrained(str(tmp_path))
        model.merge_lora()
        assert not [k for k in model.state_dict() if '.lora_' in k]
        model.save_pretrained(str(tmp_path))
        assert (transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path))(idx).logits - adapted).abs().max() <= 1e-5
        assert (model(idx)[0] - adapted).abs().max() <= 1e-5


def test_lora_classifier_keeps_its_head_trainable(tiny):
    _, _, path = tiny
    model = GPTClassifier.from_pretrained(path, n_classes=3)
    model.add_lora(rank=2, alpha=2)
    assert {n for n, p in model.named_parameters() if p.requires_grad and '.lora_' not in n} == {'classifier.weight'}


def test_classifier_reads_the_last_real_token(tiny):
    _, _, path = tiny
    model = GPTClassifier.from_pretrained(path, n_classes=2).eval()
    rows = [torch.randint(0, 97, (n,)) for n in (5, 9, 12)]
    padded = torch.full((3, 12), -1)
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    logits, loss = model(padded, torch.tensor([0, 1, 0]))
    assert logits.shape == (3, 2) and loss.dim() == 0
    for i, r in enumerate(rows):  # each row alone, unpadded, gives the same logits
        assert torch.allclose(model(r[None])[0][0], logits[i], atol=1e-6)
        h = model.hidden(r[None])[0, -1]  # and they come from the last token's hidden state
        assert torch.allclose(model.classifier(h), logits[i], atol=1e-6)


def test_ending_losses_pick_the_likeliest_ending(tiny):
    ref, ours, _ = tiny
    ctx = [5, 17, 42, 8]
    endings = [[3], [60, 61, 62], [9, 9], [33, 2, 71, 70]]
    got = hellaswag.ending_losses(ours, ctx, endings)
    for i, e in enumerate(endings):  # oracle: transformers' loss on the ending's tokens only
        ids = torch.tensor([ctx + e])
        labels = ids.clone()
        labels[0, :len(ctx)] = -100
        with torch.no_grad():
            want = ref(ids, labels=labels).loss.item()
        assert abs(got[i].item() - want) < 1e-5
    assert got.argmin().item() == min(range(4), key=lambda i: got[i].item())
    # past block_size (24) the window keeps the last 24 inputs: a long context loses its start, and an ending
    # longer than the window is scored on the tokens of it still inside
    ctx = torch.randint(0, 97, (40,)).tolist()
    endings = [[3, 4, 5], torch.randint(0, 97, (30,)).tolist()]
    got = hellaswag.ending_losses(ours, ctx, endings)
    for i, e in enumerate(endings):
        row = torch.tensor(ctx + e)[-25:]
        n = min(len(e), 24)
        with torch.no_grad():
            logits = ref(row[None, :-1]).logits[0]
        assert abs(got[i].item() - F.cross_entropy(logits[-n:], row[-n:]).item()) < 1e-5
