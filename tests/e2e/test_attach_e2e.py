"""`scalemon attach` for real: a running `scalemon run`, two monitors, a plain training process,
a dead pid and a log truncated while followed."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scalemon.core import codec
from scalemon.io.processes import process_alive
from scalemon.io.rundir import RunDir
from scalemon.run import launch

pytestmark = pytest.mark.slow

TINY = ["--depth", "1", "--vocab", "256", "--seq-len", "64", "--device-batch", "4",
        "--tokens-per-step", "512", "--backend", "gloo", "--threads-per-rank", "1",
        "--checkpoint-every", "0", "--no-tui"]
STATUS = re.compile(r"^\d\d:\d\d:\d\d (\w+)\s+step ([\d,]+)")
PLAIN_SCRIPT = """\
import sys, time
for step in range(100000):
    print(f"step {step:05d}/99999 ({step / 999.99:.2f}%) | loss: {8 - step / 1000:.6f} | "
          f"lrm: 1.00 | dt: 50.00ms | tok/sec: 20,480 | bf16_mfu: 0.00 | epoch: 1 pq: 0 rg: 0 | "
          f"total time: 0.01m | eta: 80.0m", flush=True)
    if step % 20 == 0:
        print(f"Step {step:05d} | Validation bpb: 0.9", flush=True)
    time.sleep(0.05)
"""


class Monitor:
    """A `scalemon ...` child whose stdout lines are read with timeouts (killed on exit)."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "scalemon", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, want, timeout=30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if want(line):
                return line
        raise AssertionError("not seen; output so far:\n" + "\n".join(self.seen[-30:]))

    def status(self, after_step=-1, timeout=30.0) -> tuple[str, int]:
        """The next status line with a step above `after_step`: (state, step)."""
        line = self.read_until(lambda text: (m := STATUS.match(text)) is not None
                               and int(m.group(2).replace(",", "")) > after_step, timeout)
        state, step = STATUS.match(line).groups()
        return state, int(step.replace(",", ""))

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=15)
        return code, self.proc.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def steps_in(path: Path) -> int:
    return path.read_bytes().count(b'"kind":"step"') if path.exists() else 0


