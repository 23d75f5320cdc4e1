"""
Score an instruction-tuned model's answers with a stronger local LLM, as LLMs-from-scratch chapter 7 does
with Llama 3 through Ollama. Our model answers every record of the instruction test split (greedy, in the
Alpaca template), once: the answers are kept in out_dir/responses.jsonl, so another judge does not
re-sample them. The judge scores each answer 0-100 against the reference output; one row per example goes
to out_dir/judged-<judge model>.jsonl, and the mean is printed. An interrupted run resumes where it stopped.

$ ollama serve & ollama pull llama3                              # the default judge: Ollama's /api/chat
$ python judge.py --out_dir=out-alpaca
$ python judge.py --out_dir=out-alpaca --api=openai --judge_url=http://localhost:8080 --judge_model=qwen2.5
"""
import json
import os
import re
import sys
import time

import requests
import torch

import settings
from finetune_data import EOT, alpaca_prompt
from gpt2 import GPT

out_dir = 'out'  # the instruction-tuned run: ckpt.pt is read, and the JSONL files go here
test_file = ''  # a JSON list of {instruction, input, output}; '' reads the run's <data_dir>/<dataset>/test.json
limit = 0  # judge the first this many records (0: all)
max_new_tokens = 256  # tokens per answer, at most; greedy, and it stops at <|endoftext|>
device = 'auto'  # auto picks cuda, then mps, then cpu; or e.g. cpu, cuda:1
dtype = 'auto'  # auto: bfloat16 on GPUs that have it, float16 on other GPUs, float32 on cpu; or name one
# the judge
api = 'ollama'  # ollama (/api/chat) | openai (/v1/chat/completions: llama.cpp server, vLLM, LM Studio, ...)
judge_url = ''  # '': $JUDGE_URL, else http://localhost:11434 (Ollama, which also speaks api=openai)
judge_model = ''  # '': $JUDGE_MODEL, else llama3
api_key = ''  # sent as Authorization: Bearer; '': $JUDGE_API_KEY, else (api=openai) $OPENAI_API_KEY
timeout = 300.0  # seconds per request: the first one may wait while the server loads the model
retries = 3  # tries again after a connection error, a timeout or a 5xx reply, this many times
backoff = 1.0  # seconds before the first retry, doubling for each one after


def read_records(path: str) -> list[dict]:
    try:
        with open(path, encoding='utf-8') as f:
            records = json.load(f)
    except FileNotFoundError:
        raise ValueError(f'no test records at {path}: run `python prepare.py alpaca` (it writes test.json), '
                         'or pass --test_file=PATH') from None
    except ValueError as e:
        raise ValueError(f'{path} is not JSON ({e}): pass --test_file=PATH to a JSON list of records') from None
    if not isinstance(records, list) or not records or not all(
            isinstance(r, dict) and isinstance(r.get('instruction'), str) and isinstance(r.get('output'), str)
            and isinstance(r.get('input', ''), str) for r in records):
        raise ValueError(f'{path} is not a non-empty JSON list of {{instruction, input, output}} string records')
    return [dict(instruction=r['instruction'], input=r.get('input', ''), output=r['output']) for r in records]


