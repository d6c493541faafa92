"""Faults on real short runs: the monitor frozen or killed, a rank killed, a trainer that raises,
a full disk. The trainer must never wait on, slow for or die with the monitor; the monitor must
say what went wrong, within seconds, and lose no record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from support.runs import (
    TINY,
    processes_of,
    rank_pid,
    rank_records,
    recorded_steps,
    run_dir,
    scalemon,
    start_run,
    steps_in_file,
    wait_until,
)

from scalemon.core.records import EndRecord
from scalemon.run import launch

pytestmark = pytest.mark.slow

FOREVER = ["--steps", "100000", "--checkpoint-every", "0"]
STATUS_STEP = re.compile(r"^\d\d:\d\d:\d\d (\w+)\s+step ([\d,]+)/", re.M)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEMON_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def contiguous(run_path) -> int:
    """Both ranks recorded steps 0..n-1 with none missing; returns n."""
    steps = [recorded_steps(run_path, rank) for rank in (0, 1)]
    assert steps[0] == list(range(len(steps[0]))), "rank 0 is missing steps"
    assert steps[1] == steps[0], "rank 1's steps differ from rank 0's"
    return len(steps[0])


def test_frozen_screen_slows_nothing_loses_nothing_and_catches_up(home):
    """The live screen (in tmux) is frozen with SIGSTOP for 30 s, then resumed."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    from support.tmux import Tmux, shown_step

    name = "frozen"
    run = run_dir(home, name)
    command = [sys.executable, "-m", "scalemon", "run", "--name", name,
               *[a for a in TINY if a != "--no-tui"], *FOREVER]
    env = f"env SCALEMON_HOME={home} TERM=xterm-256color"
    tmux = Tmux(f"scalemon-faults-{os.getpid()}")
    try:
        tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "30",
             f"{env} {' '.join(command)}; sleep 60")
        tmux.wait_for(lambda s: shown_step(s) >= 5, 120, "the first steps on screen")
        monitor = next(p for p in psutil.Process(tmux.pane_pid()).children(recursive=True)
                       if "run" in p.cmdline() and "scalemon" in " ".join(p.cmdline()))
        monitor.suspend()
        before = steps_in_file(run.path)
        time.sleep(30)
        during = steps_in_file(run.path)
        monitor.resume()
        assert during > before + 30, "the trainer slowed while the screen was frozen"
        tmux.wait_for(lambda s: shown_step(s) >= during, 15, "the screen to catch up")
    finally:
        launch.stop_and_wait(run)
        tmux.kill()
    assert contiguous(run.path) > during
    assert not processes_of(run.path)