def start_pid(run: RunDir, rank: int) -> int:
    first = run.rank_file(rank).read_bytes().split(b"\n", 1)[0]
    return codec.decode(first).pid


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real two-rank `scalemon run`, going for the whole module, stopped at the end."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "SCALEMON_HOME": str(home)}
    with open(home / "run.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scalemon", "run", *TINY, "--steps",
                                 "1000000", "--name", "live"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    run = RunDir(home / "runs" / "live")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (steps_in(run.rank_file(1)) < 10 or not
                                           run.read_config().pids.get("launcher")):
        assert proc.poll() is None, (home / "run.out").read_text()
        time.sleep(0.2)
    yield env, run, proc
    launch.stop_and_wait(run, timeout=90)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_attach_to_a_rank_shows_history_from_step_0_then_live_steps(live):
    env, run, _ = live
    rank1 = start_pid(run, 1)
    done = steps_in(run.rank_file(0))
    with Monitor(env, "attach", str(rank1), "--no-tui", "--interval", "0.5") as monitor:
        assert monitor.read_until(lambda line: line.startswith("attached")) == (
            f"attached to run live in {run.path}; pid {rank1} is rank 1")
        history = monitor.read_until(lambda line: "history from the run dir" in line)
        first, last = map(int, re.search(r"steps (\d+)-(\d+)", history).groups())
        assert first == 0 and last + 1 >= done
        monitor.read_until(lambda line: line.endswith("rank 0 started at step 0 on "
                                                      + os.uname().nodename))
        state, step = monitor.status()
        assert state == "training" and step >= last + 1
        _, live_step = monitor.status(after_step=step)  # steps that happened after attaching
        assert live_step > last + 1
        code, err = monitor.interrupt()
        assert code == 0 and "left run live going; watch it again with: " \
                             "scalemon attach --run live" in err


def test_two_monitors_at_once_and_one_quitting_disturbs_neither(live):
    env, run, _ = live
    launcher = run.read_config().pids["launcher"]
    with Monitor(env, "attach", str(launcher), "--no-tui", "--interval", "0.5") as first, \
            Monitor(env, "attach", "--run", "live", "--no-tui", "--interval", "0.5") as second:
        assert "is the launcher" in first.read_until(lambda line: line.startswith("attached"))
        _, a = first.status()
        _, b = second.status()
        _, a = first.status(after_step=a)
        _, b = second.status(after_step=b)
        sockets = {p.name.split("-")[0] for p in run.monitors_dir.glob("*.sock")}
        assert {str(first.proc.pid), str(second.proc.pid)} <= sockets
        assert first.interrupt()[0] == 0
        _, b_later = second.status(after_step=max(a, b))
        assert b_later > max(a, b)
        sockets = {p.name.split("-")[0] for p in run.monitors_dir.glob("*.sock")}
        assert str(first.proc.pid) not in sockets and str(second.proc.pid) in sockets
        assert second.interrupt()[0] == 0
    assert process_alive(run.read_config().pids["supervisor"])


def test_attach_with_no_pid_picks_the_one_running_run_and_stacks_answer(live):
    env, run, _ = live
    with Monitor(env, "attach", "--no-tui", "--interval", "0.5") as monitor:
        assert monitor.read_until(lambda line: line.startswith("attached")) == (
            f"attached to run live in {run.path}")
        monitor.status()
        assert monitor.interrupt()[0] == 0
    result = subprocess.run([sys.executable, "-m", "scalemon", "attach", str(start_pid(run, 0)),
                             "--stacks"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(("=== pid", "py-spy is not installed")), result.stdout


def test_an_attached_monitor_ends_with_the_run(live):
    env, run, proc = live
    supervisor = run.read_config().pids["supervisor"]
    with Monitor(env, "attach", str(supervisor), "--no-tui", "--interval", "0.5") as monitor:
        monitor.status()
        assert launch.request_stop(run)
        monitor.read_until(lambda line: (m := STATUS.match(line)) is not None
                           and m.group(1) == "stopped", timeout=90)
        assert monitor.proc.wait(timeout=30) == 0
    assert proc.wait(timeout=60) == 0


def test_attach_to_a_plain_process_writing_nanochat_lines(tmp_path):
    env = {**os.environ, "SCALEMON_HOME": str(tmp_path / "home")}
    (tmp_path / "train.py").write_text(PLAIN_SCRIPT)
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        trainer = subprocess.Popen([sys.executable, str(tmp_path / "train.py")], stdout=out,
                                   start_new_session=True)
    try:
        while log.read_bytes().count(b"\n") < 10:
            time.sleep(0.05)
        with Monitor(env, "attach", str(trainer.pid), "--no-tui", "--interval", "0.5") as monitor:
            assert monitor.read_until(lambda line: line.startswith("watching")).startswith(
                f"watching pid {trainer.pid} (")
            assert monitor.read_until(lambda line: "steps from" in line).startswith(
                f"  steps from {log}: ")
            # The command that runs it with the probe injected, from where it runs.
            relaunch = (f"cd {os.getcwd()} && scalemon run --nproc-per-node 1 -- "
                        f"{tmp_path / 'train.py'}")
            assert monitor.read_until(lambda line: "scalemon run" in line).strip() == relaunch
            monitor.read_until(lambda line: line.endswith("step 0: Validation bpb 0.9"))
            line = monitor.read_until(lambda text: STATUS.match(text) is not None)
            assert f"split: needs the step probe: run it as {relaunch}" in line
            assert "20.5k tok/s" in line and "ETA" in line
            assert " mem " in line  # the system view of its process tree
            _, step = monitor.status()
            monitor.status(after_step=step)
            os.killpg(trainer.pid, signal.SIGTERM)
            trainer.wait()
            monitor.read_until(lambda text: f"process {trainer.pid} exited at step" in text)
            assert monitor.read_until(lambda text: STATUS.match(text) is not None).split()[1] \
                == "stopped"
            assert monitor.proc.wait(timeout=15) == 0
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()


def test_attach_to_a_dead_pid_is_a_one_line_error(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    result = subprocess.run([sys.executable, "-m", "scalemon", "attach", str(gone.pid)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"scalemon: error: no process with pid {gone.pid}\n"


def test_following_a_log_that_is_truncated(tmp_path):
    log = tmp_path / "train.log"

    def lines(steps, horizon):
        return "".join(f"step {s:05d}/{horizon:05d} ({s / horizon:.2%}) | loss: 3.0 | "
                       f"dt: 10.00ms | tok/sec: 1,000 | mfu: 0.00 | total time: 0.00m\n"
                       for s in steps)

    log.write_text(lines(range(20), 100))
    env = {**os.environ, "SCALEMON_HOME": str(tmp_path / "home")}
    with Monitor(env, "attach", "--log", str(log), "--no-tui", "--interval", "0.5") as monitor:
        assert monitor.read_until(lambda line: line.startswith("following")) == f"following {log}"
        assert monitor.status()[1] == 20
        log.write_text(lines(range(3), 5))
        monitor.read_until(lambda line: f"log {log} was truncated: reading it again" in line)
        with open(log, "a") as f:
            f.write(lines(range(3, 5), 5))  # the new log reaches its horizon: the run is done
        assert " | done" in monitor.read_until(lambda line: " finished " in line)
        assert monitor.proc.wait(timeout=15) == 0
