"""
What judge.py promises, against a judge server started here on 127.0.0.1 (http.server in a thread) that
speaks Ollama's /api/chat and the OpenAI /v1/chat/completions and misbehaves when told: a malformed reply,
a dropped connection, a reply slower than the client's timeout, a 500, a 404, a request that hangs. The model
is a tiny instruction-tuned checkpoint trained here for 2 iterations on ../shared/data's instruction data
(pytest -q test_judge.py: about 50 s on 2 CPU cores).
"""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import judge

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, '..', 'shared', 'data')
ALPACA = os.path.join(SHARED, 'instruction_data', 'instruction-data.json')
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--batch_size=8', '--dtype=float32', '--compile=False',
        '--device=cpu', '--eval_iters=2', '--log_interval=1', '--warmup_iters=2', '--learning_rate=3e-3']
N = 5  # test records judged (--limit)
ENV = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()  # loopback only, whatever the machine says
       and k not in ('JUDGE_URL', 'JUDGE_MODEL', 'JUDGE_API_KEY', 'OPENAI_API_KEY')}
ENV['OMP_NUM_THREADS'] = '1'  # tiny models: threads only cost


def score_of(prompt):  # what the server scores a prompt: the test can tell which reply went where
    return len(prompt) % 101


@pytest.fixture(scope='module')
def server():
    """A judge on a free loopback port. server['plan'] lists what to do for the next requests (then 'ok');
    server['log'] gets (path, body, headers) of every request."""
    state = dict(plan=[], log=[], release=threading.Event())

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
            act = state['plan'].pop(0) if state['plan'] else 'ok'  # before the log: a test that waits on the log
            state['log'].append((self.path, body, dict(self.headers)))  # may set the next plan at once
            prompt = body['messages'][0]['content']
            text = "I think it's good" if act == 'malformed' else str(score_of(prompt))
            if act == 'drop':
                return  # the connection closes with no reply
            if act in ('slow', 'hang'):
                state['release'].wait(1.5 if act == 'slow' else 60)  # slow: past the client's 1 s timeout
            if act in ('500', '404') or self.path not in ('/api/chat', '/v1/chat/completions'):
                code = 500 if act == '500' else 404
                reply = {'error': 'overloaded' if code == 500 else f'model "{body["model"]}" not found, try pulling it'}
            else:
                code, message = 200, {'role': 'assistant', 'content': text}
                reply = {'model': body['model'], 'message': message, 'done': True} if self.path == '/api/chat' \
                    else {'choices': [{'index': 0, 'message': message, 'finish_reason': 'stop'}]}
            data = json.dumps(reply).encode()
            try:
                self.send_response(code)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up on a slow reply
                pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state['url'] = f'http://127.0.0.1:{httpd.server_address[1]}'
    yield state
    state['release'].set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fresh(server):
    server['plan'].clear()
    server['log'].clear()
    return server


def py(cwd, script, *args, env=ENV):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


def judge_py(cwd, server, *args, env=ENV):
    return py(cwd, 'judge.py', '--out_dir=out', f'--judge_url={server["url"]}', f'--limit={N}', '--max_new_tokens=8',
              '--device=cpu', '--timeout=30', '--backoff=0.01', *args, env=env)  # 30 s: a loaded machine retries nothing


def rows(path):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    assert text.endswith('\n')  # whole lines only
    return [json.loads(line) for line in text.split('\n')[:-1]]


