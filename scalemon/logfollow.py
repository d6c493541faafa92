"""Following a training log into RunState records, for runs scalemon did not start.

`LogTail` follows a file the way `tail -F` does: complete lines only (a
partial last line waits for its newline), and a file that shrinks (truncated)
or is replaced under its name (rotated) is read again from the top, each with a
note for the view. `LogCollector` has the Collector's interface (`state`,
`poll`, `last_system`, `net_bytes_per_step`, `close`) so the headless view and
the screen work unchanged: every parsed step becomes a rank-0 `StepRecord`
with `dt`, `loss` and `tokens` (tok/sec x dt) but no phases and no sync, after
one synthetic `StartRecord` whose meta says `source: log`; evaluation lines
become events.

Log lines carry no time. A batch of lines read at once ends at the file's
modification time, and each earlier step ends earlier by the `dt` of the steps
after it, so a history read in one go keeps its real pace, and a log nobody
writes to any more shows as stalled.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import psutil

from scalemon.collector import SYSTEM_POLL_S, net_bytes_per_step
from scalemon.core.logparse import EvalLine, LogParser, StepLine
from scalemon.core.records import EndRecord, StartRecord, StepRecord
from scalemon.launch import process_alive
from scalemon.runstate import RunState

MAX_READ = 64 << 20  # bytes per read: a long history arrives over a few polls
MAX_LINE = 1 << 20  # a "line" longer than this is dropped (and counted)


class LogTail:
    """New complete lines of a log file at each `read()`, surviving truncation and rotation."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.mtime: float | None = None  # modification time seen at the last read
        self.truncations = 0
        self.rotations = 0
        self.long_lines = 0
        self._file = None
        self._id: tuple[int, int] | None = None  # (device, inode) of the open file
        self._partial = b""
        self._problem: str | None = None  # the last trouble reported, so it is said once

    def _say_once(self, notes: list[str], text: str) -> None:
        if text != self._problem:
            notes.append(text)
            self._problem = text

    def _open(self, notes: list[str]) -> bool:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open between reads)
        except FileNotFoundError:
            self._say_once(notes, f"log {self.path} does not exist (yet); waiting for it")
            return False
        except OSError as error:
            self._say_once(notes, f"cannot read log {self.path}: {error.strerror or error}")
            return False
        st = os.fstat(self._file.fileno())
        self._id = (st.st_dev, st.st_ino)
        self._problem = None
        return True

    def _read_new(self, notes: list[str]) -> bytes:
        st = os.fstat(self._file.fileno())
        self.mtime = st.st_mtime
        if st.st_size < self._file.tell():
            self.truncations += 1
            notes.append(f"log {self.path} was truncated: reading it again from the top")
            self._file.seek(0)
            self._partial = b""
        return self._file.read(MAX_READ)

    def read(self) -> tuple[list[str], list[str]]:
        """(new complete lines, notes about the file: truncated, rotated, missing ...)."""
        notes: list[str] = []
        if self._file is None and not self._open(notes):
            return [], notes
        data = self._read_new(notes)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._say_once(notes, f"log {self.path} was moved or deleted; waiting for a new one")
            st = None
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) != self._id:
            # Rotated: the old file is finished (its last line too); the new one starts fresh.
            lines = self._split(data + self._file.read(MAX_READ) + b"\n")
            self._file.close()
            self._file = None
            if self._open(notes):
                self.rotations += 1
                notes.append(f"log {self.path} was rotated (a new file took its name): "
                              "following the new one")
                lines += self._split(self._read_new(notes))
            return lines, notes
        return self._split(data), notes

    def _split(self, data: bytes) -> list[str]:
        """Complete, non-blank lines; a carriage return (progress bars) also ends a line."""
        text = (self._partial + data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pieces = text.split(b"\n")
        self._partial = pieces.pop()
        if len(self._partial) > MAX_LINE:
            self.long_lines += 1
            self._partial = b""
        return [p.decode("utf-8", errors="replace") for p in pieces if p.strip()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def python_processes(root: int) -> list[int]:
    """The Python processes of the tree under `root` (ranks, and a Python launcher)."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for proc in procs:
        try:
            if "python" in proc.name().lower():
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


def end_record(state: RunState, parser: LogParser, t: float, why: str) -> EndRecord:
    """How a log-only run ended, from what the log shows: a traceback, the horizon, or neither."""
    step = state.step
    if parser.traceback:
        reason, message = "error", f"{why}; the log ends with a Python traceback"
    elif step < 0:
        reason, message = "stopped", f"{why}; no steps were read"
    elif state.horizon and step + 1 < state.horizon:
        reason, message = "stopped", f"{why} at step {step + 1:,} of {state.horizon:,}"
    else:
        reason, message = "finished", why
    return EndRecord(rank=0, t=t, reason=reason, step=max(step, 0), message=message)


class LogCollector:
    """A Collector for a run known only by its log and (optionally) its process.

    `pid` is the process to watch: when it exits the run ends (see `end_record`).
    Without a pid the run ends when the log reaches its horizon. `root` is the
    top of the process tree the system view follows (a launcher); `steps`
    overrides the log's `/N` horizon; `vocab` gives the ln(vocab) baseline.
    """

    history_pending = False  # a log is folded whole before the first screen

    def __init__(self, log: Path | None, *, pid: int | None = None, root: int | None = None,
                 name: str | None = None, steps: int | None = None, vocab: int | None = None,
                 world: int | None = None, system: bool = True,
                 master_addr: str | None = None) -> None:
        self.log = Path(log) if log else None
        self.pid = pid
        self.root = root or pid
        self.steps, self.vocab, self.world = steps, vocab, world
        config = {"name": name or (self.log.name if self.log else f"pid {pid}"),
                  "model": {"vocab": vocab}, "train": {"steps": steps},
                  "launch": {"world_size": world}}
        self.state = RunState(config)
        self.state.meta["source"] = "log"
        self.parser = LogParser()
        self.tail = LogTail(self.log) if self.log else None
        self.evals: list[EvalLine] = []
        self.ended = False
        self._host = socket.gethostname()
        self._started = False
        self._clock = -float("inf")  # time given to the last step line
        self._last_step: int | None = None
        self._polled = False
        self.system = None
        self.last_system = None
        self._last_system_poll = -float("inf")
        if system:
            from scalemon.probes.system import SystemProbe

            self.system = SystemProbe(root_pids=[self.root] if self.root else [],
                                      master_addr=master_addr)
        self.read_log()

    # --- the log ---------------------------------------------------------------------

    def read_log(self) -> int:
        """Fold the log's new lines in; returns how many new steps were folded."""
        if self.tail is None:
            return 0
        restarts = self.tail.truncations + self.tail.rotations
        lines, notes = self.tail.read()
        now = time.time()
        for text in notes:
            self.state.note(now, "warn", text)
        if self.tail.truncations + self.tail.rotations != restarts:
            # A new log: perhaps a new run, from its own first step and with its own /N.
            self._started, self._last_step = False, None
            self.state.horizon = self.steps
        end_t = min(self.tail.mtime or now, now)
        return self._fold([self.parser.feed(line) for line in lines], end_t)

    def catch_up(self) -> None:
        """Fold everything written so far (the run has ended)."""
        self.read_log()

    def _fold(self, parsed: list, end_t: float) -> int:
        steps = [p for p in parsed if isinstance(p, StepLine)]
        times = iter(self._times(steps, end_t))
        count = 0
        last_t = self._clock if self._clock > -float("inf") else end_t
        for item in parsed:
            if isinstance(item, StepLine):
                last_t = next(times)
                count += self._apply_step(item, last_t)
            elif isinstance(item, EvalLine):
                self.evals.append(item)
                self.state.note(last_t, "info", item.text())
        return count

    def _times(self, steps: list[StepLine], end_t: float) -> list[float]:
        """When each step of a batch ended: the last at end_t, each earlier one by its
        successors' dt sooner, never before the previous batch's last step."""
        times, t = [], end_t
        for i in range(len(steps) - 1, -1, -1):
            times.append(t)
            before = steps[i - 1].step if i else self._last_step
            gap = steps[i].step - before if before is not None and steps[i].step > before else 1
            t -= steps[i].dt * gap
        times.reverse()
        floor = self._clock
        for i, value in enumerate(times):
            floor = times[i] = max(value, floor + 1e-6)
        return times

    def _apply_step(self, line: StepLine, t: float) -> int:
        if not self._started:
            self._started = True
            meta = {"source": "log", "form": line.form, "start_step": line.step,
                    "steps": self.steps or line.horizon, "vocab": self.vocab,
                    "log": str(self.log)}
            self.state.apply(StartRecord(rank=0, t=t - line.dt, pid=self.pid or 0,
                                         host=self._host, world=self.world or 1, local_rank=0,
                                         meta=meta))
            self.state.world = self.world  # a record needs a world size; a log rarely says it
        self._clock, self._last_step = t, line.step
        tokens = round(line.tok_s * line.dt) if line.tok_s and line.tok_s > 0 else 0
        return self.state.apply(StepRecord(rank=0, t=t, step=line.step, dt=line.dt,
                                           tokens=tokens, loss=line.loss))

    # --- the Collector interface ------------------------------------------------------

    def end(self, why: str) -> None:
        """The run is over (its process exited, or the log reached its horizon)."""
        if not self.ended:
            self.ended = True
            self.state.apply(end_record(self.state, self.parser, time.time(), why))

    def poll(self, timeout: float) -> int:
        """Wait `timeout` (not the first time), then read the log, check the process and
        sample the system."""
        if self._polled:
            time.sleep(timeout)
        self._polled = True
        count = self.read_log()
        horizon = self.state.horizon
        if self.pid is not None and not self.ended and not process_alive(self.pid):
            count += self.read_log()
            self.end(f"process {self.pid} exited")
        elif self.pid is None and horizon and self.state.step + 1 >= horizon:
            self.end("the log reached its horizon")
        if self.system is not None and time.monotonic() - self._last_system_poll >= SYSTEM_POLL_S:
            self.last_system = self.system.sample()
            self._last_system_poll = time.monotonic()
        self.state.tick(time.time())
        return count

    def net_bytes_per_step(self) -> float | None:
        return net_bytes_per_step(self.system, self.state)

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()
        if self.system is not None:
            self.system.close()
            self.system = None

    def __enter__(self) -> LogCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