def test_killed_monitor_leaves_the_run_training_and_attach_shows_every_step(home):
    proc, output = start_run(*TINY, *FOREVER, "--name", "orphan")
    run = run_dir(home, "orphan")
    try:
        wait_until(lambda: steps_in_file(run.path) >= 10, 120, "the first steps")
        proc.kill()
        proc.wait(timeout=10)
        before = steps_in_file(run.path)
        time.sleep(3)
        assert steps_in_file(run.path) > before + 5, "the run stopped with its monitor"

        attach = subprocess.Popen(
            [sys.executable, "-m", "scalemon", "attach", "--run", "orphan", "--no-tui",
             "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        launch.request_stop(run)
        out, err = attach.communicate(timeout=90)
    finally:
        launch.stop_and_wait(run)
    assert attach.returncode == 0, err
    steps = contiguous(run.path)
    final = STATUS_STEP.findall(out)[-1]
    assert final == ("stopped", f"{steps:,}"), out
    assert f"records: ranks 0-1 steps 0-{steps - 1}, none missing" in out, out
    assert not processes_of(run.path)


def test_killed_rank_is_named_and_the_run_fails_with_nothing_left_behind(home):
    proc, output = start_run(*TINY, *FOREVER, "--interval", "1", "--name", "killed")
    run = run_dir(home, "killed")
    try:
        wait_until(lambda: steps_in_file(run.path, 1) >= 10, 120, "the first steps")
        victim = rank_pid(run.path, 1)
        # Frozen first, so its peer is surely blocked in a collective when it dies.
        os.kill(victim, signal.SIGSTOP)
        wait_until(lambda: "rank 0 has waited" in output.text(), 30,
                   "the monitor to see rank 0 waiting")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        said = wait_until(lambda: [line for line in output.since(killed_at)
                                   if f"rank 1 (pid {victim}) is gone" in line], 10,
                          "the monitor to name the rank that is gone")
        assert "rank 0 is stuck in sync waiting for it" in said[0], said
        proc.wait(timeout=90)
    finally:
        launch.stop_and_wait(run)
    text = output.text()
    assert proc.returncode == 128 + signal.SIGKILL, text
    assert "rank 1 (pid" in text and "is stopped" in text
    assert "run killed failed with exit code 137" in text
    assert re.search(r"^\d\d:\d\d:\d\d failed ", text, re.M), text
    assert json.loads(scalemon("ls", "--json").stdout)[0]["state"] == "failed"
    wait_until(lambda: not processes_of(run.path), 10, "every process of the run to exit")
    replayed = json.loads(scalemon("replay", "killed", "--json").stdout)
    ranks = {c["key"]: c for c in replayed["checklist"]["checks"]}["ranks"]
    assert ranks["state"] == "fail" and ranks["detail"].startswith("rank 1 stopped at step ")


FAILING_SCRIPT = """
    import sys, time
    import torch, torch.distributed as dist
    from scalemon.probes import StepProbe

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    with StepProbe.from_env(meta={"steps": 100}) as probe:
        for step in range(100):
            with probe.step(step, tokens=64) as s:
                with s.phase("forward"):
                    time.sleep(0.01)
            if step == 5 and rank == 1:
                {fault}
            flag = torch.zeros(1)
            dist.all_reduce(flag)
"""


@pytest.mark.parametrize("fault, code, shown", [
    ("raise RuntimeError('boom: rank 1 at step 5')", 1, "RuntimeError: boom: rank 1 at step 5"),
    ("sys.exit(7)", 7, "(torchrun: rank 1 failed first, exit code 7)"),
])
def test_a_trainer_that_fails_fails_the_run_with_its_exit_code_and_stderr(
        home, tmp_path, fault, code, shown):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent(FAILING_SCRIPT).replace("{fault}", fault))
    result = scalemon("run", "--nproc-per-node", "2", "--backend", "gloo", "--no-tui",
                      "--interval", "1", "--name", "fails", "--", str(script), timeout=120)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"run fails failed with exit code {code}; last lines of stderr:" in result.stderr
    assert shown in result.stderr, result.stderr
    summary = json.loads(scalemon("replay", "fails", "--json").stdout)
    assert summary["state"] == "failed" and summary["status"]["exit_code"] == code
    end = rank_records(run_dir(home, "fails").path, 1)[-1]
    assert isinstance(end, EndRecord) and end.reason == "error" and end.step == 5
    assert not processes_of(run_dir(home, "fails").path)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB filesystem of its own (tmpfs; needs root), unmounted after the test."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_keeps_training_says_records_are_held_back_then_writes_them(
        small_disk, monkeypatch):
    home = small_disk / "home"
    monkeypatch.setenv("SCALEMON_HOME", str(home))
    proc, output = start_run(*TINY, "--steps", "100000", "--checkpoint-every", "20",
                             "--interval", "1", "--name", "full")
    run = run_dir(home, "full")
    filler = small_disk / "filler"
    try:
        wait_until(lambda: steps_in_file(run.path) >= 10, 120, "the first steps")
        with open(filler, "wb") as f:  # fill the disk to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        full_at = time.monotonic()
        wait_until(lambda: any("cannot write records" in line
                               for line in output.since(full_at)), 15,
                   "the monitor to say records are held back", output)
        on_disk = steps_in_file(run.path)
        shown = wait_until(lambda: [int(m.group(2).replace(",", "")) for m in
                                    STATUS_STEP.finditer("\n".join(output.since(full_at)))
                                    if int(m.group(2).replace(",", "")) > on_disk + 50], 30,
                           "the run to train on with the disk full")
        assert steps_in_file(run.path) == on_disk, "records were written to a full disk?"
        filler.unlink()
        freed_at = time.monotonic()
        wait_until(lambda: any("records reach the run dir again" in line
                               for line in output.since(freed_at)), 15,
                   "the monitor to say recording resumed")
        assert steps_in_file(run.path) > shown[-1]
        launch.request_stop(run)
        proc.wait(timeout=90)
    finally:
        filler.unlink(missing_ok=True)
        launch.stop_and_wait(run)
    text = output.text()
    assert proc.returncode == 0, text
    assert "not written: No space left on device" in text  # a checkpoint, and training went on
    steps = contiguous(run.path)
    assert f"records: ranks 0-1 steps 0-{steps - 1}, none missing" in text, text
    assert not processes_of(run.path)
