"""
quantize.py: fast_float32 and compiled_float32 change no output beyond float32 rounding, float16 weights none beyond
rounding each weight once, and int8 and float16 weights stay within the stated tolerance of float32 (val perplexity
within 1% and 0.05%) on a model trained here on real text. The oracles: transformers' greedy generation, and the
float32 model itself.
"""
import copy
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import quantize
from gpt2 import GPT, GPTConfig
from muon import Muon

FBGEMM = pytest.mark.skipif(not quantize.fbgemm(), reason='float16 weights use fbgemm, which torch builds for x86 CPUs only')
SHAKESPEARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'shared', 'data', 'tinyshakespeare', 'input.txt')


def test_int8_linear_is_the_rounded_weight_times_its_row_scale():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = quantize.Int8Linear(lin)
    w = lin.weight.detach()
    scale = w.abs().amax(1) / 127
    assert q.q.dtype == torch.int8 and q.q.abs().max() == 127
    # each weight is within half a step of its int8 value times its row's scale (the scale itself stored in bf16)
    assert ((q.q.float() * q.scale.float()[:, None] - w).abs() <= 0.5 * scale[:, None] + 0.004 * w.abs()).all()
    x = torch.randn(5, 3, 64)
    want = (x.bfloat16().float() @ (q.q.float() * q.scale.float()[:, None]).t() + lin.bias.detach()).float()
    got = q(x).float()
    assert got.shape == (5, 3, 48)
    assert (got - want).abs().max() <= 0.02 * want.abs().max()  # bf16 output rounding
    assert (got - lin(x).detach()).abs().max() <= 0.03 * lin(x).abs().max()  # and close to float32
    assert q(torch.randn(0, 64)).shape == (0, 48)  # no rows (a batch whose targets are all ignored)


@FBGEMM
@pytest.mark.parametrize('bias', [True, False])
def test_float16_linear_is_float32_arithmetic_on_weights_rounded_to_float16(bias):
    torch.manual_seed(0)
    lin = nn.Linear(96, 40, bias=bias)
    w16 = lin.weight.detach().half().float()
    assert (w16 != lin.weight).any()  # the rounding is there to see
    half = quantize.Float16Linear(lin)
    for x in (torch.randn(96), torch.randn(1, 96), torch.randn(0, 96), torch.randn(5, 3, 96)):
        want = x @ w16.t() + (lin.bias.detach() if bias else 0)
        got = half(x)
        assert got.dtype == torch.float32 and got.shape == (*x.shape[:-1], 40)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)  # float32 sums: only their order differs
    assert torch.equal(copy.deepcopy(half)(x), got)  # bench.py copies models


@FBGEMM
def test_float16_says_what_to_do_without_fbgemm():
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = 'qnnpack'  # as on ARM: its prepack would fail deep inside torch
    try:
        with pytest.raises(ValueError, match='need fbgemm.*qnnpack engine: use float32'):
            quantize.float16(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=64)))
    finally:
        torch.backends.quantized.engine = engine


def test_int8_refuses_widths_its_kernel_gets_wrong():
    # torch's kernel returned wrong numbers for an input width of 40 and crashed for 100: refused, one clear error
    with pytest.raises(ValueError, match='multiple of 16'):
        quantize.int8(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=40, block_size=8, vocab_size=10)))


@pytest.mark.parametrize('width, out, bias, blocks', [(96, 80, True, 4), (96, 80, False, 4), (90, 100, True, 2), (7, 5, True, 1)])
def test_split_linear_is_nn_linear_for_any_number_of_rows(width, out, bias, blocks):
    torch.manual_seed(0)
    lin = nn.Linear(width, out, bias=bias)
    want = lin.weight.detach().clone()
    split = quantize.SplitLinear(lin)
    assert split.weight is lin.weight and split.bias is lin.bias and split.blocks == blocks
    assert torch.equal(split.weight, want) and split.weight.t().is_contiguous()  # the same values, (in, out) in memory
    for shape in [(width,), (1, width), (1, 1, width), (3, 1, width), (4, width), (2, 5, width)]:  # up to 4 rows in blocks
        x = torch.randn(shape)
        assert split(x).shape == (*shape[:-1], out)
        assert (split(x) - lin(x)).abs().max() <= 1e-5
    for x in (torch.randn(3, 2 * width)[:, ::2], torch.randn(5, width)[2:]):  # a strided view, a view at an offset
        assert (split(x) - lin(x)).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match='cannot be multiplied'):  # a wrong width: nn.Linear's own error
        split(torch.randn(2, width // 2))


def tiny_gpt2(folder):
    """A random transformers GPT-2 (biases too) of 2 layers, 256 wide, 1100 ids and 40 positions, and ours read from its folder.
    n_embd 256: where slow_mv, fast_float32 splits the MLP's weights (256 x 1024) and the head (1100 x 256), never the
    attention's."""
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=4, n_embd=256, n_positions=40,
                                                               vocab_size=1100)).eval()
    for name, p in ref.named_parameters():  # transformers starts biases at 0, where no test would see one dropped
        if name.endswith('.bias'):
            nn.init.normal_(p, std=0.1)
    ref.save_pretrained(folder)
    return ref, GPT.from_pretrained(str(folder)).eval()


