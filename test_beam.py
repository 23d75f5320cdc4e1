"""
What beam.py promises, checked against the reference beam search, Hugging Face transformers' generate(num_beams=k,
do_sample=False), on the same random weights; and sample.py --num_beams.
Run: pytest -q test_beam.py   (transformers is a test-only dependency: pip install -r requirements-dev.txt)
"""
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from beam import beam_search
from gpt2 import GPT, GPTConfig

transformers = pytest.importorskip('transformers')
HERE = os.path.dirname(os.path.abspath(__file__))
T, N_POSITIONS = 4, 32  # prompt length, block_size: the search runs to the end of the window


@pytest.fixture(scope='module', autouse=True)
def one_thread():  # a model this small runs fastest on one thread, and a busy machine then slows it least
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_gpt2(path, seed=0, **kw):
    """A transformers GPT-2 with random weights, saved with save_pretrained to path. Every weight but the embeddings
    gets noise of 0.2: with GPT-2's small init and its tied head, a token's likeliest successor is mostly itself,
    and every beam would be one token repeated."""
    torch.manual_seed(seed)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if not name.endswith(('wte.weight', 'wpe.weight')):
                p.add_(torch.randn_like(p) * 0.2)
    ref.save_pretrained(path)
    return ref


class Tiny:
    """The two models on the same weights, three prompts, an eos the model produces, and transformers' answers."""

    def __init__(self, path):
        transformers.logging.set_verbosity_error()  # its notes on the settings of generate
        self.ref = random_gpt2(path, n_layer=2, n_head=4, n_embd=32, n_positions=N_POSITIONS, vocab_size=97)
        self.ours = GPT.from_pretrained(path).eval()
        self.idx = torch.randint(0, 97, (3, T), generator=torch.Generator().manual_seed(0))
        self.n = N_POSITIONS - T
        self.answers = {}
        # eos: the id that greedy and 4-beam search produce most often when nothing ends them (transformers' own
        # eos, 50256 from the config, is outside this vocabulary): beams that reach it then end early
        free = torch.cat([self.hf(k, None)[:, T:] for k in (1, 4)])
        self.eos = Counter(free.flatten().tolist()).most_common(1)[0][0]

    def hf(self, k, eos, length_penalty=1.0, early_stopping=False):
        """transformers' answer. No min_new_tokens: it would forbid eos before then, and with no eos nothing can
        end a beam early anyway. Rows that end sooner than the longest are padded with eos, as beam_search does."""
        key = k, eos, length_penalty, early_stopping
        if key not in self.answers:
            kw = dict(num_beams=k, length_penalty=length_penalty, early_stopping=early_stopping) if k > 1 else {}
            with torch.no_grad():
                self.answers[key] = self.ref.generate(self.idx, do_sample=False, max_new_tokens=self.n, eos_token_id=eos,
                                                      pad_token_id=0 if eos is None else eos, **kw)
        return self.answers[key]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return Tiny(str(tmp_path_factory.mktemp('tiny')))


SETTINGS = [(lp, es) for lp in (1.0, 0.0, 2.0, -1.0) for es in (False, True, 'never')]  # length_penalty, early_stopping
CASES = [(k, False, 1.0, False) for k in (1, 2, 4)] + [(1, True, 1.0, False)] + \
        [(k, True, lp, es) for k in (2, 4) for lp, es in SETTINGS]


@pytest.mark.parametrize('k, with_eos, length_penalty, early_stopping', CASES)
def test_beam_search_matches_transformers(tiny, k, with_eos, length_penalty, early_stopping):
    eos = tiny.eos if with_eos else None
    got = beam_search(tiny.ours, tiny.idx, tiny.n, k, eos, length_penalty, early_stopping)
    assert torch.equal(got, tiny.hf(k, eos, length_penalty, early_stopping))