def one_line_error(p, *words):
    lines = p.stderr.strip().split('\n')
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith('judge.py: '), p.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, server):
    """A tiny instruction-tuned run whose answers to the first N test records are judged once by the server:
    (folder, the judge's stdout, the server's log of that run)."""
    if not os.path.exists(ALPACA):
        pytest.skip(f'{ALPACA} is absent (it ships beside the project in CI)')
    t = tmp_path_factory.mktemp('judge')
    for script, *args in (('prepare.py', 'alpaca', f'--input={ALPACA}', '--out_dir=data'),
                          ('train.py', '--task=instruct', '--dataset=alpaca', '--out_dir=out', '--block_size=64',
                           '--max_iters=2', '--eval_interval=2', *TINY)):
        p = py(t, script, *args)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    server['plan'].clear()
    server['log'].clear()
    p = judge_py(t, server)
    assert p.returncode == 0, p.stderr[-3000:]
    return t, p, list(server['log'])


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run (checkpoint, data, responses, the first judgement) to change."""
    for name in ('out', 'data'):
        shutil.copytree(trained[0] / name, tmp_path / name)
    os.remove(tmp_path / 'out' / 'judged-llama3.jsonl')
    return tmp_path


def check_scores(judged, log):
    """Every row's score is the server's for the one prompt that holds its record and response."""
    prompts = [body['messages'][0]['content'] for _, body, _ in log]
    for r in judged:
        mine = {p for p in prompts if f"`{r['response']}`" in p and f"correct output `{r['reference']}`" in p
                and r['instruction'] in p}
        assert len(mine) == 1 and r['score'] == score_of(mine.pop()) and r['reply'] == str(r['score'])


def test_scores_greedy_answers_through_ollama(trained):
    t, p, log = trained
    with open(t / 'data' / 'alpaca' / 'test.json', encoding='utf-8') as f:
        records = json.load(f)[:N]
    judged = rows(t / 'out' / 'judged-llama3.jsonl')
    assert [(r['instruction'], r['input'], r['reference']) for r in judged] == \
        [(r['instruction'], r['input'], r['output']) for r in records]
    check_scores(judged, log)
    assert len(log) == N
    for path, body, _ in log:  # the book's request: Ollama's chat, deterministic
        assert path == '/api/chat' and body['model'] == 'llama3' and body['stream'] is False
        assert body['options'] == {'temperature': 0, 'seed': 123}
        assert 'on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only.' \
            in body['messages'][0]['content']
    mean = sum(r['score'] for r in judged) / N
    assert f'mean score {mean:.2f} over {N} scored of {N} responses' in p.stdout
    # the answers: greedy after the Alpaca prompt, cut at <|endoftext|>, as the model gives them here
    import tiktoken
    import torch

    import settings
    from finetune_data import EOT, alpaca_prompt
    from gpt2 import GPT
    enc = tiktoken.get_encoding('gpt2')
    model = GPT.from_checkpoint(settings.read_checkpoint(str(t / 'out' / 'ckpt.pt'))).eval()
    for r, j in zip(records[:2], judged):
        idx = torch.tensor([enc.encode_ordinary(alpaca_prompt(r['instruction'], r['input']))])
        out = model.generate(idx, 8, temperature=0, stop_token=EOT)[0, idx.size(1):].tolist()
        assert j['response'] == enc.decode(out[:out.index(EOT)] if EOT in out else out).strip()
    assert [r['response'] for r in rows(t / 'out' / 'responses.jsonl')] == [r['response'] for r in judged]


def test_another_judge_over_openai_reuses_the_answers(run, fresh):
    before = (run / 'out' / 'responses.jsonl').read_bytes()
    env = dict(ENV, JUDGE_MODEL='qwen2.5:7b', OPENAI_API_KEY='sk-test')
    p = judge_py(run, fresh, '--api=openai', f'--judge_url={fresh["url"]}/v1/', env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f'responses: {N} of {N} in' in p.stdout and '0 to generate' in p.stdout
    assert (run / 'out' / 'responses.jsonl').read_bytes() == before
    check_scores(rows(run / 'out' / 'judged-qwen2.5-7b.jsonl'), fresh['log'])
    for path, body, headers in fresh['log']:
        assert path == '/v1/chat/completions' and body['model'] == 'qwen2.5:7b'
        assert body['temperature'] == 0 and body['seed'] == 123 and headers['Authorization'] == 'Bearer sk-test'


def test_a_malformed_reply_is_recorded_unscored(run, fresh):
    fresh['plan'][:] = ['ok', 'malformed']
    p = judge_py(run, fresh)
    assert p.returncode == 0, p.stderr[-3000:]
    judged = rows(run / 'out' / 'judged-llama3.jsonl')
    assert judged[1]['score'] is None and judged[1]['reply'] == "I think it's good"
    check_scores(judged[:1] + judged[2:], fresh['log'])
    mean = sum(r['score'] for r in judged if r['score'] is not None) / (N - 1)
    assert f'mean score {mean:.2f} over {N - 1} scored of {N} responses (1 unscored' in p.stdout


def test_parse_score_takes_only_an_integer_0_to_100():
    for reply, want in (('85', 85), (' 0\n', 0), ('100.', 100), ('Score: 7', 7), ('85/100', 85),
                        ('90 out of 100', 90), ('<think>It is close to 50, maybe 60</think>\n\n60', 60),
                        ('101', None), ('-5', None), ('85.5', None), ("I'd say 85", None), ('80 or 90', None),
                        ("I think it's good", None), ('', None)):
        assert judge.parse_score(reply) == want, reply


def test_survives_a_dropped_connection_a_500_and_a_slow_reply(run, fresh):
    fresh['plan'][:] = ['drop', '500', 'slow']
    t0 = time.time()
    p = judge_py(run, fresh, '--retries=3', '--timeout=1')  # the slow reply takes 1.5 s
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(fresh['log']) >= N + 3  # the first record's request, three times again (more if the machine is slow)
    judged = rows(run / 'out' / 'judged-llama3.jsonl')
    assert len(judged) == N and all(r['score'] is not None for r in judged)
    check_scores(judged, fresh['log'])
    assert time.time() - t0 < 60


def interrupt(run, server, plan):
    """judge.py, Ctrl-C'd once the server has had len(plan) requests, the last of which hangs: its stderr."""
    server['plan'][:] = plan
    server['log'].clear()
    cmd = [sys.executable, os.path.join(HERE, 'judge.py'), '--out_dir=out', f'--judge_url={server["url"]}',
           f'--limit={N}', '--max_new_tokens=8', '--device=cpu', '--timeout=60']
    proc = subprocess.Popen(cmd, cwd=run, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(server['log']) < len(plan) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(server['log']) == len(plan)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 1 and 'interrupted; run it again to resume' in err
    return err


def test_resumes_after_an_interruption_without_asking_again(run, fresh):
    path = run / 'out' / 'judged-llama3.jsonl'
    interrupt(run, fresh, ['ok', 'ok', 'hang'])  # Ctrl-C while the judge thinks about the third record
    assert len(rows(path)) == 2
    with open(path, 'a', encoding='utf-8') as f:
        f.write('{"instruction": "a row cut short by a ki')  # as if killed in the middle of a write
    interrupt(run, fresh, ['ok', 'hang'])  # asks for the third record only, and its row starts a line of its own
    assert len(rows(path)) == 3
    fresh['log'].clear()
    p = judge_py(run, fresh)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(fresh['log']) == N - 3  # the three judged before were not asked again
    judged = rows(path)
    assert len(judged) == N
    check_scores(judged[3:], fresh['log'])


def test_a_smaller_limit_and_a_judge_of_a_like_name_keep_the_rows_judged_before(run, fresh):
    path = run / 'out' / 'judged-qwen2.5-7b.jsonl'  # the file of both qwen2.5:7b and qwen2.5-7b
    assert judge_py(run, fresh, '--judge_model=qwen2.5:7b').returncode == 0 and len(rows(path)) == N
    fresh['log'].clear()
    assert judge_py(run, fresh, '--judge_model=qwen2.5:7b', '--limit=2').returncode == 0
    assert not fresh['log'] and len(rows(path)) == N  # nothing asked again, nothing dropped
    p = judge_py(run, fresh, '--judge_model=qwen2.5-7b')  # another judge: asked, not read from the other's rows
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(fresh['log']) == N and [r['judge'] for r in rows(path)] == ['qwen2.5-7b'] * N + ['qwen2.5:7b'] * N
    assert judge_py(run, fresh, '--judge_model=qwen2.5:7b').returncode == 0 and len(fresh['log']) == N  # still kept
    assert len(rows(path)) == 2 * N  # and no row twice, however often it runs


def test_a_row_of_an_older_answer_is_judged_again_and_dropped(run, fresh):
    path = run / 'out' / 'judged-llama3.jsonl'
    assert judge_py(run, fresh).returncode == 0 and len(rows(path)) == N
    old = rows(path)
    old[1]['response'] = 'an answer of an earlier checkpoint'  # its record is this run's, its answer is not
    path.write_text(''.join(json.dumps(r) + '\n' for r in old), encoding='utf-8')
    fresh['log'].clear()
    p = judge_py(run, fresh)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(fresh['log']) == 1  # only that record asked again
    judged = rows(path)
    assert len(judged) == N and all(r['response'] != 'an answer of an earlier checkpoint' for r in judged)
    check_scores(judged[1:2], fresh['log'])


class Echo:
    """Stands in for the model: notes its prompts, and answers the same tokens whatever it is asked."""
    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def eval(self):
        return self

    def to(self, *args):
        return self

    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None, seed=None):
        import torch
        self.asked.append((idx[0].tolist(), temperature, stop_token))
        yield from (torch.tensor([[t]]) for t in self.answer[:max_new_tokens])


