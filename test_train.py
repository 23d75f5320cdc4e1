"""
What train.py promises, checked on tiny models and tiny data written here (pytest -q test_train.py: about 80 s
on 2 CPU cores). train.py runs as a subprocess, as a user runs it.
"""
import csv
import importlib.util
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, 'train.py')
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4', '--dtype=float32',
        '--compile=False', '--device=cpu', '--eval_interval=1000', '--eval_iters=2', '--log_interval=1',
        '--warmup_iters=2', '--lr_decay_iters=50', '--learning_rate=3e-3']
ENV = dict(os.environ, OMP_NUM_THREADS='1')  # tiny models: threads only cost; two ranks share 2 cores


def write_data(root, name='tiny', n=4000, vocab=16, char=True, seed=0):
    """A dataset as prepare.py writes it: train.bin/val.bin of uint16 ids (+ meta.pkl for characters)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, m in (('train', n), ('val', max(n // 10, 64))):
        rng.integers(0, vocab, size=m).astype(np.uint16).tofile(d / f'{split}.bin')
    if char:
        chars = [chr(ord('a') + i) for i in range(vocab)]
        with open(d / 'meta.pkl', 'wb') as f:
            pickle.dump(dict(vocab_size=vocab, stoi={c: i for i, c in enumerate(chars)}, itos=dict(enumerate(chars))), f)
    return root


def train(tmp, out, *flags, nproc=0, check=True):
    cmd = [sys.executable, TRAIN]
    if nproc:
        with socket.socket() as s:  # a free port: other jobs on this machine may run torchrun too
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--nnodes=1',
               '--master_addr=127.0.0.1', f'--master_port={port}', TRAIN]
    cmd += [f'--data_dir={tmp / "data"}', '--dataset=tiny', f'--out_dir={tmp / out}', *TINY, *flags]
    p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def ckpt(tmp, out):
    return torch.load(tmp / out / 'ckpt.pt', map_location='cpu', weights_only=True)


def log_rows(tmp, out, kind='train'):
    with open(tmp / out / 'log.csv') as f:
        return [r for r in csv.DictReader(f) if r['kind'] == kind]


@pytest.fixture
def tmp(tmp_path):
    write_data(tmp_path / 'data')
    return tmp_path


@pytest.fixture(scope='module')
def accum4(tmp_path_factory):
    """One process, 4 micro-steps of batch 2, 4 iterations: the reference for accumulation and DDP."""
    t = tmp_path_factory.mktemp('ref')
    write_data(t / 'data')
    train(t, 'out', '--gradient_accumulation_steps=4', '--batch_size=2', '--max_iters=4')
    return ckpt(t, 'out')


def assert_same_weights(a, b, exact=False):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_overfits_one_batch(tmp_path):
    # 17 tokens of data with block_size 16: every row is the same sequence, so every batch is one batch
    write_data(tmp_path / 'data', n=17, vocab=16)
    train(tmp_path, 'out', '--n_embd=64', '--max_iters=150', '--learning_rate=1e-2', '--weight_decay=0.0',
          '--lr_decay_iters=150', '--min_lr=1e-3', '--warmup_iters=10')
    losses = [float(r['loss']) for r in log_rows(tmp_path, 'out')]
    assert losses[0] > 2.0
    assert losses[-1] < 0.05, losses[-10:]


def test_lr_schedule_warmup_peak_floor(tmp):
    train(tmp, 'out', '--max_iters=26', '--learning_rate=1e-2', '--min_lr=1e-3', '--warmup_iters=5', '--lr_decay_iters=20')
    lr = {int(r['iter']): float(r['lr']) for r in log_rows(tmp, 'out')}
    assert sorted(lr) == list(range(26))
    assert lr[0] == pytest.approx(1e-2 / 6) and lr[0] > 0  # above zero at step 0
    assert all(lr[i] < lr[i + 1] for i in range(5))  # warmup rises ...
    assert lr[5] == pytest.approx(1e-2)  # ... to the peak
    assert all(lr[i] > lr[i + 1] for i in range(5, 20))  # cosine falls ...
    assert lr[12] == pytest.approx(1e-3 + 0.5 * (1 + np.cos(np.pi * 7 / 15)) * 9e-3)
    assert all(lr[i] == pytest.approx(1e-3) for i in range(20, 26))  # ... to the floor, and stays


def test_accumulation_equals_big_batch(tmp, accum4):
    train(tmp, 'big', '--gradient_accumulation_steps=1', '--batch_size=8', '--max_iters=4')
    assert_same_weights(ckpt(tmp, 'big')['model'], accum4['model'])


def test_ddp_two_processes_equals_one(tmp, accum4):
    # 2 ranks x 2 micro-steps of batch 2 = 1 process x 4 micro-steps (the accumulation is the total)
    p = train(tmp, 'ddp', '--gradient_accumulation_steps=4', '--batch_size=2', '--max_iters=4', nproc=2)
    assert 'saved checkpoint at iteration 4' in p.stdout  # rank 0's last line, printed before it leaves by os._exit
    c = ckpt(tmp, 'ddp')
    assert c['world_size'] == 2 and len(c['rng']) == 2
    assert_same_weights(c['model'], accum4['model'])


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_resume_is_bit_identical(tmp, optimizer):
    flags = ['--dropout=0.1', '--eval_interval=3', f'--optimizer={optimizer}']  # dropout: the RNG state must carry over too
    train(tmp, 'straight', *flags, '--max_iters=8')
    train(tmp, 'split', *flags, '--max_iters=4')
    assert ckpt(tmp, 'split')['iter_num'] == 4
    # only what changes is given: every other setting (data_dir, model, dropout, ...) comes from the checkpoint
    p = subprocess.run([sys.executable, TRAIN, f'--out_dir={tmp / "split"}', '--init_from=resume', '--max_iters=8'],
                       cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr
    a, b = ckpt(tmp, 'straight'), ckpt(tmp, 'split')
    assert b['iter_num'] == 8
    assert_same_weights(a['model'], b['model'], exact=True)
    assert_same_weights(a['optimizer']['state'][0], b['optimizer']['state'][0], exact=True)
    assert len(a['muon']) == len(b['muon']) == (optimizer == 'muon')  # Muon's momentum is saved, and resumed from
    for m, n in zip(a['muon'], b['muon']):
        assert len(m['state']) == 8  # 2 blocks x 4 weight matrices
        for i in m['state']:
            assert_same_weights(m['state'][i], n['state'][i], exact=True)
    assert [r['loss'] for r in log_rows(tmp, 'straight')] == [r['loss'] for r in log_rows(tmp, 'split')]
    assert [r['iter'] for r in log_rows(tmp, 'split', 'eval')] == ['0', '3', '4', '6', '8']  # 4: end of the first part


def test_resume_flags_win_even_at_their_defaults_and_eval_only_trains_nothing(tmp):
    train(tmp, 'out', '--max_iters=2', '--log_interval=5')
    before = ckpt(tmp, 'out')

    def resume(*flags):
        p = subprocess.run([sys.executable, TRAIN, f'--out_dir={tmp / "out"}', '--init_from=resume', *flags],
                           cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        return p.stdout
    # log_interval=1 is also train.py's default: it must still win over the checkpoint's 5
    resume('--max_iters=4', '--log_interval=1')
    assert [r['iter'] for r in log_rows(tmp, 'out')] == ['0', '2', '3']
    # eval_only at iteration 4, which is no multiple of eval_interval: it evaluates and changes nothing
    after = ckpt(tmp, 'out')
    out = resume('--eval_only=True', '--max_iters=10')
    assert 'iter 4: train loss' in out and 'iter 5' not in out
    assert_same_weights(ckpt(tmp, 'out')['model'], after['model'], exact=True)
    assert before['iter_num'] == 2 and after['iter_num'] == 4
    # a run that logged to Weights & Biases is evaluated where wandb is not installed: eval_only sends nothing there
    after['config']['wandb_log'] = True
    torch.save(after, tmp / 'out' / 'ckpt.pt')
    assert 'iter 4: train loss' in resume('--eval_only=True')


def test_resume_takes_the_runs_own_values_over_its_config_file_and_its_dtype(tmp):
    cfg = tmp / 'cfg.py'  # the run's config file; a flag changed batch_size when it started
    cfg.write_text('batch_size = 4\nmax_iters = 2\n')
    train(tmp, 'out', str(cfg), '--batch_size=2', '--dtype=auto')
    c = ckpt(tmp, 'out')
    assert c['config']['batch_size'] == 2 and c['dtype'] in ('float32', 'bfloat16')
    c['dtype'] = 'bfloat16' if c['dtype'] == 'float32' else 'float32'  # as if start-up had measured the other
    torch.save(c, tmp / 'out' / 'ckpt.pt')
    p = subprocess.run([sys.executable, TRAIN, str(cfg), f'--out_dir={tmp / "out"}', '--init_from=resume', '--max_iters=3'],
                       cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"note: resuming with the run's batch_size=2, not {cfg}'s 4: a --batch_size= flag would win" in p.stdout
    ratio = float(re.search(r"in \w+ \(bf16 matmuls at ([\d.]+)x float32 here\)", p.stdout).group(1))
    keep = 0.6 < ratio < 2.4  # near the 1.2x line the start-up timing is noisy: a resumed run keeps its dtype there
    edge = min(abs(ratio - 0.6), abs(ratio - 2.4)) < 0.006  # the ratio is printed rounded: at the band's edge either is right
    want = ('float32', 'bfloat16') if edge else (c['dtype'] if keep else 'bfloat16' if ratio > 1.2 else 'float32',)
    assert any(f'on cpu in {d} ' in p.stdout for d in want), (ratio, want, p.stdout[-2000:])
    assert ckpt(tmp, 'out')['config']['batch_size'] == 2 and ckpt(tmp, 'out')['iter_num'] == 3


def test_always_save_checkpoint_false_keeps_the_best_model(tmp):
    # lr 0.03 on random tokens: val loss is best before any training, then worse at the end
    train(tmp, 'out', '--always_save_checkpoint=False', '--learning_rate=0.03', '--warmup_iters=0', '--decay_lr=False',
          '--eval_interval=4', '--max_iters=16')
    evals = [(float(r['val_loss']), int(r['iter'])) for r in log_rows(tmp, 'out', 'eval')]
    assert [i for _, i in evals] == [0, 4, 8, 12, 16] and min(evals) != evals[-1]  # (else this test shows nothing)
    c = ckpt(tmp, 'out')
    assert (c['best_val_loss'], c['iter_num']) == pytest.approx(min(evals))
    p = subprocess.Popen([sys.executable, TRAIN, f'--out_dir={tmp / "out"}', '--init_from=resume', '--max_iters=100000',
                          '--eval_interval=100000'], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    watchdog = threading.Timer(120, p.kill)  # a run that never trains fails the test instead of hanging it
    watchdog.start()
    for line in p.stdout:  # until it trains (its signal handler is set by then)
        if re.match(r'iter \d+: loss', line):
            break
    p.send_signal(signal.SIGTERM)  # a signal does not save over the best either
    out, err = p.communicate(timeout=60)
    watchdog.cancel()
    assert p.returncode == 128 + signal.SIGTERM and 'the best model (always_save_checkpoint=False)' in out, err[-2000:]
    assert_same_weights(ckpt(tmp, 'out')['model'], c['model'], exact=True)


def test_sigterm_saves_a_loadable_checkpoint(tmp):
    cmd = [sys.executable, TRAIN, f'--data_dir={tmp / "data"}', '--dataset=tiny', f'--out_dir={tmp / "out"}', *TINY,
           '--max_iters=1000000', '--lr_decay_iters=1000000']
    p = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if (tmp / 'out' / 'log.csv').exists() and len(log_rows(tmp, 'out')) >= 3:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]  # stopped, not finished: schedulers see the difference
    assert 'SIGTERM' in out
    c = ckpt(tmp, 'out')  # weights_only=True: plain values only
    assert {'model', 'optimizer', 'scaler', 'model_args', 'iter_num', 'best_val_loss', 'config', 'rng'} <= set(c)
    assert c['iter_num'] >= 3 and c['config']['dataset'] == 'tiny' and c['model_args']['n_embd'] == 32
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in c['model'])
    assert set(c['rng'][0]) == {'torch'}  # what draws at random on a CPU: dropout (batches are seeded apart)
    n = c['iter_num']
    assert c['evaluated'] is False  # saved on the signal, before any evaluation at iteration n ...
    train(tmp, 'out', '--init_from=resume', f'--max_iters={n}')  # ... so a resume that ends there evaluates there
    assert [r['iter'] for r in log_rows(tmp, 'out', 'eval')] == ['0', str(n)] and ckpt(tmp, 'out')['evaluated']
    train(tmp, 'out', '--init_from=resume', f'--max_iters={n + 2}')
    assert ckpt(tmp, 'out')['iter_num'] == n + 2


def test_nan_loss_stops_and_keeps_the_checkpoint(tmp):
    train(tmp, 'out', '--max_iters=2')
    good = ckpt(tmp, 'out')
    p = train(tmp, 'out', '--init_from=resume', '--max_iters=20', '--learning_rate=1e30', '--grad_clip=0.0', check=False)
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert 'loss is nan' in p.stderr or 'loss is inf' in p.stderr, p.stderr
    assert_same_weights(ckpt(tmp, 'out')['model'], good['model'], exact=True)


def test_init_from_hugging_face_folder_crops_block_size_and_keeps_its_shape(tmp):
    from gpt2 import GPT, GPTConfig
    GPT(GPTConfig(block_size=32, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)).save_pretrained(str(tmp / 'hf'))  # TINY's
    write_data(tmp / 'data', name='bpe', vocab=50257, char=False)
    train(tmp, 'ft', '--dataset=bpe', f'--init_from={tmp / "hf"}', '--max_iters=2', '--block_size=8', '--dropout=0.1')
    c = ckpt(tmp, 'ft')
    assert c['model_args']['block_size'] == 8 and c['model_args']['vocab_size'] == 50257
    assert c['model']['transformer.wpe.weight'].shape == (8, 32)
    assert c['model']['transformer.wte.weight'].shape == (50304, 32)  # padded by the model
    assert c['config']['bias'] is True  # the model's shape, which has biases, not the setting's default (False)
    p = train(tmp, 'other', '--dataset=bpe', f'--init_from={tmp / "hf"}', '--max_iters=2', '--block_size=8', '--n_layer=3', check=False)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        f"train.py: n_layer=3 (a flag) differs from {tmp / 'hf'}'s 2: a run keeps its model's shape and its optimizer"], p.stderr
    # nanoGPT's vocabulary, padded to 50304 ids, fine-tunes on GPT-2 BPE data: the padding is cut, as sample.py does
    GPT(GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=2, n_embd=32)).save_pretrained(str(tmp / 'hf50304'))
    train(tmp, 'padded', '--dataset=bpe', f'--init_from={tmp / "hf50304"}', '--max_iters=2', '--block_size=8')
    assert ckpt(tmp, 'padded')['model_args']['vocab_size'] == 50257


def test_token_ids_beyond_the_vocabulary_are_one_line(tmp):
    write_data(tmp / 'data', name='bpe', vocab=50257, char=False)
    shutil.copy(tmp / 'data' / 'tiny' / 'meta.pkl', tmp / 'data' / 'bpe')  # a character vocabulary left from other data
    p = train(tmp, 'out', '--dataset=bpe', '--max_iters=2', check=False)
    lines = p.stderr.strip().splitlines()
    m = re.fullmatch(r'train.py: (train|val).bin holds token id (\d+), but the vocabulary has 16: prepare bpe again', lines[-1])
    assert p.returncode == 1 and len(lines) == 1 and m and 16 <= int(m[2]) < 50257, p.stderr
    assert not (tmp / 'out' / 'ckpt.pt').exists()


def foreign_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'transformer.wte.weight': torch.zeros(3, 2)}, path)  # e.g. a raw Hugging Face state dict


@pytest.mark.parametrize('flags, message', [
    (['--batchsize=8'], "unknown setting 'batchsize'; did you mean 'batch_size'?"),
    (['--batch_size=abc'], 'batch_size must be int'),
    (['--batch_size=0'], 'batch_size must be at least 1'),
    (['--dataset=nope'], '`python prepare.py nope`'),
    (['--block_size=1000'], 'block_size=1000 is larger than the data'),
    (['--init_from=gpt5'], "unknown init_from 'gpt5'"),
    (['--init_from=resume'], 'no checkpoint at'),
    (['--init_from=resume', 'FOREIGN'], 'is not a train.py checkpoint'),
    (['--init_from=resume', 'GARBAGE'], 'is not a readable train.py checkpoint'),
    (['--dtype=float64'], 'dtype must be'),
    (['--dropout=1.0'], 'dropout must be in [0, 1), got 1.0'),
    (['--init_from=resume', 'BIGGER'], "block_size=32 (a flag) differs from the checkpoint's 16"),
    (['--init_from=resume', 'DEEPER'], "n_layer=4 (a flag) differs from the checkpoint's 2: a run keeps its model's shape and its optimizer"),
    (['--init_from=resume', 'OTHEROPT'], "optimizer='muon' (a flag) differs from the checkpoint's 'adamw'"),
    (['--optimizer=muon', '--lora_rank=2'], 'optimizer=muon trains whole weight matrices in bf16 or float32, not frozen'),
    (['--optimizer=muon', '--dtype=float16'], 'not in float16: use adamw'),
    (['AGAIN'], 'holds another run: continue it with --init_from=resume, or start this one in a new --out_dir'),
    (['--out_dir=FILE'], 'is a file: name a folder'),
    (['--init_from=resume', 'EMPTY'], 'is not a readable train.py checkpoint (EOFError'),
    (['NOTPICKLE'], 'meta.pkl is not a character vocabulary of vocab_size, stoi and itos'),
    (['EVILPICKLE'], 'UnpicklingError: it names posix.system'),
    (['--n_embd=33'], 'n_embd=33 must be a multiple of n_head=2'),
    (['ODDBIN'], 'has an odd number of bytes, so it is not uint16 token ids: prepare it again'),
    (['--init_from=resume', 'OTHERVOCAB'], "the model's vocabulary has 16 tokens but other's has 50257"),
    (['--hellaswag_interval=1'], 'HellaSwag is GPT-2 BPE text: a 16-symbol model cannot read it'),
    (['--task=classify'], 'task=classify reads sms_spam'),
    (['--device=gpu'], 'torch sees no such device here: use --device=cpu'),
    (['--beta2=1.0'], 'beta2 must be in [0, 1), got 1.0'),
    (['--out_dir='], "out_dir '' is empty: name a folder"),
    (['--out_dir=/dev/null'], "out_dir '/dev/null' is a file: name a folder"),
    (['--seed=99999999999999999999'], 'seed must be at most 9223372036854775807'),
    (['--warmup_iters=-10'], 'warmup_iters must be at least 0'),
    (['--peak_flops=-5'], 'peak_flops must be at least 0'),
    (['--lora_rank=2', '--trainable_layers=1'], 'lora_rank trains adapters only: drop trainable_layers'),
    (['--hellaswag_interval=3', '--eval_interval=2'], 'make it a multiple or a divisor of eval_interval'),
    (['--wandb_log=True'], 'wandb_log=True needs wandb, which is not installed: pip install wandb'),
])
def test_bad_input_is_one_line(tmp, flags, message):
    env = dict(ENV)
    if '--wandb_log=True' in flags and importlib.util.find_spec('wandb'):
        pytest.skip('wandb is installed here')
    if 'FOREIGN' in flags:
        foreign_file(tmp / 'out' / 'ckpt.pt')
    if 'GARBAGE' in flags:
        (tmp / 'out').mkdir()
        (tmp / 'out' / 'ckpt.pt').write_bytes(b'not a checkpoint')
    if 'BIGGER' in flags or 'DEEPER' in flags or 'AGAIN' in flags or 'OTHEROPT' in flags:
        train(tmp, 'out', '--max_iters=1')
        flags = flags + [{'BIGGER': '--block_size=32', 'DEEPER': '--n_layer=4', 'AGAIN': '--max_iters=2',
                          'OTHEROPT': '--optimizer=muon'}[next(f for f in flags if f.isupper())]]
    if 'ODDBIN' in flags:
        with open(tmp / 'data' / 'tiny' / 'val.bin', 'ab') as f:
            f.write(b'x')
    if 'EMPTY' in flags:
        (tmp / 'out').mkdir()
        (tmp / 'out' / 'ckpt.pt').write_bytes(b'')
    if 'NOTPICKLE' in flags:
        (tmp / 'data' / 'tiny' / 'meta.pkl').write_bytes(b'vocab_size = 16\n')
    if 'EVILPICKLE' in flags:  # unpickling this would run a command: it must be refused, not run
        (tmp / 'data' / 'tiny' / 'meta.pkl').write_bytes(pickle.dumps(Evil()))
    if '--out_dir=FILE' in flags:
        (tmp / 'afile').write_text('x')
        flags = [f'--out_dir={tmp / "afile"}']
    if 'OTHERVOCAB' in flags:  # a character model resumed on GPT-2 BPE data
        train(tmp, 'out', '--max_iters=1')
        write_data(tmp / 'data', name='other', vocab=50257, char=False)
        flags = flags + ['--dataset=other']
    flags = [f for f in flags if not f.isupper()]
    cmd = [sys.executable, TRAIN, f'--data_dir={tmp / "data"}', '--dataset=tiny', f'--out_dir={tmp / "out"}', *TINY, *flags]
    before = sorted(os.listdir(tmp / 'out')) if (tmp / 'out').is_dir() else None
    p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('train.py: '), p.stderr
    assert message in lines[0]
    assert not (tmp / 'pwned').exists()
    assert (sorted(os.listdir(tmp / 'out')) if (tmp / 'out').is_dir() else None) == before  # nothing written or lost


class Evil:
    def __reduce__(self):
        return os.system, ('touch pwned',)


def test_cpu_torchrun_example_as_printed_rounds_accumulation_up(tmp):
    # the README's command, on 2 gloo processes; only where the data is, where the run goes and its length differ
    write_data(tmp / 'data', name='stdlib', n=6000)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', TRAIN,
           os.path.join(HERE, 'config', 'train_stdlib_cpu.py'), f'--data_dir={tmp / "data"}', f'--out_dir={tmp / "out"}',
           '--max_iters=3', '--eval_iters=1']
    p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'note: gradient_accumulation_steps rounded up to 2, a multiple of the 2 processes' in p.stdout
    c = ckpt(tmp, 'out')
    assert c['iter_num'] == 3 and c['world_size'] == 2 and c['config']['gradient_accumulation_steps'] == 2


def mount_tmpfs(path, size):
    path.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True).returncode:
        pytest.skip('cannot mount a small tmpfs here (not root?) to fill a disk')


def test_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoint(tmp):
    train(tmp, 'out', '--max_iters=2')
    size = os.path.getsize(tmp / 'out' / 'ckpt.pt')
    small = tmp / 'small'
    mount_tmpfs(small, size * 3 // 2)  # room for one checkpoint, not for a second one beside it
    try:
        subprocess.run(['cp', '-r', str(tmp / 'out'), str(small / 'out')], check=True)
        p = subprocess.run([sys.executable, TRAIN, f'--out_dir={small / "out"}', '--init_from=resume', '--max_iters=4'],
                           cwd=tmp, capture_output=True, text=True, env=ENV, timeout=300)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, p.stderr[-2000:]
        assert lines[0].startswith(f'train.py: could not write {small / "out" / "ckpt.pt"} (') and 'MB free' in lines[0]
        assert 'the previous checkpoint is kept' in lines[0]
        assert sorted(os.listdir(small / 'out')) == ['ckpt.pt', 'log.csv']  # no temporary file left
        assert_same_weights(ckpt(small, 'out')['model'], ckpt(tmp, 'out')['model'], exact=True)
    finally:
        subprocess.run(['umount', str(small)])


def test_a_killed_save_leaves_no_temporary_file_behind(tmp):
    train(tmp, 'out', '--max_iters=2')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # a process id that is gone, as after kill -9 in the middle of torch.save
    stale = tmp / 'out' / f"ckpt.pt.{socket.gethostname().replace('.', '-')}-{dead.pid}.tmp"
    stale.write_bytes(b'half a checkpoint')
    train(tmp, 'out', '--init_from=resume', '--max_iters=3')
    assert sorted(os.listdir(tmp / 'out')) == ['ckpt.pt', 'log.csv'] and ckpt(tmp, 'out')['iter_num'] == 3


def test_non_finite_weights_are_never_saved_over_a_good_checkpoint(tmp):
    import settings
    train(tmp, 'out', '--max_iters=2')
    good = ckpt(tmp, 'out')
    bad = dict(good, model={k: v.clone() for k, v in good['model'].items()})
    bad['model']['transformer.h.0.mlp.c_fc.weight'][0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'weights are not finite \(transformer.h.0.mlp.c_fc.weight and 0 more\): not saved'):
        settings.write_checkpoint(str(tmp / 'out' / 'ckpt.pt'), bad)
    assert_same_weights(ckpt(tmp, 'out')['model'], good['model'], exact=True)


def cpu_autocast_runs(dtype):
    try:
        with torch.autocast('cpu', dtype):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
    except Exception:  # older torch: an unsupported dtype raises, or warns and leaves autocast off
        return False


@pytest.fixture(scope='module')
def mixed(tmp_path_factory):
    """8 steps in float32, bfloat16 and float16 (where CPU autocast has it) on 17 tokens of data with block_size 16:
    every row is the same sequence (as in test_overfits_one_batch), so lr 1e-2 takes the loss from 2.74 to about
    1.24, a curve to follow, where on random data every run, broken or not, sits at ln(16)."""
    t = tmp_path_factory.mktemp('mixed')
    write_data(t / 'data', n=17)
    runs, losses = {}, {}
    for dtype in ('float32', 'bfloat16', 'float16'):
        if dtype == 'float32' or cpu_autocast_runs(getattr(torch, dtype)):  # a failed run fails its own test
            runs[dtype] = p = train(t, dtype, '--max_iters=8', '--learning_rate=1e-2', f'--dtype={dtype}',
                                    check=dtype == 'float32')
            if p.returncode == 0:
                assert [r['iter'] for r in log_rows(t, dtype)] == [str(i) for i in range(8)]
                losses[dtype] = [float(r['loss']) for r in log_rows(t, dtype)]
    return t, runs, losses


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mixed_precision_follows_float32(mixed, dtype):
    t, runs, losses = mixed
    if dtype not in runs:
        pytest.skip(f'torch {torch.__version__} has no {dtype} autocast on the CPU')
    assert runs[dtype].returncode == 0, runs[dtype].stdout[-2000:] + runs[dtype].stderr[-3000:]
    ref, got = losses['float32'], losses[dtype]
    assert all(np.isfinite(got)) and ref[-1] < ref[0] - 1.0  # float32 learns: 2.74 -> 1.24
    # within 1% of float32 at every step: bf16 keeps 8 significant bits (0.2% per rounding), and over 8 steps
    # these runs stayed within 0.1% (bf16) and 0.03% (fp16); the loss falls 12% in the first step alone, so a
    # run that fails to train, or trains at another rate, leaves the band at once
    assert max(abs(g - r) / r for g, r in zip(got, ref)) < 0.01, (got, ref)
    # and it is its own precision: float32's losses, or the other half precision's, would match to the last digit
    assert all(got != other for d, other in losses.items() if d != dtype), losses
    # MFU is against the faster of the CPU's measured float32 and bf16 rates, so a half-precision run, no faster per token
    # here, cannot show several times float32's: against bf16's rate alone, where it is emulated (a Zen3, 0.01x float32),
    # it showed about 100x float32's MFU, up to 198% for a 2 x 64 model
    mfu = {d: np.median([float(r['mfu']) for r in log_rows(t, d)[1:]]) for d in ('float32', dtype)}
    assert 0 < mfu[dtype] < 3 * mfu['float32'] < 3, mfu
    a, b = ckpt(t, 'float32'), ckpt(t, dtype)
    assert (a['dtype'], b['dtype']) == ('float32', dtype)
    assert all(v.dtype == torch.float32 and v.isfinite().all() for v in b['model'].values())  # float32 master weights
    assert a['scaler'] is None  # only fp16 needs a GradScaler, and then its state is saved to resume with
    if dtype == 'float16':
        assert b['scaler'] and 0 < b['scaler']['scale'] < float('inf'), b['scaler']
    else:
        assert b['scaler'] is None


def test_the_log_of_a_run_that_saved_no_checkpoint_is_kept_aside(tmp):
    (tmp / 'out').mkdir()
    (tmp / 'out' / 'log.csv').write_text('kind,iter,loss\ntrain,0,4.2\n')  # e.g. it crashed on its first step
    train(tmp, 'out', '--max_iters=2')
    aside = [f for f in os.listdir(tmp / 'out') if f.startswith('log.csv.')]
    assert len(aside) == 1 and (tmp / 'out' / aside[0]).read_text() == 'kind,iter,loss\ntrain,0,4.2\n'
    assert [r['iter'] for r in log_rows(tmp, 'out')] == ['0', '1']


def test_a_rank_killed_with_sigkill_ends_the_others_and_the_run_resumes(tmp):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--nnodes=1', '--master_addr=127.0.0.1',
           f'--master_port={port}', TRAIN, f'--data_dir={tmp / "data"}', '--dataset=tiny', f'--out_dir={tmp / "out"}', *TINY,
           '--gradient_accumulation_steps=2', '--eval_interval=5', '--max_iters=1000000', '--lr_decay_iters=1000000']
    p = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp / 'out' / 'ckpt.pt').exists():
            time.sleep(0.2)
        assert (tmp / 'out' / 'ckpt.pt').exists(), 'no checkpoint within 120 s'
        with open(f'/proc/{p.pid}/task/{p.pid}/children') as f:
            workers = [int(c) for c in f.read().split()]
        assert len(workers) == 2
        t = time.time()
        os.kill(workers[1], signal.SIGKILL)  # rank 1 dies without a word, as under the OOM killer
        p.communicate(timeout=60)  # the agent ends rank 0 too: no hang
        assert p.returncode != 0 and time.time() - t < 60
        assert all(not os.path.exists(f'/proc/{w}') or open(f'/proc/{w}/stat').read().split()[2] == 'Z' for w in workers)
    finally:
        p.kill()
    n = ckpt(tmp, 'out')['iter_num']
    assert n >= 5 and n % 5 == 0  # the last checkpoint, written at an evaluation, whole
    train(tmp, 'out', '--init_from=resume', f'--max_iters={n + 2}', '--gradient_accumulation_steps=2', nproc=2)
    assert ckpt(tmp, 'out')['iter_num'] == n + 2
