"""
What hellaswag.py promises: it reads HellaSwag's jsonl exactly (tiktoken is the reference tokenizer),
refuses bad files with one line, and its accuracy is what transformers' losses give (no network: the
records are written here in the format of rowanz/hellaswag, the models are random Hugging Face folders).
"""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import hellaswag

HERE = os.path.dirname(os.path.abspath(__file__))

RECORDS = [  # unicode, an empty ending, an empty context, an extra key
    {'ctx': 'A man is sitting on a roof. He', 'endings': ['is using wrap to wrap a pair of skis.', 'is ripping level tiles off.',
     "is holding a rubik's cube.", 'starts pulling up roofing on a roof.'], 'label': 3, 'ind': 4},
    {'ctx': 'Ünïcode context, then', 'endings': ['日本語', 'naïve café', '', '  two spaces'], 'label': 0},
    {'ctx': '', 'endings': ['a', 'b', 'c', 'd'], 'label': 2},
]
SCORED = [  # ordinary records, for accuracy
    dict(ctx='A man is sitting on a roof. He', label=3,
         endings=['is using wrap to wrap a pair of skis.', 'is ripping level tiles off.',
                  "is holding a rubik's cube.", 'starts pulling up roofing on a roof.']),
    dict(ctx='A woman pours water into a glass. She', label=0,
         endings=['drinks the water slowly.', 'paints the glass blue with a brush.',
                  'throws the glass at the ceiling fan.', 'reads a book about the ocean.']),
    dict(ctx='The children run onto the field with a ball. They', label=1,
         endings=['sleep.', 'start kicking the ball to each other across the grass.',
                  'bake a cake in the oven.', 'drive to the office.']),
]


def jsonl(path, records, extra=''):
    path.write_text(''.join(json.dumps(r) + '\n' for r in records) + extra, encoding='utf-8')
    return path


def test_load_tokenizes_context_and_spaced_endings(tmp_path, enc):
    data = hellaswag.load(str(jsonl(tmp_path / 'h.jsonl', RECORDS, extra='\n')))  # a blank line is no record
    assert data == [(enc.encode(r['ctx']), [enc.encode(' ' + e) for e in r['endings']], r['label']) for r in RECORDS]
    assert enc.decode(data[0][1][0]) == ' is using wrap to wrap a pair of skis.'


BAD = {'3 endings': '{"ctx": "a", "endings": ["b", "c", "d"], "label": 0}',
       'label 4': '{"ctx": "a", "endings": ["b", "c", "d", "e"], "label": 4}',
       'label "1"': '{"ctx": "a", "endings": ["b", "c", "d", "e"], "label": "1"}',
       'no ctx': '{"endings": ["b", "c", "d", "e"], "label": 1}',
       'endings a string': '{"ctx": "a", "endings": "bcde", "label": 1}',
       'not json': '{"ctx": "a",'}


@pytest.mark.parametrize('case', [*BAD, 'empty', 'not utf-8', 'missing', 'download fails'])
def test_bad_input_is_one_line(tmp_path, case):
    path = tmp_path / 'h.jsonl'
    if case in BAD:
        jsonl(path, RECORDS, BAD[case] + '\n')
        message = 'line 4 is not a record with ctx, 4 endings and a label 0-3'
    elif case == 'empty':
        path.write_text(' \n')
        message = 'is empty'
    elif case == 'not utf-8':
        path.write_bytes(b'\xff\xfe{"ctx"')
        message = 'cannot read'
    elif case == 'missing':  # a path that was given is never downloaded to: it is a typo, or the wrong folder
        path = tmp_path / 'nowhere' / 'h.jsonl'
        message = f'no HellaSwag file at {path}: give a copy of hellaswag_val.jsonl, or leave the setting empty'
    else:
        path = tmp_path / 'nowhere' / 'h.jsonl'
        message = ('cannot download http://127.0.0.1:9/x (ConnectionError): pass a local copy of hellaswag_val.jsonl '
                   '(hellaswag.py --input=PATH, train.py --hellaswag_input=PATH)')
    with pytest.raises(ValueError, match=re.escape(message)):
        hellaswag.URL = 'http://127.0.0.1:9/x'  # nothing listens there
        hellaswag.load(str(path), download=case == 'download fails')
    assert not os.path.exists(tmp_path / 'nowhere' / 'h.jsonl')
    if case != 'download fails':  # and as a user runs it: one line, no traceback, before any model loads
        p = subprocess.run([sys.executable, os.path.join(HERE, 'hellaswag.py'), f'--input={path}'], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith('hellaswag.py: '), p.stderr
        assert message in lines[0]


def hf_folder(path, n_positions=32):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))
    m.save_pretrained(path)
    return m.eval()