def read_rows(path: str, keep) -> list[dict]:
    """The rows of a JSONL file that keep(row) accepts. If it held other lines (or a last one cut short by a
    kill), it is rewritten to just those rows first, so that rows appended next start on a line of their own."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')  # ends with '' when the last row is whole
    rows = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and keep(r):
            rows.append(r)
    if len(rows) != len(lines) - 1 or lines[-1]:
        write_rows(path, rows)
    return rows


def write_rows(path: str, rows: list[dict]) -> None:
    def write(p):
        with open(p, 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
    settings.atomic_write(path, write)


def append_row(path: str, row: dict) -> None:
    with open(path, 'a', encoding='utf-8') as f:  # one write of a whole line, flushed on close
        f.write(json.dumps(row, ensure_ascii=False) + '\n')


def key(r: dict) -> tuple:
    return r.get('instruction'), r.get('input'), r.get('output')


def respond(ck: dict, records: list[dict], path: str) -> list[str]:
    """Our model's answer to each record: from path where it holds one of this checkpoint's, else generated
    (and appended there, so an interrupted run keeps what it made)."""
    tag = f"iteration {ck['iter_num']}, best val loss {ck['best_val_loss']}, max_new_tokens {max_new_tokens}"
    done = {key(r): r['response'] for r in read_rows(path, lambda r: r.get('model') == tag
                                                     and isinstance(r.get('response'), str))}
    todo = [r for r in records if key(r) not in done]
    print(f'responses: {len(records) - len(todo)} of {len(records)} in {path}, {len(todo)} to generate', flush=True)
    if todo:
        import tiktoken
        try:
            enc = tiktoken.get_encoding('gpt2')
        except Exception as e:  # tiktoken downloads the BPE files once, then reads its cache
            raise ValueError(f"could not load GPT-2's BPE ({type(e).__name__}): connect to the network once, or set "
                             "TIKTOKEN_CACHE_DIR to a folder that holds tiktoken's cached gpt2 files") from None
        dev = settings.resolve_device(device)
        dt = dtype if dtype != 'auto' else 'float32' if not dev.startswith('cuda') else \
            'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        model = GPT.from_checkpoint(ck).eval().to(dev, getattr(torch, dt))
        for i, r in enumerate(todo, 1):
            if key(r) in done:  # the same record twice
                continue
            idx = torch.tensor([enc.encode_ordinary(alpaca_prompt(r['instruction'], r['input']))], device=dev)
            out = [t.item() for t in model.stream(idx, max_new_tokens, temperature=0, stop_token=EOT)]
            done[key(r)] = enc.decode(out[:out.index(EOT)] if EOT in out else out).strip()
            append_row(path, dict(r, response=done[key(r)], model=tag))
            print(f'responses: {i} of {len(todo)} generated', flush=True)
    return [done[key(r)] for r in records]


def judge_prompt(r: dict, response: str) -> str:
    """The prompt of LLMs-from-scratch chapter 7; its input is the Alpaca prompt up to the response."""
    task = alpaca_prompt(r['instruction'], r['input']).removesuffix('\n\n### Response:\n')
    return (f"Given the input `{task}` and correct output `{r['output']}`, score the model response `{response}` "
            "on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only.")


def parse_score(reply: str):
    """The integer 0-100 a reply is (as in '85', 'Score: 85', '85/100'), else None: any other reply is
    unscored, never guessed. A reasoning model's <think>...</think> comes first and is left out."""
    m = re.fullmatch(r'(?:score:?)?\s*(\d{1,3})\s*(?:/\s*100|out of 100)?\.?',
                     re.sub(r'<think>.*?</think>', '', reply, flags=re.S).strip(), re.I)
    return int(m.group(1)) if m and int(m.group(1)) <= 100 else None


