"""A scalemon run as a source: its history from the run dir, then live records from the socket.

The files are the truth (durable, complete); datagrams only make the screen quick. Both feed
one RunState, which drops the duplicates. Bad input from either is counted, never fatal.
Besides records, each poll observes where the ranks on this machine are (their activity
files) and whether their processes live, the supervisor's end status, and the relay's state.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterable

from scalemon.core import codec
from scalemon.core.config import RunStatus
from scalemon.core.errors import RunDirError
from scalemon.core.launcherlog import rank_error_lines
from scalemon.core.logparse import EvalLine, LogParser, StepLine
from scalemon.core.records import Record
from scalemon.io.activity import read_activity
from scalemon.io.logtail import LogTail
from scalemon.io.processes import RankWatch, process_alive
from scalemon.io.rundir import RunDir
from scalemon.io.tail import RecordTail, read_tail
from scalemon.io.transport import MonitorSocket
from scalemon.sources.base import FoldedSource
from scalemon.sources.history import Backfill
from scalemon.sources.system import SystemWatch
from scalemon.state.events import Level
from scalemon.state.fold import RunState
from scalemon.state.observations import (
    ActivitySeen,
    Note,
    ProcessSeen,
    RelaySeen,
    ScriptPrinted,
    StatusSeen,
    StderrSeen,
    Tick,
)

FILE_POLL_S = 1.0  # the files catch whatever the socket missed
FILE_READ_BYTES = 64 << 20  # of each rank file per poll: a poll stays short
BACKFILL_MIN_S = 0.02  # history folded in a poll that waits for nothing (poll(0))
BAD_INPUT_NOTE_S = 5.0  # at most one "ignored N malformed ..." event this often
SOCKET_READ_S = 0.05  # longest one poll keeps reading a socket that keeps filling
SOCKET_BATCH = 256  # datagrams taken off the socket before any is decoded
STDERR_LINES = 8  # of a failed trainer's stderr, for the views


class RunDirSource(FoldedSource):
    """`live`: bind a socket and read the history tail first (a monitor); else fold the
    whole run dir at once (replay). `system`: poll this machine's probes for the run."""

    def __init__(self, run: RunDir, live: bool = True, system: bool = False) -> None:
        self.run = run
        self.config = run.read_config()
        watch = None
        if system:
            launch = self.config.launch
            # One machine talks over loopback; several over the interface toward the master.
            master = launch.master_addr if launch.nnodes > 1 else "127.0.0.1"
            watch = SystemWatch(self._roots(), master)
        super().__init__(RunState(self.config), watch)
        self.tails: dict[str, RecordTail] = {}
        self.bad_datagrams = 0
        self.live = live  # a live view reports bad input as events (replay prints a count)
        self._bad_reported = (0, 0)  # (datagrams, file lines) the events have told of
        self._bad_reported_at = -float("inf")
        self._ranks = RankWatch()
        self._host = socket.gethostname()
        self.socket: MonitorSocket | None = None
        self.socket_problem: str | None = None
        self._last_file_poll = -float("inf")
        # A script's own step and evaluation lines (nanochat's), beside the probe's records.
        self.printed = LogTail(run.stdout_log) if self.config.command == "script" else None
        self.printed_lines = LogParser()
        if live:
            opened = MonitorSocket.open(run.monitors_dir)
            if isinstance(opened, str):
                self.socket_problem = opened
            else:
                self.socket = opened
        self._open_history(tail_first=live)

    def _roots(self) -> list[int]:
        return [pid for pid in self.config.pids.values() if pid]

    @property
    def bad_file_lines(self) -> int:
        return self._history_bad + sum(tail.bad for tail in self.tails.values())

    # --- history ------------------------------------------------------------------------

    def _open_history(self, tail_first: bool) -> None:
        """Fold the run dir's history. A long one is folded from each rank file's tail first,
        for an immediate first screen; the rest follows in the polls (sources.history)."""
        self._history_bad = 0  # bad lines read before the files' live tails
        self._backfill: Backfill | None = None
        paths = self.run.rank_files()
        backfill = Backfill.start(self.state, self.config, paths) if tail_first else None
        if backfill is not None:
            self._backfill, self._history_bad = backfill, backfill.tail_bad
            self.tails = {str(path): RecordTail(path, end) for path, end in backfill.ends.items()}
        self.read_files(max_bytes=sys.maxsize)  # all of it: replay has no polls to read the rest

    @property
    def history_pending(self) -> bool:
        """The state shown holds only the recent history; the rest is being folded."""
        return self._backfill is not None

    def finish_history(self) -> None:
        """Fold the rest of a long history now (a poll does it a slice at a time)."""
        while self._backfill is not None:
            self._continue_history(float("inf"))

    def _continue_history(self, deadline: float) -> None:
        backfill = self._backfill
        assert backfill is not None
        done = backfill.step(deadline)
        if backfill.replaced or any(tail.truncations for tail in self.tails.values()):
            self._backfill = None  # a file was replaced: the live tails read it anew
        elif done:
            self.state = backfill.finish(self.state)
            self._history_bad = backfill.bad
            self._backfill = None

    def catch_up(self) -> None:
        """Fold everything the run dir holds now: the whole history and the files' last
        records, which the socket may not have brought (the run has ended)."""
        self.finish_history()
        while self.read_files():
            pass

    # --- records ------------------------------------------------------------------------

    def _apply(self, records: Iterable[Record]) -> int:
        """Fold records in (the history being folded behind gets them too); how many new."""
        if self._backfill is not None:
            records = list(records)
            self._backfill.add(records)
        return self.state.apply_all(records)

    def read_files(self, max_bytes: int | None = None) -> int:
        """Fold what the rank files gained, up to `max_bytes` of each (FILE_READ_BYTES), and
        the run dir's status and relay files."""
        count = 0
        for path in self.run.rank_files():
            tail = self.tails.setdefault(str(path), RecordTail(path))
            count += self._apply(tail.read(max_bytes or FILE_READ_BYTES))
        if self.config.launch.nnodes > 1:
            self.state.apply(RelaySeen(self.run.read_relay_status()))
        self._read_printed()
        status = self.run.read_status()
        if status is not None:
            self._observe_status(status)
        self._last_file_poll = time.monotonic()
        self._report_bad_input()
        return count

    def _read_printed(self) -> None:
        if self.printed is None:
            return
        lines, _ = self.printed.read()
        now = min(self.printed.mtime or time.time(), time.time())  # a replay's are old lines
        for line in lines:
            parsed = self.printed_lines.feed(line)
            if isinstance(parsed, StepLine | EvalLine):
                self.state.apply(ScriptPrinted(parsed, now))

    def _observe_status(self, status: RunStatus, level: Level | None = None,
                        text: str | None = None) -> None:
        if status == self.state.status:
            return
        self.state.apply(StatusSeen(status, level, text))
        if status.exit_code != 0:  # a failed trainer: its own last words, for the views
            lines = rank_error_lines(read_tail(self.run.stderr_log), STDERR_LINES)
            self.state.apply(StderrSeen(tuple(lines)))

    def read_socket(self) -> int:
        """Fold what the socket holds, and what arrives meanwhile, for up to SOCKET_READ_S.

        Linux queues only net.unix.max_dgram_qlen datagrams (often 10) per socket, so the
        queue is emptied first and decoded after: the senders refill it during the decoding
        instead of finding it full.
        """
        count = 0
        deadline = time.monotonic() + SOCKET_READ_S
        while self.socket is not None:
            batch = self.socket.take(SOCKET_BATCH)
            records, bad = codec.decode_many(batch, blank_is_bad=True)
            self.bad_datagrams += bad
            count += self._apply(records)
            if not batch or time.monotonic() >= deadline:
                break
        self._report_bad_input()
        return count

    def _report_bad_input(self) -> None:
        """An event when malformed datagrams or unreadable rank-file lines were ignored since
        the last one: at most one per BAD_INPUT_NOTE_S, so a flood is one line, not thousands."""
        now = time.monotonic()
        if not self.live or now - self._bad_reported_at < BAD_INPUT_NOTE_S:
            return
        counts = (self.bad_datagrams, self.bad_file_lines)
        datagrams, lines = counts[0] - self._bad_reported[0], counts[1] - self._bad_reported[1]
        parts = []
        if datagrams > 0:
            parts.append(f"{datagrams:,} malformed datagram{'s' * (datagrams != 1)} on the "
                         "monitor socket")
        if lines > 0:
            parts.append(f"{lines:,} unreadable line{'s' * (lines != 1)} in "
                         f"{self.run.ranks_dir}")
        if parts:
            self.state.apply(Note(time.time(), Level.WARN, "ignored " + " and ".join(parts)))
            self._bad_reported, self._bad_reported_at = counts, now

    # --- the ranks' processes -----------------------------------------------------------

    def watch_ranks(self) -> None:
        """Where each rank of this machine is (its activity file), and whether it still lives:
        a rank killed outright writes no end record, and its peers hang in the next sync."""
        vanished = []
        for rank, info in list(self.state.ranks.items()):
            if info.host != self._host:
                continue  # another machine's pid, and its activity file is over there
            activity = read_activity(self.run.activity_file(rank))
            self.state.apply(ActivitySeen(rank, activity))
            if info.pid and info.ended is None and not info.gone:
                status = self._ranks.status(info.pid, info.started)
                if status is None:
                    vanished.append(rank)
                else:
                    self.state.apply(ProcessSeen(rank, status, time.time()))
        if vanished:
            self.read_files()  # a rank that ended well wrote its end record before it exited
            for rank in vanished:
                self.state.apply(ProcessSeen(rank, None, time.time()))

    # --- the loop -----------------------------------------------------------------------

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for records; returns how many new ones were folded in."""
        count = 0
        if self._backfill is not None:  # the wait goes to folding history
            deadline = time.monotonic() + max(timeout, BACKFILL_MIN_S)
            self._continue_history(deadline)
            timeout = max(0.0, deadline - time.monotonic())
        if self.socket is not None:
            ready, _, _ = select.select([self.socket], [], [], timeout)
            if ready:
                count += self.read_socket()
        else:
            time.sleep(timeout)
        if time.monotonic() - self._last_file_poll >= FILE_POLL_S:
            count += self.read_files()
        self.watch_ranks()  # every poll: a killed rank is named before its peers' errors end it
        self.poll_system(self._roots())
        self.state.apply(Tick(time.time()))
        if self._backfill is not None and self.state.phase.ended:
            self.finish_history()  # the run's last word comes with its whole history
        return count

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.printed is not None:
            self.printed.close()
        super().close()


class RunWatch(RunDirSource):
    """A live source for `scalemon attach` (system view on) that also says when processes of
    the run exit.

    The first poll returns at once (the history is folded already). The pid attached through
    may exit (event "process N exited") while the run goes on. The supervisor exiting without
    writing status.json (killed) ends the run as failed: nothing will ever record how it ended.
    """

    def __init__(self, run: RunDir, pid: int | None = None) -> None:
        super().__init__(run, system=True)
        self.pid = pid
        self._polled = False

    def poll(self, timeout: float) -> int:
        count = super().poll(timeout if self._polled else 0)
        self._polled = True
        now = time.time()
        if self.pid is not None and not process_alive(self.pid):
            self.state.apply(Note(now, Level.INFO, f"process {self.pid} exited"))
            self.pid = None
        if self.state.status is None:
            supervisor = self._supervisor()
            if supervisor and not process_alive(supervisor):
                count += self.read_files()  # it writes the status just before it exits
                if self.state.status is None:
                    why = f"supervisor {supervisor} exited without recording the run's end"
                    self._observe_status(RunStatus(exit_code=None, reason=why, ended=now),
                                         Level.ERROR, f"{why} (killed?)")
        return count

    def _supervisor(self) -> int | None:
        pid = self.config.pids.get("supervisor")
        if pid is None:  # the supervisor records itself a moment after the run is created
            try:
                self.config = self.run.read_config()
            except RunDirError:
                return None
            pid = self.config.pids.get("supervisor")
        return pid