def transformers_accuracy(ref, enc, records):
    """The oracle: the ending with the lowest mean loss per token under transformers' GPT-2."""
    right = 0
    with torch.no_grad():
        for r in records:
            ctx = enc.encode(r['ctx'])
            scores = []
            for e in r['endings']:
                e = enc.encode(' ' + e)
                logits = ref(torch.tensor([ctx + e])).logits[0, len(ctx) - 1:-1]
                scores.append(torch.nn.functional.cross_entropy(logits, torch.tensor(e)).item())
            right += min(range(4), key=scores.__getitem__) == r['label']
    return right / len(records)


def test_hellaswag_py_accuracy_agrees_with_transformers(tmp_path, enc):
    ref = hf_folder(tmp_path / 'hf')
    records = SCORED * 3  # 9 examples; --examples=5 scores the first 5
    src = jsonl(tmp_path / 'h.jsonl', records)
    for limit in (0, 5):
        p = subprocess.run([sys.executable, os.path.join(HERE, 'hellaswag.py'), f'--init_from={tmp_path / "hf"}',
                            f'--input={src}', f'--examples={limit}', '--device=cpu'],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        acc, right, n = re.search(r'HellaSwag accuracy ([\d.]+) \((\d+) of (\d+) examples\)', p.stdout).groups()
        want = records[:limit or None]
        assert int(n) == len(want)
        assert float(acc) == pytest.approx(transformers_accuracy(ref, enc, want), abs=1e-4)
        assert int(right) == round(float(acc) * len(want))


def test_hellaswag_py_reads_nanogpts_vocabulary_padded_to_50304_ids(tmp_path, enc):
    from transformers import GPT2Config, GPT2LMHeadModel
    ref = hf_folder(tmp_path / 'hf')
    padded = GPT2LMHeadModel(GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=2, vocab_size=50304))
    sd = ref.state_dict()
    with torch.no_grad():  # the same model, and 47 more rows that are never tokens
        for k, v in padded.state_dict().items():
            v[:sd[k].size(0)] = sd[k]
    padded.save_pretrained(tmp_path / 'padded')
    src = jsonl(tmp_path / 'h.jsonl', SCORED)
    p = subprocess.run([sys.executable, os.path.join(HERE, 'hellaswag.py'), f'--init_from={tmp_path / "padded"}',
                        f'--input={src}', '--device=cpu'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    acc = float(re.search(r'HellaSwag accuracy ([\d.]+)', p.stdout)[1])
    assert acc == pytest.approx(transformers_accuracy(ref, enc, SCORED), abs=1e-4)


@pytest.mark.parametrize('nproc', [1, 2])
def test_train_py_eval_only_perplexity_and_hellaswag_agree_with_transformers(tmp_path, nproc, enc):
    ref = hf_folder(tmp_path / 'hf')
    src = jsonl(tmp_path / 'hs.jsonl', SCORED)
    # val.bin of exactly block_size + 1 tokens: every evaluation batch is that one row
    ids = enc.encode('The quick brown fox jumps over the lazy dog. ' * 4)[:33]
    (tmp_path / 'data' / 'text').mkdir(parents=True)
    for split in ('train', 'val'):
        np.array(ids, np.uint16).tofile(tmp_path / 'data' / 'text' / f'{split}.bin')
    cmd = [os.path.join(HERE, 'train.py'), '--dataset=text', f'--init_from={tmp_path / "hf"}', '--eval_only=True',
           '--hellaswag_interval=1', f'--hellaswag_input={src}', '--block_size=32', '--out_dir=out', '--batch_size=8',
           '--eval_iters=2', '--device=cpu', '--dtype=float32', '--compile=False']
    if nproc > 1:  # the ranks share the examples
        cmd = ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--standalone', *cmd]
    p = subprocess.run([sys.executable, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    loss, ppl, acc = map(float, re.search(r'val loss ([\d.]+), val perplexity ([\d.]+), HellaSwag ([\d.]+)', p.stdout).groups())
    with torch.no_grad():
        x = torch.tensor([ids])
        want = torch.nn.functional.cross_entropy(ref(x[:, :-1]).logits[0], x[0, 1:])
    assert loss == pytest.approx(want.item(), abs=1e-4) and ppl == pytest.approx(math.exp(loss), rel=1e-3)
    assert acc == pytest.approx(transformers_accuracy(ref, enc, SCORED), abs=1e-4)


@pytest.mark.parametrize('flag, message', [('--examples=-1', 'examples must be at least 0, got -1'),
                                           ('--device=gpu', 'device gpu asked for, but torch sees no such device here')])
def test_hellaswag_py_bad_settings_are_one_line(tmp_path, flag, message):
    p = subprocess.run([sys.executable, os.path.join(HERE, 'hellaswag.py'), flag], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1 and message in p.stderr and 'Traceback' not in p.stderr, p.stderr
