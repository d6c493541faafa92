"""The collector: a run's history from its run dir, then live records from the socket.

The files are the truth (durable, complete); datagrams only make the screen
quick. Both feed one RunState, which drops the duplicates. Bad input from
either is counted, never fatal.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import statistics
import sys
import time

import psutil

from scalemon import relay
from scalemon.activity import activity_path, read_activity
from scalemon.core import codec, records
from scalemon.history import Backfill
from scalemon.launch import process_alive
from scalemon.probes.step import MAX_SOCKET_ADDRESS
from scalemon.rundir import RecordTail, RunDir
from scalemon.runstate import ENDED_STATES, RunState

FILE_POLL_S = 1.0  # the files catch whatever the socket missed
FILE_READ_BYTES = 64 << 20  # of each rank file per poll: a poll stays short
SYSTEM_POLL_S = 1.0  # host, network and GPU probes
BACKFILL_MIN_S = 0.02  # history folded in a poll that waits for nothing (poll(0))
BAD_INPUT_NOTE_S = 5.0  # at most one "ignored N malformed ..." event this often
SOCKET_READ_S = 0.05  # longest one poll keeps reading a socket that keeps filling
SOCKET_BATCH = 256  # datagrams taken off the socket before any is decoded


def net_bytes_per_step(system, state: RunState) -> float | None:
    """Median bytes this machine sent on the run interface during recent steps of rank 0."""
    if system is None or state.loss_rank is None:
        return None
    moved = []
    for record in state.recent.get(state.loss_rank, ()):
        _, sent = system.bytes_between(record.t - record.dt, record.t, wall=True)
        if sent == sent:  # NA is NaN: steps the samples do not cover yet
            moved.append(sent)
    return statistics.median(moved) if moved else None


class Collector:
    def __init__(self, run: RunDir, live: bool = True, system: bool = False) -> None:
        self.run = run
        self.config = run.read_config()
        self.state = RunState(self.config)
        self.system = None  # SystemProbe, when this machine's processes are to be watched
        self.last_system = None  # the latest SystemSnapshot
        self._last_system_poll = -float("inf")
        self._known_pids: dict[int, int] = {}
        self._rank_processes: dict[int, psutil.Process] = {}
        self.tails: dict[str, RecordTail] = {}
        self.bad_datagrams = 0
        self.live = live  # a live view reports bad input as events (replay prints a count)
        self._bad_reported = (0, 0)  # (datagrams, file lines) the events have told of
        self._bad_reported_at = -float("inf")
        self.sock: socket.socket | None = None
        self.sock_path = None
        self.socket_problem: str | None = None
        self._last_file_poll = -float("inf")
        if live:
            self._bind()
        self._open_history(tail_first=live)
        if system:
            self._start_system_probe()

    def _start_system_probe(self) -> None:
        from scalemon.probes.system import SystemProbe

        launch = self.config.get("launch", {})
        # One machine talks over loopback; several over the interface toward the master.
        master = launch.get("master_addr") if launch.get("nnodes", 1) > 1 else "127.0.0.1"
        self.system = SystemProbe(
            root_pids=[pid for pid in self.config.get("pids", {}).values() if pid],
            master_addr=master,
        )

    def poll_system(self) -> None:
        """Sample the host, network and GPUs of this run's processes (pids from records)."""
        # Other nodes' pids name processes on their machines, not on this one.
        pids = {info.pid: rank for rank, info in self.state.ranks.items()
                if info.pid and info.node == self.state.node_rank}
        if pids != self._known_pids:
            self._known_pids = pids
            self.system.set_rank_map(pids)
            roots = [pid for pid in self.config.get("pids", {}).values() if pid]
            self.system.set_roots(roots + list(pids))
        self.last_system = self.system.sample()
        self._last_system_poll = time.monotonic()
        nic = self.last_system.net.run
        self.state.observe_network(self.net_bytes_per_step(),
                                   nic.speed_mbps * 1e6 if nic is not None else None)

    def watch_ranks(self) -> None:
        """Where each rank of this machine is (its activity file), and whether it still lives:
        a rank killed outright writes no end record, and its peers hang in the next sync."""
        here = socket.gethostname()
        vanished = []
        for rank, info in list(self.state.ranks.items()):
            if info.host != here:
                continue  # another machine's pid, and its activity file is over there
            self.state.observe_activity(rank, read_activity(activity_path(self.run.path, rank)))
            if info.pid and info.ended is None and not info.gone:
                status = self._rank_status(info.pid, info.started)
                if status is None:
                    vanished.append(rank)
                else:
                    self.state.observe_process(rank, status, time.time())
        if vanished:
            self.read_files()  # a rank that ended well wrote its end record before it exited
            for rank in vanished:
                self.state.observe_process(rank, None, time.time())

    def _rank_status(self, pid: int, started: float | None) -> str | None:
        """psutil's status of a rank's process ("running", "stopped" ...); None once gone."""
        process = self._rank_processes.get(pid)
        try:
            if process is None:
                process = psutil.Process(pid)
                # A pid the kernel handed out again after the rank died is not the rank.
                if started is not None and process.create_time() > started + 1:
                    return None
                self._rank_processes[pid] = process
            if not process.is_running():
                return None
            status = process.status()
            return None if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else status
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:
            return "unknown"  # not ours to inspect: no sign it is gone

    def net_bytes_per_step(self) -> float | None:
        return net_bytes_per_step(self.system, self.state)

    def _sweep_dead_sockets(self) -> None:
        """Remove the sockets of monitors that were killed (named PID-xxxxxx.sock)."""
        for path in self.run.monitors_dir.glob("*-*.sock"):
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                path.unlink(missing_ok=True)

    def _bind(self) -> None:
        self._sweep_dead_sockets()
        path = self.run.monitors_dir / f"{os.getpid()}-{secrets.token_hex(3)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dir_fd = None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            address = str(path)
            if len(os.fsencode(address)) >= MAX_SOCKET_ADDRESS:
                # Too long for an address: bind through an open descriptor of the directory.
                dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                address = f"/proc/self/fd/{dir_fd}/{path.name}"
            sock.bind(address)
            os.chmod(path, 0o600)  # only this user's ranks may send records
        except OSError as error:
            sock.close()
            self.socket_problem = f"no live socket ({error.strerror}); reading files only"
            return
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        sock.setblocking(False)
        self.sock, self.sock_path = sock, path

    @property
    def bad_file_lines(self) -> int:
        return self._history_bad + sum(tail.bad for tail in self.tails.values())

    def _open_history(self, tail_first: bool) -> None:
        """Fold the run dir's history. A long one is folded from each rank file's tail first,
        for an immediate first screen; the rest follows in the polls (scalemon.history)."""
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

    def _apply(self, record: records.Record) -> int:
        if self._backfill is not None:
            self._backfill.add(record)
        return self.state.apply(record)

    def read_files(self, max_bytes: int | None = None) -> int:
        """Fold what the rank files gained, up to `max_bytes` of each (FILE_READ_BYTES)."""
        count = 0
        for path in self.run.rank_files():
            tail = self.tails.setdefault(str(path), RecordTail(path))
            for record in tail.read(max_bytes or FILE_READ_BYTES):
                count += self._apply(record)
        if self.state.nnodes > 1:
            self.state.apply_relay(relay.read_status(self.run))
        self.state.apply_status(self.run.read_status())
        self._last_file_poll = time.monotonic()
        self._report_bad_input()
        return count

    def read_socket(self) -> int:
        """Fold what the socket holds, and what arrives meanwhile, for up to SOCKET_READ_S.

        Linux queues only net.unix.max_dgram_qlen datagrams (often 10) per socket, so the
        queue is emptied first and decoded after: the senders refill it during the decoding
        instead of finding it full.
        """
        count = 0
        deadline = time.monotonic() + SOCKET_READ_S
        while True:
            batch = self._take_datagrams()
            for data in batch:
                try:
                    count += self._apply(codec.decode(data))
                except codec.RecordError:
                    self.bad_datagrams += 1
            if not batch or time.monotonic() >= deadline:
                break
        self._report_bad_input()
        return count

    def _take_datagrams(self) -> list[bytes]:
        batch: list[bytes] = []
        while self.sock is not None and len(batch) < SOCKET_BATCH:
            try:
                # One byte past the limit: a longer datagram is cut there and fails decoding.
                batch.append(self.sock.recv(records.MAX_RECORD_BYTES + 1))
            except OSError:  # BlockingIOError: empty for now; anything else: nothing to read
                break
        return batch

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
            self.state.note(time.time(), "warn", "ignored " + " and ".join(parts))
            self._bad_reported, self._bad_reported_at = counts, now

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for records; returns how many new ones were folded in."""
        count = 0
        if self._backfill is not None:  # the wait goes to folding history
            deadline = time.monotonic() + max(timeout, BACKFILL_MIN_S)
            self._continue_history(deadline)
            timeout = max(0.0, deadline - time.monotonic())
        if self.sock is not None:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                count += self.read_socket()
        else:
            time.sleep(timeout)
        if time.monotonic() - self._last_file_poll >= FILE_POLL_S:
            count += self.read_files()
        self.watch_ranks()  # every poll: a killed rank is named before its peers' errors end it
        if self.system is not None and time.monotonic() - self._last_system_poll >= SYSTEM_POLL_S:
            self.poll_system()
        self.state.tick(time.time())
        if self._backfill is not None and self.state.state() in ENDED_STATES:
            self.finish_history()  # the run's last word comes with its whole history
        return count

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.sock_path is not None:
            self.sock_path.unlink(missing_ok=True)
            self.sock_path = None
        if self.system is not None:
            self.system.close()
            self.system = None

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
