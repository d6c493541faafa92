"""Helpers for tests that start real runs: the tiny two-rank config, its files, its processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from scalemon.core import codec, records
from scalemon.core.layout import RUN_DIR_ENV
from scalemon.io.rundir import RunDir

TINY = ["--depth", "1", "--vocab", "256", "--seq-len", "64", "--device-batch", "4",
        "--tokens-per-step", "1024", "--backend", "gloo", "--threads-per-rank", "1",
        "--checkpoint-every", "10", "--no-tui", "--interval", "2"]


def scalemon(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalemon", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def rank_records(run_path: Path, rank: int) -> list:
    lines = (run_path / "ranks" / f"rank-{rank}.jsonl").read_bytes().splitlines()
    return [codec.decode(line) for line in lines]


def recorded_steps(run_path: Path, rank: int) -> list[int]:
    return [r.step for r in rank_records(run_path, rank) if isinstance(r, records.StepRecord)]


def steps_in_file(run_path: Path, rank: int = 0) -> int:
    path = run_path / "ranks" / f"rank-{rank}.jsonl"
    return path.read_bytes().count(b'"kind":"step"') if path.exists() else 0


def wait_until(predicate, timeout: float, what: str, output: Output | None = None):
    """Poll until `predicate()` is true and return its value; on time-out, show `output`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    shown = f"; the monitor said:\n{output.text()}" if output is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{shown}")


def rank_pid(run_path: Path, rank: int) -> int:
    return rank_records(run_path, rank)[0].pid


def processes_of(run_path: Path) -> list[psutil.Process]:
    """Every live process of the run: its supervisor, launcher and ranks (found by the run
    dir in their environment, so ranks in sessions of their own are found too)."""
    run = RunDir(run_path)
    pids = set(run.read_config().pids.values())
    found = []
    for process in psutil.process_iter():
        try:
            ours = process.pid in pids or \
                Path(process.environ().get(RUN_DIR_ENV, "/")).resolve() == run_path.resolve()
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


class Output:
    """A child's stdout and stderr lines, each with the monotonic time it arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def since(self, t: float) -> list[str]:
        with self._lock:
            return [line for when, line in self.lines if when >= t]

    def text(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)


def start_run(*args: str) -> tuple[subprocess.Popen, Output]:
    """`scalemon run` in the background (headless), its output collected as it comes."""
    proc = subprocess.Popen([sys.executable, "-m", "scalemon", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    return proc, Output(proc)


def run_dir(home: Path, name: str) -> RunDir:
    return RunDir(home / "runs" / name)
