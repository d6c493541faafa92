"""Node 0's end of the relay (protocol: relay_protocol.py): it takes the other nodes'
records, appends them to its own rank files and passes each on to the live monitors."""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import json
import os
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from scalemon.core import codec
from scalemon.core.config import NodeLinkStatus, RelayServerStatus, RunConfig
from scalemon.core.errors import RecordError
from scalemon.core.records import MAX_RECORD_BYTES
from scalemon.io.rundir import RunDir
from scalemon.io.transport import MonitorSender
from scalemon.run import relay_protocol as protocol
from scalemon.run.relay_protocol import AUTH_TIMEOUT_S, MAX_HELLO, MAX_PEERS, PROTOCOL, SEND_POLL_S


@dataclass
class _Peer:
    sock: socket.socket
    address: str
    nonce: str
    deadline: float  # monotonic: authenticate by then
    node: int | None = None  # set once authenticated
    buffer: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # inside an oversize line: drop up to its newline


@dataclass
class _NodeLink:
    connected: bool = False
    since: float = field(default_factory=time.time)  # when `connected` last changed
    peer: str | None = None
    records: int = 0
    last_record: float | None = None
    done: bool = False  # said bye: its ranks have ended and everything was sent


class RelayServer:
    """Node 0's listener. Single-threaded: `serve` (or `poll`) from one thread."""

    def __init__(self, run: RunDir, config: RunConfig, log: Callable[[str], None] = protocol.log
                 ) -> None:
        launch, relay = config.launch, config.relay
        assert relay is not None and launch.master_addr is not None
        self.run, self.log, self.launch = run, log, launch
        self.key = bytes.fromhex(relay.secret)
        self.nodes = {node: _NodeLink() for node in range(1, launch.nnodes)}
        self.counts = {rank: protocol.count_records(run.rank_file(rank))
                       for node in self.nodes for rank in launch.ranks_of(node)}
        self.refused = 0  # connections that did not authenticate
        self.bad = 0  # lines dropped: not a record, too long, or not a rank of the sender
        self.peers: dict[socket.socket, _Peer] = {}
        self._files: dict[int, int] = {}
        self._monitors = MonitorSender(run.monitors_dir)
        self._status = protocol.StatusWriter(run)
        self.listener = self._listen(launch.master_addr, relay.port)
        self.address = protocol.where(self.listener.getsockname())
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.write_status(urgent=True)

    def _listen(self, master_addr: str, port: int) -> socket.socket:
        """Bind the address the master address resolves to, or all interfaces when that is
        not one the other nodes can reach here: another machine's, or a host name that
        means loopback on this one (Debian's 127.0.1.1)."""
        try:
            infos = socket.getaddrinfo(master_addr, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            infos = []
        for family, _, _, _, address in infos:
            if ipaddress.ip_address(address[0]).is_loopback and not _is_ip(master_addr):
                continue
            try:
                return socket.create_server(address, family=family, backlog=MAX_PEERS)
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:  # not ours; anything else is real
                    raise
        self.log(f"{master_addr} gives no address of this machine that other nodes reach: "
                 "listening on all interfaces")
        return socket.create_server(("", port), backlog=MAX_PEERS)

    def status(self) -> RelayServerStatus:
        return RelayServerStatus(
            listen=self.address, refused=self.refused, bad=self.bad,
            nodes={node: NodeLinkStatus(**asdict(link)) for node, link in self.nodes.items()})

    def write_status(self, urgent: bool = False) -> None:
        self._status.write(self.status(), urgent)

    @property
    def all_done(self) -> bool:
        return all(link.done for link in self.nodes.values())

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll(SEND_POLL_S)
            except Exception as error:  # a bug here must not end the relay for the whole run
                self.log(f"internal error: {type(error).__name__}: {error}")
                stop.wait(SEND_POLL_S)
        self.close()

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj in self.peers:  # not dropped by an earlier event of this round
                self._read(self.peers[key.fileobj])
        now = time.monotonic()
        for peer in [p for p in self.peers.values() if p.node is None and now > p.deadline]:
            self._drop(peer, "did not authenticate in time")
        self.write_status()

    def _accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except OSError:
            return
        where = protocol.where(address)
        if len(self.peers) >= MAX_PEERS:
            self.refused += 1
            sock.close()
            return
        sock.setblocking(False)
        peer = _Peer(sock, where, secrets.token_hex(32), time.monotonic() + AUTH_TIMEOUT_S)
        try:
            sock.send(f"{PROTOCOL} {peer.nonce}\n".encode())
        except OSError:
            sock.close()
            return
        self.peers[sock] = peer
        self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(peer, "connection closed")
            return
        if peer.node is None:
            peer.buffer += data
            line, newline, rest = bytes(peer.buffer).partition(b"\n")
            if not newline:
                if len(peer.buffer) > MAX_HELLO:
                    self._drop(peer, "no hello")
                return
            peer.buffer = bytearray(rest)
            if not self._authenticate(peer, line):
                return
            data, peer.buffer = bytes(peer.buffer), bytearray()
        self._receive(peer, data)

    def _authenticate(self, peer: _Peer, line: bytes) -> bool:
        parts = line.decode(errors="replace").split()
        node = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else -1
        proof = protocol.mac(self.key, "client", peer.nonce, parts[2], node) \
            if node in self.nodes else ""
        if node not in self.nodes or not protocol.HEX64.fullmatch(parts[2]) or \
                not hmac.compare_digest(parts[3].encode(), proof.encode()):
            self._drop(peer, "wrong secret or not a scalemon relay")
            return False
        held = {str(r): self.counts[r] for r in self.launch.ranks_of(node)}
        mac = protocol.mac(self.key, "server", peer.nonce, parts[2], node)
        reply = f"ok {mac} {json.dumps(held)}\n"
        try:
            peer.sock.send(reply.encode())
        except OSError:
            self._drop(peer, "closed during the handshake")
            return False
        for other in [p for p in self.peers.values() if p.node == node and p is not peer]:
            self._drop(other, "replaced by a new connection")
        peer.node = node
        link = self.nodes[node]
        link.connected, link.since, link.peer, link.done = True, time.time(), peer.address, False
        self.log(f"node {node} connected from {peer.address}; it resumes after {held}")
        self.write_status(urgent=True)
        return True

    def _receive(self, peer: _Peer, data: bytes) -> None:
        """Validate the complete lines in `data`, append them to the rank files, forward them."""
        assert peer.node is not None  # only called once the peer has authenticated
        peer.buffer += data
        *lines, rest = bytes(peer.buffer).split(b"\n")
        if peer.discarding and lines:
            lines, peer.discarding = lines[1:], False  # the tail of an oversize line
        if peer.discarding or len(rest) > MAX_RECORD_BYTES:
            if not peer.discarding:
                self.bad += 1
            peer.discarding, rest = True, b""
        peer.buffer = bytearray(rest)
        allowed = self.launch.ranks_of(peer.node)
        batches: dict[int, list[bytes]] = {}
        for line in lines:
            if line == b"bye":
                self.nodes[peer.node].done = True
                continue
            try:
                record = codec.decode(line)
                if record.rank not in allowed:
                    raise RecordError("not a rank of this node")
                batches.setdefault(record.rank, []).append(codec.encode(record))
            except RecordError:
                self.bad += 1
        link = self.nodes[peer.node]
        for rank, encoded in batches.items():
            try:
                self._append(rank, b"".join(encoded))
            except OSError as error:
                # Nothing counted for this batch: the client resends it after reconnecting.
                self._drop(peer, f"cannot write {self.run.rank_file(rank)}: {error.strerror}")
                return
            self.counts[rank] += len(encoded)
            link.records += len(encoded)
            link.last_record = time.time()
            for line in encoded:
                self._monitors.send(line)
        if link.done:
            self._drop(peer, "finished")

    def _append(self, rank: int, data: bytes) -> None:
        fd = self._files.get(rank)
        if fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = self._files[rank] = os.open(self.run.rank_file(rank), flags, 0o600)
        _write_all(fd, data)

    def _drop(self, peer: _Peer, why: str) -> None:
        """Close a connection; one that never authenticated counts as refused."""
        self.selector.unregister(peer.sock)
        peer.sock.close()
        del self.peers[peer.sock]
        if peer.node is None:
            self.refused += 1
            if self.refused <= 10 or self.refused % 1000 == 0:  # a flood must not fill the log
                self.log(f"refused {peer.address} ({self.refused} so far): {why}")
            return
        link = self.nodes[peer.node]
        if link.peer == peer.address:  # not replaced by a newer connection
            link.connected, link.since = False, time.time()
        self.log(f"node {peer.node} ({peer.address}) disconnected: {why}")
        self.write_status(urgent=True)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self._drop(peer, "node 0's relay is closing")
        self.selector.close()
        self.listener.close()
        for fd in self._files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()
        self._monitors.close()
        self.write_status(urgent=True)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
