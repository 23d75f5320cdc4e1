"""
Fine-tuning and evaluation end to end, as a user runs them: prepare.py, then train.py, then sample.py,
as subprocesses, on the real SMS Spam Collection and instruction data of ../shared/data and on
Hugging Face GPT-2 folders that transformers writes with random weights (no network).
The model-level promises (masks, freezing, LoRA merging, the classifier's last token, HellaSwag
scoring) are checked in test_gpt2.py and test_prepare.py; here, that the four files work together.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finetune_data import alpaca_prompt
from gpt2 import GPT, GPTClassifier, GPTConfig

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, '..', 'shared', 'data')
SMS = os.path.join(SHARED, 'sms_spam_collection', 'SMSSpamCollection')
ALPACA = os.path.join(SHARED, 'instruction_data', 'instruction-data.json')
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--batch_size=8', '--dtype=float32', '--compile=False',
        '--device=cpu', '--eval_iters=2', '--log_interval=1', '--warmup_iters=2', '--learning_rate=3e-3']
ENV = dict(os.environ, OMP_NUM_THREADS='1')  # tiny models: threads only cost


def py(tmp, script, *args, check=True):
    p = subprocess.run([sys.executable, os.path.join(HERE, script), *args], cwd=tmp, capture_output=True,
                       text=True, env=ENV, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def needs(path):
    return pytest.mark.skipif(not os.path.exists(path), reason=f'{path} is absent (it ships beside the project in CI)')


def load(path):
    ck = torch.load(path, map_location='cpu', weights_only=True)
    config = GPTConfig(**ck['model_args'])
    model = (GPTClassifier if config.n_classes else GPT)(config)
    if ck['config']['lora_rank']:
        model.add_lora(ck['config']['lora_rank'], ck['config']['lora_alpha'])
    model.load_state(ck['model'])
    return model.eval(), ck


def hf_folder(path, seed=0, n_positions=64):
    """A transformers GPT-2 with random weights, saved as a Hugging Face folder: 'pretrained' weights offline."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    m = GPT2LMHeadModel(GPT2Config(n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))
    m.save_pretrained(path)
    return m.eval()


def class_logits(model, z, block_size=32):
    """Class logits of each test message, one message at a time (cut to block_size tokens, as train.py does)."""
    rows = [z['tokens'][a:b][:block_size].tolist() for a, b in zip(z['offsets'][:-1], z['offsets'][1:])]
    with torch.no_grad():
        return torch.cat([model(torch.tensor([r]))[0] for r in rows])


@needs(SMS)
def test_spam_classifier_trains_reports_test_accuracy_and_labels_text(tmp_path):
    py(tmp_path, 'prepare.py', 'sms_spam', f'--input={SMS}')
    p = py(tmp_path, 'train.py', '--task=classify', '--dataset=sms_spam', '--out_dir=out', '--block_size=32',
           '--max_iters=6', '--eval_interval=3', '--trainable_layers=1', *TINY)
    assert 'accuracy train' in p.stdout
    acc = float(re.search(r'test accuracy ([\d.]+)% \(300 examples\)', p.stdout).group(1)) / 100
    # the printed test accuracy is the checkpoint's, recomputed here one message at a time
    model, ck = load(tmp_path / 'out' / 'ckpt.pt')
    assert ck['classes'] == ['ham', 'spam']
    z = np.load(tmp_path / 'data' / 'sms_spam' / 'test.npz')
    assert acc == pytest.approx(np.mean(class_logits(model, z).argmax(1).numpy() == z['labels']), abs=1e-4)
    # frozen: every block but the last kept its initial weights (the scratch init under the same seed)
    torch.manual_seed(1337)
    init = GPT(GPTConfig(**ck['model_args'])).state_dict()
    sd = model.state_dict()
    assert torch.equal(sd['transformer.h.0.mlp.c_fc.weight'], init['transformer.h.0.mlp.c_fc.weight'])
    assert not torch.equal(sd['transformer.h.1.mlp.c_fc.weight'], init['transformer.h.1.mlp.c_fc.weight'])
    # sample.py labels new text with the model's own probability
    text = 'WINNER! Claim your free prize now'
    out = py(tmp_path, 'sample.py', '--out_dir=out', f'--start={text}').stdout
    label, prob = re.fullmatch(r'(ham|spam) \(p=([\d.]+)\)\n', out).groups()
    import tiktoken
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([tiktoken.get_encoding('gpt2').encode(text)]))[0][0], -1)
    assert label == ck['classes'][probs.argmax()] and float(prob) == pytest.approx(probs.max().item(), abs=1e-3)


@needs(SMS)
def test_with_always_save_checkpoint_false_the_test_figures_are_the_best_checkpoints(tmp_path):
    py(tmp_path, 'prepare.py', 'sms_spam', f'--input={SMS}')
    p = py(tmp_path, 'train.py', '--task=classify', '--dataset=sms_spam', '--out_dir=out', '--block_size=32',
           '--max_iters=6', '--eval_interval=3', '--always_save_checkpoint=False', *TINY, '--learning_rate=1')
    model, ck = load(tmp_path / 'out' / 'ckpt.pt')
    assert ck['iter_num'] == 0  # at a learning rate of 1 the later evaluations were worse: the first is kept
    acc, loss = re.search(r'test accuracy ([\d.]+)% \(300 examples\), test loss ([\d.]+)', p.stdout).groups()
    z = np.load(tmp_path / 'data' / 'sms_spam' / 'test.npz')
    logits = class_logits(model, z)  # the kept model's, not the last step's (whose test loss was about 4)
    assert float(acc) / 100 == pytest.approx(np.mean(logits.argmax(1).numpy() == z['labels']), abs=1e-4)
    assert float(loss) == pytest.approx(F.cross_entropy(logits, torch.as_tensor(z['labels'])).item(), abs=1e-3)


