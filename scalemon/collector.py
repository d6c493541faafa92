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
import time

from scalemon import records
from scalemon.rundir import RecordTail, RunDir
from scalemon.runstate import RunState

FILE_POLL_S = 1.0  # the files catch whatever the socket missed
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes on Linux


class Collector:
    def __init__(self, run: RunDir, live: bool = True) -> None:
        self.run = run
        self.config = run.read_config()
        self.state = RunState(self.config)
        self.tails: dict[str, RecordTail] = {}
        self.bad_datagrams = 0
        self.sock: socket.socket | None = None
        self.sock_path = None
        self.socket_problem: str | None = None
        self._last_file_poll = -float("inf")
        if live:
            self._bind()
        self.read_files()

    def _bind(self) -> None:
        path = self.run.monitors_dir / f"{os.getpid()}-{secrets.token_hex(3)}.sock"
        if len(str(path)) > MAX_SOCKET_PATH:
            self.socket_problem = "run dir path too long for a socket; reading files only"
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(str(path))
            os.chmod(path, 0o600)  # only this user's ranks may send records
        except OSError as error:
            sock.close()
            self.socket_problem = f"no live socket ({error.strerror}); reading files only"
            return
        sock.setblocking(False)
        self.sock, self.sock_path = sock, path

    @property
    def bad_file_lines(self) -> int:
        return sum(tail.bad for tail in self.tails.values())

    def read_files(self) -> int:
        count = 0
        for path in self.run.rank_files():
            tail = self.tails.setdefault(str(path), RecordTail(path))
            for record in tail.read():
                count += self.state.apply(record)
        self.state.apply_status(self.run.read_status())
        self._last_file_poll = time.monotonic()
        return count

    def read_socket(self) -> int:
        count = 0
        while self.sock is not None:
            try:
                data = self.sock.recv(records.MAX_RECORD_BYTES + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            try:
                count += self.state.apply(records.decode(data))
            except records.RecordError:
                self.bad_datagrams += 1
        return count

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for records; returns how many new ones were folded in."""
        count = 0
        if self.sock is not None:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                count += self.read_socket()
        else:
            time.sleep(timeout)
        if time.monotonic() - self._last_file_poll >= FILE_POLL_S:
            count += self.read_files()
        self.state.tick(time.time())
        return count

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.sock_path is not None:
            self.sock_path.unlink(missing_ok=True)
            self.sock_path = None

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
