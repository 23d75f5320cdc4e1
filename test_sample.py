"""
What sample.py promises a person at the terminal: in interactive mode Ctrl-C stops the reply, not the
program, and Ctrl-C or Ctrl-D at the prompt quits; bad settings are one-line errors.
"""
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """A random GPT-2 in the Hugging Face layout, as transformers writes it."""
    transformers = pytest.importorskip('transformers')
    try:
        import tiktoken
        tiktoken.get_encoding('gpt2')
    except Exception as e:
        pytest.skip(f'tiktoken cannot load the gpt2 encoding here ({e}); set TIKTOKEN_CACHE_DIR')
    path = tmp_path_factory.mktemp('hf')
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).save_pretrained(path)
    return path


def reader(stream, q):
    while ch := stream.read(1):
        q.put(ch)


def wait_for(q, text, seen, timeout=60):
    """Read the child's output until text shows up after what was seen so far; return all of it."""
    deadline, start = time.time() + timeout, len(seen)
    while text not in seen[start:]:
        try:
            seen += q.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            raise AssertionError(f'no {text!r} within {timeout} s; output so far: {seen[-500:]!r}')
    return seen


def test_ctrl_c_stops_the_reply_and_returns_to_the_prompt(folder):
    # max_new_tokens far beyond what a test waits for: only Ctrl-C can end this reply
    p = subprocess.Popen([sys.executable, os.path.join(HERE, 'sample.py'), f'--init_from={folder}', '--interactive=True',
                          '--max_new_tokens=1000000', '--stop_at_eot=False'], cwd=HERE, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=0)
    q = queue.Queue()
    threading.Thread(target=reader, args=(p.stdout, q), daemon=True).start()
    try:
        out = wait_for(q, 'You: ', '')
        p.stdin.write('Hello\n')
        p.stdin.flush()
        out = wait_for(q, 'GPT: ', out)
        time.sleep(1.0)  # tokens stream meanwhile
        p.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out = wait_for(q, '(stopped)\nYou: ', out)
        assert p.poll() is None  # still running, asking again
        assert len(out.split('GPT: ', 1)[1].split('(stopped)')[0]) > 5  # it had been replying
        p.stdin.write('Again\n')
        p.stdin.flush()
        out = wait_for(q, 'GPT: ', out)
        p.send_signal(signal.SIGINT)
        out = wait_for(q, '(stopped)\nYou: ', out)
        time.sleep(0.5)  # the prompt is printed just before input() waits: a person is never faster than that
        p.send_signal(signal.SIGINT)  # at the prompt: quit
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()


def test_ctrl_d_at_the_prompt_quits_and_replies_show_their_speed(folder):
    p = subprocess.run([sys.executable, os.path.join(HERE, 'sample.py'), f'--init_from={folder}', '--interactive=True',
                        '--max_new_tokens=5', '--stop_at_eot=False'], cwd=HERE, input='hi\n', capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith('You: GPT: ') and p.stdout.endswith('You: \n'), p.stdout
    assert '(5 tokens, ' in p.stderr and 'tokens/s)' in p.stderr


@pytest.mark.parametrize('flag,message', [('--temperature=-1', 'temperature must be 0 (greedy) or at least 1e-4'),
                                          ('--temperature=1e-45', 'temperature must be 0 (greedy) or at least 1e-4'),
                                          ('--threads=-1', 'threads at least 0'),
                                          ('--device=gpu', 'torch sees no such device here'),
                                          ('--top_p=2', 'top_p must be in (0, 1]'),
                                          ('--top_k=0', 'top_k must be at least 1'),
                                          ('--top_k=-5', 'top_k must be at least 1'),
                                          ('--max_new_tokens=-1', 'max_new_tokens must be >= 0'),
                                          ('--device=cuda', 'torch sees no such device here')])
def test_bad_settings_are_one_line(folder, flag, message):
    if flag == '--device=cuda' and torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    p = subprocess.run([sys.executable, os.path.join(HERE, 'sample.py'), f'--init_from={folder}', flag], cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and message in lines[0] and p.stdout == '', p.stderr


def test_characters_a_char_model_never_saw_are_one_line_and_nothing_is_printed(tmp_path):
    import pickle

    import numpy as np
    d = tmp_path / 'data' / 'abc'
    d.mkdir(parents=True)
    for split in ('train', 'val'):
        np.random.default_rng(0).integers(0, 3, 500).astype(np.uint16).tofile(d / f'{split}.bin')
    pickle.dump(dict(vocab_size=3, stoi={'a': 0, 'b': 1, 'c': 2}, itos={0: 'a', 1: 'b', 2: 'c'}), open(d / 'meta.pkl', 'wb'))
    subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), '--dataset=abc', f'--data_dir={tmp_path / "data"}',
                    f'--out_dir={tmp_path / "out"}', '--n_layer=1', '--n_head=1', '--n_embd=8', '--block_size=8',
                    '--max_iters=1', '--eval_iters=1', '--device=cpu', '--compile=False'], check=True, capture_output=True)
    p = subprocess.run([sys.executable, os.path.join(HERE, 'sample.py'), f'--out_dir={tmp_path / "out"}', '--start=abXY'],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stdout == '' and p.stderr == "sample.py: the prompt has characters this model never saw: 'XY'\n"