def test_the_cases_above_end_beams_early_and_tell_the_settings_apart(tiny):
    # the oracle's answers: with eos, best hypotheses end at many different lengths, and the length penalty and
    # early stopping change which one wins; so a wrong length, score or stopping rule shows above
    lengths, answers = Counter(), set()
    for k, with_eos, lp, es in CASES:
        if with_eos:
            out = tiny.hf(k, tiny.eos, lp, es)
            lengths.update(row.index(tiny.eos) + 1 if tiny.eos in row else None for row in out[:, T:].tolist())
            answers.add((k, tuple(map(tuple, out.tolist()))))
    assert len([n for n in lengths if n is not None and 1 < n < tiny.n]) >= 5, lengths
    for k in (2, 4):
        assert len([a for a in answers if a[0] == k]) >= 3, f'{k} beams: the settings do not matter here'


def test_one_beam_is_greedy(tiny):
    ours, idx, n, eos = tiny.ours, tiny.idx, tiny.n, tiny.eos
    greedy = ours.generate(idx, n, temperature=0)
    assert eos in greedy[:, T:]  # some row meets eos
    assert torch.equal(beam_search(ours, idx, n, 1), greedy)
    assert torch.equal(beam_search(ours, idx, n, 1, eos), ours.generate(idx, n, temperature=0, stop_token=eos))


def test_padding_ids_are_never_chosen():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=50257)).eval()
    with torch.no_grad():  # make the padding rows (50257 to 50303) the likeliest by far, were they reachable
        model.transformer.wte.weight[50257:] = model.transformer.wte.weight[:50257].abs().max() * 100
    out = beam_search(model, torch.zeros(2, 1, dtype=torch.long), 12, 3)
    assert out.shape == (2, 13) and out.max() < 50257


def test_the_window_must_hold_prompt_and_new_tokens(tiny):
    ours, idx = tiny.ours, tiny.idx
    assert beam_search(ours, idx, N_POSITIONS - T, 2).shape == (3, N_POSITIONS)  # exactly full: fine
    with pytest.raises(ValueError, match=f'{T} \\+ {N_POSITIONS - T + 1} tokens is longer than block_size={N_POSITIONS}'):
        beam_search(ours, idx, N_POSITIONS - T + 1, 2)
    assert torch.equal(beam_search(ours, idx, 0, 2), idx)


# ---------------------------------------------------------------- sample.py --num_beams

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """A random GPT-2 with the real vocabulary, in the Hugging Face layout, and GPT-2's BPE."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding('gpt2')
    except Exception as e:
        pytest.skip(f'tiktoken cannot load the gpt2 encoding here ({e}); set TIKTOKEN_CACHE_DIR')
    path = str(tmp_path_factory.mktemp('hf'))
    random_gpt2(path, n_layer=2, n_head=2, n_embd=32, n_positions=64)
    return path, enc


def run(*args):
    return subprocess.run([sys.executable, 'sample.py', *args], cwd=HERE, capture_output=True, text=True, timeout=300)


def test_sample_py_prints_what_beam_search_finds(folder):
    path, enc = folder
    r = run(f'--init_from={path}', '--start=Hello, world', '--num_samples=1', '--max_new_tokens=20', '--num_beams=4')
    assert r.returncode == 0, r.stderr
    ids = torch.tensor([enc.encode('Hello, world')])
    out = beam_search(GPT.from_pretrained(path).eval(), ids, 20, 4, eos=enc.eot_token)[0].tolist()
    assert r.stdout == enc.decode(out[:-1] if out[-1] == enc.eot_token else out) + '\n'
    assert f'--- {len(out) - ids.size(1)} tokens, ' in r.stderr and 'tokens/s' in r.stderr, r.stderr
    greedy = GPT.from_pretrained(path).eval().generate(ids, 20, temperature=0)[0].tolist()
    assert out != greedy  # a case where the search finds something greedy decoding does not


@pytest.mark.parametrize('flags, message', [(['--num_beams=0'], 'num_beams must be at least 1'),
                                            (['--num_beams=2', '--max_new_tokens=64'],
                                             'beam search needs the prompt and max_new_tokens=64 new tokens in one window')])
def test_sample_py_bad_beam_settings_are_one_line(folder, flags, message):
    r = run(f'--init_from={folder[0]}', *flags)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0] and r.stdout == '', r.stderr
