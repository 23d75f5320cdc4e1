"""pytest loads this first: the tests' one piece of setup. GPT-2's BPE files (tiktoken's cache layout) ship
in ../shared/data/tiktoken_cache beside the project in CI, so tiktoken needs no network there; elsewhere
tiktoken downloads them once, or TIKTOKEN_CACHE_DIR already points at a copy. The Ctrl-C tests need the
scripts they start to take SIGINT, which a shell's background job (`cmd &`) passes down ignored."""
import os
import signal

import pytest

CACHE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', 'shared', 'data', 'tiktoken_cache'))
if 'TIKTOKEN_CACHE_DIR' not in os.environ and os.path.isdir(CACHE):
    os.environ['TIKTOKEN_CACHE_DIR'] = CACHE  # absolute: the tests run scripts in other folders too
elif 'TIKTOKEN_CACHE_DIR' in os.environ:
    os.environ['TIKTOKEN_CACHE_DIR'] = os.path.abspath(os.environ['TIKTOKEN_CACHE_DIR'])
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # children then start with it at its default: Python's Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope='session')
def enc():
    """tiktoken's GPT-2 BPE, the reference tokenizer; the tests that need it skip, saying why, where it cannot load."""
    try:
        import tiktoken
        return tiktoken.get_encoding('gpt2')
    except Exception as e:
        pytest.skip(f'tiktoken cannot load the gpt2 encoding here ({e}); set TIKTOKEN_CACHE_DIR')