def test_bias_apart_is_nn_linear_with_the_same_parameters():
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    nn.init.normal_(lin.bias)  # (not 0: a dropped bias must show)
    apart = quantize.BiasApart(lin)
    assert apart.weight is lin.weight and apart.bias is lin.bias and apart.state_dict().keys() == lin.state_dict().keys()
    for shape in [(24,), (1, 24), (0, 24), (2, 3, 24)]:
        x = torch.randn(shape)
        assert torch.allclose(apart(x), lin(x), atol=1e-6) and apart(x).shape == (*shape[:-1], 40)


@pytest.mark.parametrize('slow_mv', [True, False])  # as on an AMD and on an Intel CPU, whichever this one is
def test_fast_float32_changes_no_output_and_greedy_still_matches_transformers(tmp_path, slow_mv):
    ref, ours = tiny_gpt2(tmp_path)
    ours = quantize.fast_float32(ours, slow_mv=slow_mv)
    block = ours.transformer.h[0]
    big = quantize.SplitLinear if slow_mv else nn.Linear
    assert type(block.mlp.c_fc) is big and type(ours.lm_head) is big and block.mlp.c_fc.weight.t().is_contiguous()
    assert type(block.attn.c_attn) is nn.Linear and block.attn.c_attn.weight.t().is_contiguous()  # (in, out) in memory
    assert ours.lm_head.weight is ours.transformer.wte.weight  # still tied
    idx = torch.randint(0, 1100, (2, 8), generator=torch.Generator().manual_seed(1))
    n = 40 - 8
    with torch.no_grad():
        want = ref.generate(idx, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        assert (ours(idx)[0] - ref(idx).logits).abs().max() <= 1e-4
        assert (ours(idx[:1, :1])[0] - ref(idx[:1, :1]).logits).abs().max() <= 1e-4  # one row: the blocks
    assert torch.equal(ours.generate(idx, n, temperature=0), want)  # two rows a step: the blocks
    assert torch.equal(ours.generate(idx[:1], n, temperature=0), want[:1])


@pytest.mark.skipif(not shutil.which(os.environ.get('CXX', 'g++')), reason='torch.compile on a CPU needs a C++ compiler (g++ or $CXX)')
@pytest.mark.parametrize('slow_mv', [True, False])
def test_compiled_float32_greedy_still_matches_transformers(tmp_path, slow_mv):
    """sample.py --compile=True on a CPU in float32: the one-token step compiled (slow_mv: with inductor's C++ products, else
    MKL's, the kernels called from C++), the prompt eager; prompts of other lengths, one token among them, reuse its two
    graphs (the first position, then any) and match."""
    ref, ours = tiny_gpt2(tmp_path)
    torch._dynamo.reset()  # dynamo's automatic-dynamic state for the step's code, kept by its name, would carry over
    ours = quantize.compiled_float32(ours, slow_mv=slow_mv)
    c_fc = ours.transformer.h[0].mlp.c_fc
    assert type(ours.lm_head) is (quantize.SplitLinear if slow_mv else nn.Linear)
    assert type(c_fc) is (nn.Linear if slow_mv else quantize.BiasApart) and c_fc.bias is not None
    assert c_fc.weight.t().is_contiguous() != slow_mv  # (in, out) for MKL; CPP_GEMM packs its own copy
    idx = torch.randint(0, 1100, (1, 8), generator=torch.Generator().manual_seed(1))
    graphs = torch._dynamo.utils.counters['stats']['unique_graphs']
    with torch.no_grad():
        for rows in (idx, idx[:, :5], idx[:, :1]):  # each to the window's last position (39), which runs eagerly
            n = 40 - rows.size(1)
            want = ref.generate(rows, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            assert torch.equal(ours.generate(rows, n + 1, temperature=0)[:, :40], want)
        assert torch._dynamo.utils.counters['stats']['unique_graphs'] - graphs == 2
        cache = [[] for _ in ours.transformer.h]
        ours.hidden(idx[:, :7], cache)  # the prompt, eagerly; then one compiled step against transformers' last logits
        logits = ours.lm_head(ours.hidden(idx[:, 7:], cache, 7))[..., :1100]
        assert (logits - ref(idx).logits[:, 7:]).abs().max() <= 1e-4


@pytest.mark.skipif(not shutil.which(os.environ.get('CXX', 'g++')), reason='torch.compile on a CPU needs a C++ compiler (g++ or $CXX)')
def test_compiled_float32_keeps_each_models_graphs_and_rows_apart():
    """compiled_float32 drops dynamo's guards on the model itself: each model's graphs are its own, and the guards on the
    rows stay. Two models alike but for their biases, in one process, and 2 rows after 1: each greedy run matches eager,
    through graphs of its own. (The CPP_GEMM path, a minute's compile here, filters alike.)"""
    torch._dynamo.reset()  # the graph count below
    for bias in (True, False):  # graphs that took the first model's biases would fail on the second's (None)
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=24, vocab_size=50, bias=bias)).eval()
        nn.init.normal_(model.transformer.wte.weight, std=1.0)  # logits far apart: no near tie for rounding to flip
        fast = quantize.compiled_float32(copy.deepcopy(model), slow_mv=False)
        idx = torch.randint(0, 50, (2, 4))
        graphs = torch._dynamo.utils.counters['stats']['unique_graphs']
        for rows in (idx[:1], idx):  # a graph for 1 row handed 2 fails inductor's size check
            assert torch.equal(fast.generate(rows, 12, temperature=0), model.generate(rows, 12, temperature=0))
        assert torch._dynamo.utils.counters['stats']['unique_graphs'] > graphs  # compiled, not run eagerly


