"""RankWatch: a rank's process as the monitor checks it every poll (one /proc read a poll)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.runs import wait_until

from scalemon.io.processes import RankWatch


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_live_rank_then_stopped_then_killed(child):
    watch = RankWatch()
    assert watch.status(child.pid, time.time()) in (psutil.STATUS_RUNNING,
                                                    psutil.STATUS_SLEEPING)
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: watch.status(child.pid, None) == psutil.STATUS_STOPPED, 5, "stopped")
    os.kill(child.pid, signal.SIGKILL)
    wait_until(lambda: watch.status(child.pid, None) is None, 5, "gone")  # a zombie: gone
    child.wait()
    assert watch.status(child.pid, None) is None


def test_a_pid_started_after_the_rank_is_not_the_rank(child):
    assert RankWatch().status(child.pid, started=time.time() - 3600) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_pid_handed_out_again_is_not_the_rank(child):
    watch = RankWatch()
    assert watch.status(child.pid, None) is not None
    watch._start_ticks[child.pid] = "0"  # as if another process had held the pid first
    assert watch.status(child.pid, None) is None