def test_answers_are_greedy_cut_at_endoftext_and_kept_per_checkpoint(tmp_path, monkeypatch, enc):
    import types

    from finetune_data import EOT, alpaca_prompt
    echo = Echo(enc.encode(' Paris.\n') + [EOT] + enc.encode(' and more'))
    monkeypatch.setattr(judge, 'GPT', types.SimpleNamespace(from_checkpoint=lambda ck: echo))
    monkeypatch.setattr(judge, 'device', 'cpu')
    records = [dict(instruction='Name the capital of France.', input='', output='Paris.'),
               dict(instruction='Translate into English.', input='Hallo', output='Hello')]
    path = str(tmp_path / 'responses.jsonl')
    prompts = [(enc.encode_ordinary(alpaca_prompt(r['instruction'], r['input'])), 0, EOT) for r in records]
    assert judge.respond(dict(iter_num=2, best_val_loss=1.5), records, path) == ['Paris.', 'Paris.']
    assert echo.asked == prompts
    assert [r['response'] for r in rows(path)] == ['Paris.', 'Paris.']
    echo.asked.clear()
    assert judge.respond(dict(iter_num=2, best_val_loss=1.5), records, path) == ['Paris.', 'Paris.']
    assert echo.asked == []  # kept
    assert judge.respond(dict(iter_num=4, best_val_loss=1.2), records, path) == ['Paris.', 'Paris.']
    assert echo.asked == prompts and len(rows(path)) == 2  # another checkpoint answers afresh; the old rows go


def test_nothing_listening_says_how_to_start_ollama(run):
    with socket.socket() as s:  # a port that was free a moment ago, and is closed
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    p = py(run, 'judge.py', '--out_dir=out', f'--judge_url=http://127.0.0.1:{port}', f'--limit={N}',
           '--max_new_tokens=8', '--retries=1', '--backoff=0.01')
    one_line_error(p, 'no judge answers', 'ollama serve', 'ollama pull llama3', '--judge_url')


def test_bad_input_and_unknown_models_are_one_line_errors(run, fresh):
    fresh['plan'][:] = ['404']
    one_line_error(judge_py(run, fresh, '--judge_model=llama9'), 'HTTP 404', 'ollama pull llama9')
    (run / 'bad.json').write_text('{"instruction": "no list"}')
    one_line_error(judge_py(run, fresh, '--test_file=bad.json'), 'bad.json', 'JSON list')
    one_line_error(judge_py(run, fresh, '--out_dir=nowhere'), 'no checkpoint at nowhere')
