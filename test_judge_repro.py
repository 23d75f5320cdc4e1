# throwaway: what the loaded machine can do to test_resumes_after_an_interruption_without_asking_again
import time

import test_judge
from test_judge import fresh, run, server, trained  # noqa: F401


def test_a_reply_slower_than_the_third_runs_1s_timeout(run, fresh):  # noqa: F811
    real = test_judge.judge_py

    def judge_py(cwd, server, *args, **kw):
        server['plan'][:] = ['slow']  # the server stalled for 1.5 s, as a loaded machine may
        return real(cwd, server, *args, **kw)
    test_judge.judge_py = judge_py
    try:
        test_judge.test_resumes_after_an_interruption_without_asking_again(run, fresh)
    finally:
        test_judge.judge_py = real


class StallAfterLog(list):
    """The server thread descheduled between logging the 'hang' request and taking it off the plan."""
    def __init__(self, state):
        self.state = state

    def append(self, x):
        super().append(x)
        if self.state['plan'] == ['hang']:
            time.sleep(3)


def test_the_hang_taken_off_the_plan_after_the_log_counts(run, fresh):  # noqa: F811
    fresh['log'] = StallAfterLog(fresh)
    try:
        test_judge.test_resumes_after_an_interruption_without_asking_again(run, fresh)
    finally:
        fresh['log'] = []
