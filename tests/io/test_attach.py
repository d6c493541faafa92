"""attach without torch: following logs, finding runs from pids, watching, py-spy, the CLI's errors.

Real `scalemon run` runs are in test_attach_e2e.py; here run dirs are made by
hand and the "processes" are sleeping Pythons with the right environment or
command line.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import builders

from scalemon.cli import main
from scalemon.core.errors import AttachError
from scalemon.io.logtail import LogTail
from scalemon.run import discovery, stacks
from scalemon.sources.log import LogSource
from scalemon.sources.rundir import RunWatch
from scalemon.state.analysis import PROBE_HINT
from scalemon.views import headless

SLEEP = "import time; time.sleep(60)"


def nanochat_line(step, horizon=1000, loss=None, dt_ms=250.0, tok_s=4096):
    loss = 8.0 - step / 100 if loss is None else loss
    head = f"step {step:05d}/{horizon:05d} ({100 * step / horizon:.2f}%)" if horizon else \
        f"step {step:05d} ({step / 10:.2f}%)"
    return (f"{head} | loss: {loss:.6f} | lrm: 1.00 | dt: {dt_ms:.2f}ms | tok/sec: {tok_s:,} | "
            f"bf16_mfu: 0.00 | epoch: 1 pq: 0 rg: 0 | total time: 0.10m\n")


@pytest.fixture
def spawn():
    """Start sleeping helper processes; all of them are killed (by process group) at the end."""
    procs = []

    def start(*args, env=None, stdout=subprocess.DEVNULL):
        proc = subprocess.Popen([sys.executable, "-c", SLEEP, *args], env=env, stdout=stdout,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEMON_HOME", str(tmp_path))
    return tmp_path


def make_run(home, name):
    """A run dir in the state dir, created just now."""
    return builders.make_run(home / "runs", name, created=time.time())


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli(capsys, *args):
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


# --- following a log ---------------------------------------------------------------------


def test_tail_waits_for_whole_lines_and_survives_truncation_and_rotation(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"one\ntw")
    tail = LogTail(log)
    assert tail.read() == (["one"], [])
    with open(log, "ab") as f:
        f.write(b"o\r\nthree\rfour\n")  # a carriage return (progress bars) ends a line too
    assert tail.read() == (["two", "three", "four"], [])
    log.write_bytes(b"new\n")  # shorter than what was read: truncated
    lines, notes = tail.read()
    assert lines == ["new"] and "truncated" in notes[0] and tail.truncations == 1
    with open(log, "ab") as f:
        f.write(b"last words of the old file")
    os.rename(log, tmp_path / "train.log.1")
    lines, notes = tail.read()
    assert lines == [] and "moved or deleted" in notes[0]
    log.write_bytes(b"fresh\n")
    lines, notes = tail.read()
    assert lines == ["last words of the old file", "fresh"] and "rotated" in notes[0]
    assert tail.read() == ([], [])
    tail.close()


def test_log_run_is_rank_0_steps_at_the_log_pace(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("config: depth 4\n" + "".join(nanochat_line(s) for s in range(40))
                   + "Step 00040 | Validation bpb: 0.812345\n")
    with LogSource(log, system=False) as collector:
        state = collector.state
        assert (state.source, state.step, state.horizon, state.world) == ("log", 39, 1000, None)
        times = [t for _, t, _ in state.step_times]
        assert times[-1] == pytest.approx(log.stat().st_mtime)
        assert times[-1] - times[-2] == pytest.approx(0.25)
        summary = collector.summary()
        eta = summary.eta
        assert eta.step_s == pytest.approx(0.25) and eta.remaining_steps == 960
        assert eta.tok_s == pytest.approx(4096, rel=0.01)  # tokens = tok/sec x dt
        assert summary.split is None and summary.split_missing == PROBE_HINT
        assert (summary.regime, summary.advice) == (
            "unknown", f"the compute/sync split {PROBE_HINT}")
        line = headless.status_line(summary)
        assert f"split: {PROBE_HINT}" in line and "ETA 4 min" in line
        assert any("Validation bpb 0.812345" in e.text for e in state.events)
        exported = summary.to_dict()
        assert exported["source"] == "log" and exported["split_missing"] == PROBE_HINT


def test_a_log_printing_every_tenth_step_still_gives_a_rate(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(nanochat_line(s, dt_ms=100) for s in range(0, 500, 10)))
    with LogSource(log, system=False) as collector:
        assert collector.summary().eta.step_s == pytest.approx(0.1)


def test_without_a_horizon_the_eta_says_why(tmp_path):
    log = tmp_path / "sft.log"
    log.write_text("".join(nanochat_line(s, horizon=None) for s in range(1, 30)))
    with LogSource(log, system=False) as collector:
        assert collector.state.horizon is None
        assert "ETA unknown (no horizon: give --steps N)" in \
            headless.status_line(collector.summary())
    with LogSource(log, system=False, steps=100, vocab=65536) as collector:
        summary = collector.summary()
        assert summary.eta.remaining_steps == 100 - 30  # steps 0..29 done
        assert "below ln V" in headless.status_line(summary)


def test_a_log_truncated_while_followed_starts_over_visibly(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(nanochat_line(s) for s in range(50)))
    with LogSource(log, system=False) as collector:
        assert collector.state.step == 49
        log.write_text("".join(nanochat_line(s, horizon=20) for s in range(5)))
        collector.poll(0)
        state = collector.state
        texts = [e.text for e in state.events]
        assert any("was truncated: reading it again from the top" in t for t in texts)
        assert texts[-1] == "rank 0 started at step 0 on " + os.uname().nodename
        assert (state.step, state.horizon) == (4, 20)  # the new log's steps and /N


def test_the_followed_process_exiting_ends_the_run(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(nanochat_line(s) for s in range(10)))
    pid = dead_pid()
    with LogSource(log, pid=pid, system=False) as collector:
        collector.poll(0)
        assert collector.state.phase == "stopped"
        assert collector.state.events[-1].text == (
            f"rank 0 ended: stopped: process {pid} exited at step 10 of 1,000")
    with open(log, "a") as f:
        f.write("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    with LogSource(log, pid=pid, system=False) as collector:
        collector.poll(0)
        assert collector.state.phase == "failed"
        assert "traceback" in collector.state.events[-1].text


def test_without_a_pid_a_log_ends_at_its_horizon(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(nanochat_line(s, horizon=10) for s in range(10)))
    with LogSource(log, system=False) as collector:
        collector.poll(0)
        assert collector.state.phase == "finished"


# --- finding what to attach to -------------------------------------------------------------


def test_a_run_is_found_from_any_of_its_pids(home, spawn):
    run = make_run(home, "r")
    rank = spawn(env={**os.environ, "SCALEMON_RUN_DIR": str(run.path), "RANK": "1"})
    supervisor = spawn("-m", "scalemon.run.supervise", str(run.path))
    launcher, monitor = spawn(), spawn()
    run.write_config(run.read_config().with_pids(launcher=launcher.pid))
    (run.monitors_dir / f"{monitor.pid}-abc123.sock").touch()
    for proc, role in [(rank, "rank 1"), (supervisor, "the supervisor"),
                       (launcher, "the launcher"), (monitor, "a monitor")]:
        target = discovery.target_for_pid(proc.pid)
        assert (target.run.path, target.role) == (run.path, role)
    # This test is the supervisor's parent, as `scalemon run` is: it counts as the monitor.
    assert discovery.target_for_pid(os.getpid()).role == "the `scalemon run` monitor"
    assert discovery.target_for_pid(spawn().pid).run is None


def test_a_plain_process_is_watched_through_its_stdout_file(home, spawn, tmp_path):
    with open(tmp_path / "out.log", "wb") as out:
        to_file = spawn(stdout=out)
    target = discovery.target_for_pid(to_file.pid)
    assert target.run is None and target.log == tmp_path / "out.log"
    assert target.root == to_file.pid
    to_pipe = spawn(stdout=subprocess.PIPE)
    target = discovery.target_for_pid(to_pipe.pid)
    assert target.log is None
    assert "pipe:[" in target.log_note and "--log FILE" in target.log_note
    given = discovery.target_for_pid(to_pipe.pid, log=tmp_path / "out.log")
    assert given.log == tmp_path / "out.log" and given.log_note is None


def test_no_such_pid_and_another_users_process_are_one_line_errors(home, monkeypatch, capsys):
    pid = dead_pid()
    with pytest.raises(AttachError, match=f"no process with pid {pid}"):
        discovery.target_for_pid(pid)
    monkeypatch.setattr(discovery, "_other_user", lambda proc: "alice")
    code, out, err = cli(capsys, "attach", str(os.getpid()))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"scalemon: error: process {os.getpid()} belongs to user alice: scalemon cannot read "
        "its environment or output; attach as that user (or root), or give its log with "
        "--log FILE"]


def test_attach_without_a_pid_needs_a_running_run(home, spawn, capsys):
    code, _, err = cli(capsys, "attach", "--no-tui")
    assert code == 2 and "no scalemon run is running" in err
    for name in ("first", "second"):
        run = make_run(home, name)
        supervisor = spawn("-m", "scalemon.run.supervise", str(run.path))
        run.write_config(run.read_config().with_pids(supervisor=supervisor.pid))
    code, out, err = cli(capsys, "attach", "--no-tui")
    assert code == 2 and "2 runs are running: pick one with scalemon attach --run NAME" in err
    assert out.splitlines()[0].split() == ["#", "NAME", "STATE", "STEP", "LOSS", "WORLD"]
    assert {line.split()[1] for line in out.splitlines()[1:]} == {"first", "second"}


@pytest.mark.parametrize("args, message", [
    (["attach", "--log", "/nonexistent.log"], "no such log file: /nonexistent.log"),
    (["attach", "--log", "/"], "is not a regular file"),
    (["attach", "123", "--run", "x"], "not both"),
    (["attach", "--run", "nosuch"], "no run named 'nosuch'"),
    (["attach", "0"], "0 is not in the range"),
    (["replay"], "give a run name"),
    (["replay", "--log", "/nonexistent.log"], "no such log file"),
])
def test_bad_attach_and_replay_input_is_one_line_with_exit_code_2(home, capsys, args, message):
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


# --- watching ------------------------------------------------------------------------------


def test_run_watch_says_when_a_pid_exits_and_when_the_supervisor_vanishes(home, spawn):
    run = make_run(home, "r")
    rank = spawn(env={**os.environ, "SCALEMON_RUN_DIR": str(run.path)})
    supervisor = spawn("-m", "scalemon.run.supervise", str(run.path))
    run.write_config(run.read_config().with_pids(supervisor=supervisor.pid))
    with RunWatch(run, rank.pid) as watch:
        watch.poll(0)
        assert watch.state.events.count == 0
        os.killpg(rank.pid, signal.SIGKILL)
        rank.wait()
        watch.poll(0)
        assert watch.state.events[-1].text == f"process {rank.pid} exited"
        assert watch.state.phase == "starting"  # the run itself goes on
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        watch.poll(0)
        assert watch.state.phase == "failed"
        assert watch.state.events[-1].text == (
            f"supervisor {supervisor.pid} exited without recording the run's end (killed?)")


# --- py-spy --------------------------------------------------------------------------------


def fake_py_spy(tmp_path, script):
    path = tmp_path / "py-spy"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_stacks_say_why_not_or_dump_every_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(stacks, "py_spy", lambda: None)
    text = stacks.stacks([123])
    assert text.startswith("py-spy is not installed") and "pip install py-spy" in text
    assert stacks.stacks([]).startswith("no live Python processes")

    exe = fake_py_spy(tmp_path, 'echo "Thread 1 (active): MainThread"; echo "    train (t.py:3)"')
    monkeypatch.setattr(stacks, "py_spy", lambda: exe)
    assert stacks.stacks([11, 12]) == ("=== pid 11\nThread 1 (active): MainThread\n"
                                       "    train (t.py:3)\n\n=== pid 12\nThread 1 (active): "
                                       "MainThread\n    train (t.py:3)")

    exe = fake_py_spy(tmp_path, 'echo "Error: Permission denied (os error 13)" >&2; exit 1')
    monkeypatch.setattr(stacks, "ptrace_scope", lambda: "1")
    text = stacks.stacks([11])
    assert text.splitlines()[0] == ("=== pid 11: py-spy failed: Error: Permission denied "
                                    "(os error 13)")
    assert "(kernel.yama.ptrace_scope = 1: restricted: only a process's ancestors" in text
    assert "sudo sysctl kernel.yama.ptrace_scope=0" in text and "CAP_SYS_PTRACE" in text


# --- replay --log ----------------------------------------------------------------------------


def test_replay_folds_a_finished_log(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text("".join(nanochat_line(s, horizon=100) for s in range(60))
                   + "Step 00060 | Validation bpb: 0.9\nstep 00061/00100 | garbled\n")
    code, out, _ = cli(capsys, "replay", "--log", str(log), "--vocab", "65536")
    assert code == 0
    assert out.splitlines()[:3] == [
        "run train.log: stopped, step 60 of 100", "loss 7.410 (3.68 below ln V)",
        f"regime: unknown: the compute/sync split {PROBE_HINT}"]
    assert "rank 0 ended: stopped: end of train.log at step 60 of 100" in out
    assert out.splitlines()[-1] == ("(1 lines mention a step but could not be read, "
                                    "e.g. 'step 00061/00100 | garbled')")
    code, out, _ = cli(capsys, "replay", "--log", str(log), "--json")
    summary = json.loads(out)
    assert (summary["source"], summary["state"], summary["step"], summary["bad_lines"]) == (
        "log", "stopped", 59, 1)
    assert summary["log"]["evals"] == [{"step": 60, "metrics": {"Validation bpb": 0.9}}]
    assert summary["eta"]["step_s"] == pytest.approx(0.25)
