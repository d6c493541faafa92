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
import time

from scalemon import records, relay
from scalemon.rundir import RecordTail, RunDir
from scalemon.runstate import RunState

FILE_POLL_S = 1.0  # the files catch whatever the socket missed
SYSTEM_POLL_S = 1.0  # host, network and GPU probes
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes on Linux


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
        self.tails: dict[str, RecordTail] = {}
        self.bad_datagrams = 0
        self.sock: socket.socket | None = None
        self.sock_path = None
        self.socket_problem: str | None = None
        self._last_file_poll = -float("inf")
        if live:
            self._bind()
        self.read_files()
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

    def net_bytes_per_step(self) -> float | None:
        return net_bytes_per_step(self.system, self.state)

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
        if self.state.nnodes > 1:
            self.state.apply_relay(relay.read_status(self.run))
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
        if self.system is not None and time.monotonic() - self._last_system_poll >= SYSTEM_POLL_S:
            self.poll_system()
        self.state.tick(time.time())
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