def test_compiled_float32_refuses_a_model_converted_already():
    fast = quantize.compiled_float32(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=64)))
    with pytest.raises(ValueError, match='converted already'):  # a copy too: its hidden would run the original's step
        quantize.compiled_float32(copy.deepcopy(fast))


@pytest.fixture(scope='module')
def trained():
    """A 4 x 128 character model trained for 150 Muon steps on Tiny Shakespeare, and its val windows."""
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f'no Tiny Shakespeare at {SHAKESPEARE}')
    text = open(SHAKESPEARE, encoding='utf-8').read()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text[:300_000]], dtype=torch.long)
    train, val = data[:270_000], data[270_000:]
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=len(chars), bias=True))
    # Newton-Schulz in float32, as train.py picks on CPUs without fast bf16: bf16 on a Zen3 took this fixture to 169 s
    opts = model.configure_optimizers(0.1, 2e-2, (0.9, 0.99), 'cpu', lambda ps, lr, wd: Muon(ps, lr, wd, torch.float32))
    gen = np.random.default_rng(0)
    for step in range(150):
        ix = torch.from_numpy(gen.integers(0, len(train) - 65, 32))
        x = torch.stack([train[i:i + 64] for i in ix])
        y = torch.stack([train[i + 1:i + 65] for i in ix])
        _, loss = model(x, y)
        loss.backward()
        for o in opts:
            for g in o.param_groups:
                g['lr'] = 2e-2 * min(1, (step + 1) / 15) * (0.1 + 0.9 * (1 - step / 150))
            o.step()
            o.zero_grad(set_to_none=True)
    n = (len(val) - 1) // 64
    return model.eval(), val[:n * 64].view(n, 64), val[1:n * 64 + 1].view(n, 64)


@pytest.mark.parametrize('dtype', ['int8', pytest.param('float16', marks=FBGEMM)])
def test_perplexity_is_within_one_percent_of_float32(trained, dtype):
    model, x, y = trained
    fast = getattr(quantize, dtype)(copy.deepcopy(model))
    kind = quantize.Int8Linear if dtype == 'int8' else quantize.Float16Linear
    assert isinstance(fast.lm_head, kind) and isinstance(fast.transformer.h[0].attn.c_attn, kind)
    with torch.no_grad():
        loss32 = model(x, y)[1].item()
        loss = fast(x, y)[1].float().item()
    assert loss32 < 2.6  # it learned something: unigram characters alone are about 3.3
    assert abs(np.exp(loss - loss32) - 1) < (0.01 if dtype == 'int8' else 0.0005), (loss32, loss)
    # and sampling runs through the converted head: greedy continuations agree with float32's for a while
    a = model.generate(x[:4, :16], 24, temperature=0)
    b = fast.generate(x[:4, :16], 24, temperature=0)
    assert (a[:, 16:24] == b[:, 16:24]).float().mean() >= 0.9


@pytest.mark.parametrize('dtype, says', [('int8', 'cpu, int8'),
                                         pytest.param('float16', 'cpu, float16 weights, float32 arithmetic', marks=FBGEMM)])
def test_sample_py_samples_in_int8_and_float16(tmp_path, enc, dtype, says):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=64)).save_pretrained(tmp_path)
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, os.path.join(here, 'sample.py'), f'--init_from={tmp_path}', f'--dtype={dtype}',
                        '--device=cpu', '--start=Hello', '--num_samples=1', '--max_new_tokens=8', '--stop_at_eot=False'],
                       cwd=here, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('Hello') and says in p.stderr and '8 tokens' in p.stderr


@pytest.mark.parametrize('dtype', ['int8', 'float16'])
def test_int8_and_float16_refuse_unmerged_lora_adapters(dtype):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=64))
    model.add_lora(rank=2, alpha=4)  # int8 would quantize the base weights alone, and the adapters would be lost
    with pytest.raises(ValueError, match=r'merge_lora\(\) first'):
        getattr(quantize, dtype)(model)