def ask(prompt: str) -> str:
    """The judge's reply to prompt, at temperature 0 with a fixed seed. Connection errors, timeouts and 5xx
    replies are tried again, retries times, waiting backoff, 2 * backoff, ... seconds; then, or on any other
    bad reply, a ValueError that says what to do."""
    messages = [{'role': 'user', 'content': prompt}]
    if api == 'ollama':
        url = judge_url.rstrip('/') + '/api/chat'
        body = {'model': judge_model, 'messages': messages, 'stream': False, 'options': {'temperature': 0, 'seed': 123}}
    else:  # a base URL with /v1 or without
        url = judge_url.rstrip('/').removesuffix('/v1') + '/v1/chat/completions'
        body = {'model': judge_model, 'messages': messages, 'temperature': 0, 'seed': 123}
    headers = {'Authorization': f'Bearer {api_key}'} if api_key else {}
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            r = requests.post(url, json=body, headers=headers, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as e:
            why = type(e).__name__
            continue
        if r.status_code < 500:
            break
        why = f'HTTP {r.status_code}'
    else:
        raise ValueError(f'no judge answers at {url} ({why}, {retries + 1} tries): start Ollama (`ollama serve`, '
                         f'then `ollama pull {judge_model}`), or point --judge_url at another server '
                         '(--api=openai for an OpenAI-compatible one)')
    if r.status_code != 200:
        hint = {401: 'check --api_key', 403: 'check --api_key',
                404: f'is --api={api} right, and is {judge_model} there (`ollama pull {judge_model}`)?'}
        raise ValueError(f'{url} answered HTTP {r.status_code} ({" ".join(r.text.split())[:200]}): '
                         + hint.get(r.status_code, 'check --judge_url, --judge_model and --api'))
    try:
        j = r.json()
        content = j['message']['content'] if api == 'ollama' else j['choices'][0]['message']['content']
        if not isinstance(content, str):
            raise TypeError
    except (ValueError, LookupError, TypeError):
        raise ValueError(f'{url} sent no {api} chat reply ({" ".join(r.text.split())[:120]!r}): '
                         f'is --api={api} right for that server?') from None
    return content


def main():
    ck = settings.read_checkpoint(os.path.join(out_dir, 'ckpt.pt'))
    args = ck['model_args']
    if args.get('n_classes') or args['vocab_size'] != 50257:
        raise ValueError(f'{out_dir}/ckpt.pt is a ' + ('classifier' if args.get('n_classes') else
                         f"{args['vocab_size']}-symbol model") + ': judge.py needs a GPT-2 BPE language model '
                         '(train.py --task=instruct)')
    cfg = ck['config']
    records = read_records(test_file or os.path.join(cfg.get('data_dir', 'data'), cfg['dataset'], 'test.json'))
    records = records[:limit or None]
    responses = respond(ck, records, os.path.join(out_dir, 'responses.jsonl'))

    path = os.path.join(out_dir, f"judged-{re.sub(r'[^A-Za-z0-9_.-]+', '-', judge_model)}.jsonl")
    fields = ('instruction', 'input', 'reference', 'response', 'score', 'reply')
    kept = read_rows(path, lambda r: set(fields) <= set(r))  # rows of another --limit, or a judge of a like name, stay
    judged = {(r['instruction'], r['input'], r['reference'], r['response']): r
              for r in kept if r.get('judge', judge_model) == judge_model}
    rows = []
    for i, (rec, response) in enumerate(zip(records, responses), 1):
        k = (rec['instruction'], rec['input'], rec['output'], response)
        if k not in judged:
            reply = ask(judge_prompt(rec, response))
            judged[k] = dict(zip(fields, (*k, parse_score(reply), reply)), judge=judge_model)
            append_row(path, judged[k])
            print(f'judged {i} of {len(records)}: {judged[k]["score"]}', flush=True)
        rows.append(judged[k])
    # this run's rows in the order of the records, then, once each, the others kept: another judge's, or of a record
    # beyond this --limit (those of this judge for these records but an older answer are dropped)
    here, others = {(r['instruction'], r['input'], r['output']) for r in records}, {}
    for r in kept:
        k = (r.get('judge', judge_model), r['instruction'], r['input'], r['reference'], r['response'])
        if k[0] != judge_model or k[1:4] not in here:
            others[k] = r
    write_rows(path, rows + list(others.values()))
    scores = [r['score'] for r in rows if r['score'] is not None]
    mean = f'mean score {sum(scores) / len(scores):.2f}' if scores else 'no score'
    unscored = len(rows) - len(scores)
    print(f'{mean} over {len(scores)} scored of {len(rows)} responses'
          + (f' ({unscored} unscored: the reply held no integer 0-100)' if unscored else '')
          + f' by {judge_model}; rows in {path}')


if __name__ == '__main__':
    settings.configure(globals(), sys.argv[1:], __file__)
    judge_url = judge_url or os.environ.get('JUDGE_URL') or 'http://localhost:11434'
    judge_model = judge_model or os.environ.get('JUDGE_MODEL') or 'llama3'
    api_key = api_key or os.environ.get('JUDGE_API_KEY') or \
        (os.environ.get('OPENAI_API_KEY', '') if api == 'openai' else '')
    settings.check(globals(), __file__, minimum=dict(limit=0, max_new_tokens=0, timeout=0.001, retries=0, backoff=0.0),
                   choices=dict(api=('ollama', 'openai'), dtype=('auto', 'float32', 'bfloat16', 'float16')))
    try:
        main()
    except (ValueError, OSError) as e:
        raise SystemExit(f'judge.py: {e}')
    except KeyboardInterrupt:
        raise SystemExit(f'\njudge.py: interrupted; run it again to resume: what was done is kept in {out_dir}')
