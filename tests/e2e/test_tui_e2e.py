"""The live screen for real: a two-rank gloo run inside tmux, read back with capture-pane.

Checks that the step advances on screen, that the loss and ETA panels show
numbers, and that `q` closes the screen while the run keeps training; then
stops the run and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time

import pytest
from support.runs import steps_in_file
from support.tmux import Tmux, shown_step

from scalemon.io.rundir import RunDir
from scalemon.run import launch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]

NAME, STEPS = "tui-e2e", 5000


def screen_command() -> list[str]:
    return [sys.executable, "-m", "scalemon", "run", "--name", NAME, "--steps", str(STEPS),
            "--depth", "1", "--vocab", "256", "--seq-len", "64", "--device-batch", "4",
            "--tokens-per-step", "1024", "--backend", "gloo", "--threads-per-rank", "1",
            "--checkpoint-every", "500", "--price", "2"]


def test_screen_in_tmux_follows_the_run_and_q_leaves_it_training(tmp_path):
    home = tmp_path / "home"
    env = {"SCALEMON_HOME": str(home), "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    command = " ".join(["env", *(f"{k}={v}" for k, v in env.items()), *screen_command()])
    tmux = Tmux(f"scalemon-test-{os.getpid()}")
    run = RunDir(home / "runs" / NAME)
    try:
        # The shell stays after the screen exits, so its last words can be read.
        tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "30",
             f"{command}; echo SCREEN-EXITED $?; sleep 120")
        first = tmux.wait_for(lambda s: shown_step(s) >= 5 and "TRAINING" in s, 120,
                              "the first steps on screen")
        tmux.wait_for(lambda s: shown_step(s) > shown_step(first) + 3, 30, "the step to advance")
        # The panels below the header redraw every 2 s: wait for one with numbers.
        numbers = re.compile(r"loss \d+\.\d{3} · smoothed \d+\.\d{3}(?s:.*)ETA \d.*\n.*finishes ")
        later = tmux.wait_for(numbers.search, 15, "the loss and ETA panels to show numbers")
        assert re.search(r"\d+(\.\d+)?k? tok/s", later), later
        assert "Step split" in later and "System" in later and "Events" in later

        tmux("send-keys", "-t", "main", "q")
        after = tmux.wait_for(lambda s: "SCREEN-EXITED" in s, 20, "the screen to close")
        assert f"left run {NAME}" in after and "SCREEN-EXITED 0" in after, after
        before = steps_in_file(run.path)
        time.sleep(3)
        assert steps_in_file(run.path) > before, "the run stopped when the screen closed"
        assert json.loads(run.config_path.read_text())["pids"]["supervisor"]
        assert not list(run.monitors_dir.glob("*.sock")), "the screen left its socket behind"
    finally:
        launch.stop_and_wait(run)
        tmux.kill()
    status = run.read_status()
    assert status is not None and status.exit_code == 0, status  # stopped gracefully
