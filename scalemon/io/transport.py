"""The transport of records to live monitors: datagrams on AF_UNIX sockets in monitors/.

The probe (and node 0's relay) send with `MonitorSender`: best effort, never blocking, a
missing, full or stale socket costs nothing and counts a drop. Each monitor binds its own
`MonitorSocket` there and takes what arrives in batches. Both sides reach a socket whose path
is too long for an address (108 bytes on Linux) through an open descriptor of its directory.
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
import time
from pathlib import Path

from scalemon.core import layout
from scalemon.core.records import MAX_RECORD_BYTES
from scalemon.io.processes import process_alive

MAX_SOCKET_ADDRESS = 108  # bytes in sockaddr_un.sun_path on Linux, the final NUL included
MONITOR_RESCAN_S = 2.0  # how often a sender looks for new monitors
RECEIVE_BUFFER = 4 << 20


class _Directory:
    """A directory's socket addresses: the path itself, or for one too long for an address,
    the same socket through this process's open descriptor of the directory (Linux)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def address(self, path: str) -> str:
        if len(os.fsencode(path)) < MAX_SOCKET_ADDRESS:
            return path
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{os.path.basename(path)}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MonitorSender:
    """Best-effort, never-blocking datagrams to every monitor socket in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.drops = 0
        self._sock: socket.socket | None = None
        self._targets: list[str] = []
        # Sockets that refused, by path and file identity (inode, ctime): skipped, not
        # retried every rescan, until a new monitor binds a socket at that path.
        self._stale: set[tuple[str, tuple[int, int]]] = set()
        self._identity: dict[str, tuple[int, int]] = {}
        self._next_scan = 0.0
        self._directory = _Directory(directory)  # for socket paths too long for an address

    def send(self, data: bytes) -> None:
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + MONITOR_RESCAN_S
            self._scan()
        for path in self._targets:
            try:
                self._sock.sendto(data, path)  # type: ignore[union-attr]
            except (ConnectionRefusedError, FileNotFoundError):
                self.drops += 1  # monitor gone: forget the socket; its owner cleans it up
                self._stale.add((path, self._identity.get(path, (-1, -1))))
                self._targets = [p for p in self._targets if p != path]
            except OSError:
                self.drops += 1  # full (EAGAIN, ENOBUFS) or anything else: never wait

    def _scan(self) -> None:
        live: dict[str, tuple[int, int]] = {}
        try:
            for entry in os.scandir(self.directory):
                if entry.name.endswith(".sock"):
                    st = entry.stat(follow_symlinks=False)
                    # This user's own entries only: never a symlink to someone else's socket.
                    if not stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
                        live[self._directory.address(entry.path)] = (st.st_ino, st.st_ctime_ns)
        except OSError:
            pass  # no monitors dir (yet), or it vanished mid-scan: try again next time
        self._stale &= set(live.items())  # a replaced or removed socket is stale no more
        self._identity = live
        self._targets = sorted(p for p, ident in live.items() if (p, ident) not in self._stale)
        if self._targets and self._sock is None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            except OSError:
                self._targets = []

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._directory.close()
        self._targets = []


class MonitorSocket:
    """A monitor's own datagram socket in monitors/, 0600 (only this user's ranks may send).
    `open` says why there is none instead of raising: the monitor then reads files only."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock, self.path = sock, path

    @classmethod
    def open(cls, monitors_dir: Path) -> MonitorSocket | str:
        """The socket, or the one-line reason it could not be bound."""
        sweep_dead_sockets(monitors_dir)
        path = monitors_dir / layout.monitor_socket(os.getpid(), secrets.token_hex(3))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        directory = _Directory(monitors_dir)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(directory.address(str(path)))
            os.chmod(path, 0o600)
        except OSError as error:
            sock.close()
            return f"no live socket ({error.strerror}); reading files only"
        finally:
            directory.close()
        sock.setblocking(False)
        return cls(sock, path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def take(self, limit: int) -> list[bytes]:
        """Up to `limit` datagrams waiting now (never blocks)."""
        batch: list[bytes] = []
        while len(batch) < limit:
            try:
                # One byte past the limit: a longer datagram is cut there and fails decoding.
                batch.append(self.sock.recv(MAX_RECORD_BYTES + 1))
            except OSError:  # BlockingIOError: empty for now; anything else: nothing to read
                break
        return batch

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def sweep_dead_sockets(monitors_dir: Path) -> None:
    """Remove the sockets of monitors that were killed (their names start with their pid)."""
    try:
        paths = list(monitors_dir.glob(layout.MONITOR_SOCKET_PATTERN))
    except OSError:
        return
    for path in paths:
        pid = layout.monitor_pid(path.name)
        if pid is not None and not process_alive(pid):
            path.unlink(missing_ok=True)