@needs(SMS)
def test_under_ddp_every_rank_scores_the_best_checkpoint_once_rank_0_has_written_it(tmp_path):
    py(tmp_path, 'prepare.py', 'sms_spam', f'--input={SMS}')
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                        os.path.join(HERE, 'train.py'), '--task=classify', '--dataset=sms_spam', '--out_dir=out', '--block_size=32',
                        '--max_iters=6', '--eval_interval=3', '--always_save_checkpoint=False', *TINY],
                       cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    model, ck = load(tmp_path / 'out' / 'ckpt.pt')
    assert ck['iter_num'] == 6  # the last evaluation improved: saved just before the test, which each rank scores half of
    acc, loss = re.search(r'test accuracy ([\d.]+)% \(300 examples\), test loss ([\d.]+)', p.stdout).groups()
    z = np.load(tmp_path / 'data' / 'sms_spam' / 'test.npz')
    logits = class_logits(model, z)  # a rank that read the checkpoint before rank 0 had replaced it scored iteration 3's
    assert float(acc) / 100 == pytest.approx(np.mean(logits.argmax(1).numpy() == z['labels']), abs=1e-4)
    assert float(loss) == pytest.approx(F.cross_entropy(logits, torch.as_tensor(z['labels'])).item(), abs=1e-3)


@needs(ALPACA)
def test_instruction_tuning_trains_on_responses_and_sample_answers_in_the_template(tmp_path):
    py(tmp_path, 'prepare.py', 'alpaca', f'--input={ALPACA}')
    p = py(tmp_path, 'train.py', '--task=instruct', '--dataset=alpaca', '--out_dir=out', '--block_size=64',
           '--max_iters=4', '--eval_interval=2', *TINY)
    assert 'val perplexity' in p.stdout
    model, ck = load(tmp_path / 'out' / 'ckpt.pt')
    assert ck['config']['task'] == 'instruct'
    # sample.py wraps the text in the Alpaca template by itself (the checkpoint says instruct) and
    # prints what greedy generate() gives after that prompt
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    question = 'Name a primary color.'
    out = py(tmp_path, 'sample.py', '--out_dir=out', f'--start={question}', '--num_samples=1',
             '--max_new_tokens=8', '--temperature=0', '--stop_at_eot=False').stdout
    idx = torch.tensor([enc.encode(alpaca_prompt(question))])
    expect = enc.decode(model.generate(idx, 8, temperature=0)[0, idx.size(1):].tolist())
    assert out == expect + '\n'


def test_lora_trains_adapters_only_resumes_exactly_and_exports_to_transformers(tmp_path):
    hf = hf_folder(tmp_path / 'hf')
    rng = np.random.default_rng(0)
    (tmp_path / 'data' / 'tiny').mkdir(parents=True)
    for split in ('train', 'val'):
        rng.integers(0, 50257, 3000).astype(np.uint16).tofile(tmp_path / 'data' / 'tiny' / f'{split}.bin')
    common = ['--dataset=tiny', f'--init_from={tmp_path / "hf"}', '--lora_rank=4', '--lora_alpha=8',
              '--block_size=32', '--eval_interval=1000', '--dropout=0.0', *TINY]
    py(tmp_path, 'train.py', '--out_dir=straight', '--max_iters=6', '--lr_decay_iters=6', *common)
    py(tmp_path, 'train.py', '--out_dir=halves', '--max_iters=3', '--lr_decay_iters=6', *common)
    py(tmp_path, 'train.py', '--out_dir=halves', '--init_from=resume', '--max_iters=6')
    (a, ca), (_, cb) = load(tmp_path / 'straight' / 'ckpt.pt'), load(tmp_path / 'halves' / 'ckpt.pt')
    assert ca['model'].keys() == cb['model'].keys() and any('lora_A' in k for k in ca['model'])
    for k in ca['model']:
        assert torch.equal(ca['model'][k], cb['model'][k]), k
    # the frozen base is GPT-2's weights exactly; the adapters moved
    base = GPT.from_pretrained(str(tmp_path / 'hf')).state_dict()
    for k, v in ca['model'].items():
        if 'lora_' in k:
            continue
        n = {'transformer.wpe.weight': 32}.get(k, 50257)  # cropped; the padding rows are random
        assert torch.equal(v[:n], base[k][:n]), k
    assert any(v.abs().sum() > 0 for k, v in ca['model'].items() if 'lora_B' in k)
    # merged and exported, transformers reads the adapted model: the same logits
    x = torch.randint(0, 50257, (2, 32))
    with torch.no_grad():
        want = a(x)[0]
        a.merge_lora()
        a.save_pretrained(tmp_path / 'merged')
        from transformers import GPT2LMHeadModel
        got = GPT2LMHeadModel.from_pretrained(tmp_path / 'merged').eval()(x).logits
    assert (got - want).abs().max() < 1e-4
    assert not torch.allclose(hf(x).logits[:, :32], want, atol=1e-4)  # and LoRA changed something
