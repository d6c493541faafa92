"""The relay: carries the records of other nodes' ranks to node 0 of a multi-node run.

Every node keeps its own ranks' records in its own run dir (durable, complete).
On node 0 the supervisor runs a `RelayServer`; on every other node a
`RelayClient` tails the local rank files and sends each record over TCP. Node 0
appends what arrives to its own `ranks/rank-N.jsonl`, so any monitor there
(live, `attach` or `replay` later) sees every rank from the run dir alone, and
passes each record on to live monitors as a datagram, as the probe does.

Protocol, one newline-terminated line each:

    server: scalemon-relay/1 <server nonce>
    client: hello <node rank> <client nonce> <HMAC(secret, client, both nonces, node)>
    server: ok <HMAC(secret, server, both nonces, node)> <JSON {rank: records held}>
    client: record lines, for each rank from the first record node 0 lacks; `bye` when done

Both sides prove they hold the run's secret without sending it; a peer that
cannot gets nothing in and nothing out. Resuming from node 0's counts makes a
reconnect lose nothing and repeat nothing. Everything that arrives is data:
each line is validated by `codec.decode` and must be a rank of the sending
node, else it is counted and dropped. Authentication, not encryption: records
cross the LAN in the clear.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import json
import os
import re
import secrets
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scalemon.core import codec, records
from scalemon.probes.step import _MonitorSender  # the probe's never-blocking datagram sender
from scalemon.rundir import RecordTail, RunDir, RunDirError, write_json_atomic

SECRET_ENV = "SCALEMON_RUN_SECRET"
PROTOCOL = "scalemon-relay/1"
STATUS_FILE = "relay.json"  # in the run dir: the relay's state, for the monitors
AUTH_TIMEOUT_S = 5.0  # a peer that has not proved the secret by then is dropped
MAX_PEERS = 16  # connections at once, authenticated or not
MAX_HELLO = 512
SEND_POLL_S = 0.2  # how often a client looks for new records
SEND_TIMEOUT_S = 30.0  # a send stuck this long means the path is down: reconnect
BACKOFF_S = (0.5, 10.0)  # first and longest wait between reconnects
STATUS_EVERY_S = 2.0
LINGER_S = 20.0  # after the launcher exits: time for the last records to cross
_HEX64 = re.compile(r"[0-9a-f]{64}")


class RelayError(Exception):
    """A peer that breaks the protocol or fails authentication (one line)."""


def new_secret() -> str:
    return secrets.token_hex(32)


def check_secret(text: str) -> str:
    secret = text.strip().lower()
    if not _HEX64.fullmatch(secret):
        raise ValueError("the run secret is 64 hex digits, as node 0 printed it")
    return secret


def default_port(master_port: int) -> int:
    """The relay listens next to torch's rendezvous port, so one firewall rule covers both."""
    return master_port + 1 if master_port < 65535 else master_port - 1


def node_ranks(node: int, nproc_per_node: int) -> range:
    """Global ranks of a node: torchrun numbers them node by node."""
    return range(node * nproc_per_node, (node + 1) * nproc_per_node)


def status_path(run: RunDir) -> Path:
    return run.path / STATUS_FILE


def read_status(run: RunDir) -> dict | None:
    """The relay's last written state, or None (one node, or not started)."""
    try:
        status = json.loads(status_path(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _mac(key: bytes, role: str, server_nonce: str, client_nonce: str, node: int) -> str:
    message = "|".join((PROTOCOL, role, server_nonce, client_nonce, str(node)))
    return hmac.new(key, message.encode(), "sha256").hexdigest()


def _where(address: tuple) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} scalemon relay: {text}", file=sys.stderr, flush=True)


def _rank_of(path: Path) -> int | None:
    digits = path.stem[5:]  # rank-<N>
    return int(digits) if digits.isdigit() else None


def _count_records(path: Path) -> int:
    tail, count = RecordTail(path), 0
    while True:
        offset = tail.offset
        count += sum(1 for _ in tail.read())
        if tail.offset == offset:
            return count


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Status:
    """relay.json, rewritten atomically when the state changes (at most every few seconds
    for mere progress); best effort: the relay never fails over its status file."""

    def __init__(self, run: RunDir) -> None:
        self.path = status_path(run)
        self.last = -float("inf")

    def write(self, data: dict, urgent: bool = False) -> None:
        now = time.monotonic()
        if not urgent and now - self.last < STATUS_EVERY_S:
            return
        self.last = now
        with contextlib.suppress(RunDirError):
            write_json_atomic(self.path, {**data, "updated": time.time()})


# --- node 0 ---------------------------------------------------------------------------


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

    def __init__(self, run: RunDir, config: dict, log=_log) -> None:
        launch, relay = config["launch"], config["relay"]
        self.run, self.log = run, log
        self.key = bytes.fromhex(relay["secret"])
        self.nproc, self.nnodes = launch["nproc_per_node"], launch["nnodes"]
        self.nodes = {node: _NodeLink() for node in range(1, self.nnodes)}
        self.counts = {rank: _count_records(run.rank_file(rank))
                       for node in self.nodes for rank in node_ranks(node, self.nproc)}
        self.refused = 0  # connections that did not authenticate
        self.bad = 0  # lines dropped: not a record, too long, or not a rank of the sender
        self.peers: dict[socket.socket, _Peer] = {}
        self._files: dict[int, int] = {}
        self._monitors = _MonitorSender(run.monitors_dir)
        self._status = _Status(run)
        self.listener = self._listen(launch["master_addr"], relay["port"])
        self.address = _where(self.listener.getsockname())
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

    def status(self) -> dict:
        return {"role": "server", "listen": self.address, "error": None,
                "refused": self.refused, "bad": self.bad,
                "nodes": {str(node): {"connected": link.connected, "since": link.since,
                                      "peer": link.peer, "records": link.records,
                                      "last_record": link.last_record, "done": link.done}
                          for node, link in self.nodes.items()}}

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
        where = _where(address)
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
        if node not in self.nodes or not _HEX64.fullmatch(parts[2]) or not hmac.compare_digest(
                parts[3].encode(), _mac(self.key, "client", peer.nonce, parts[2], node).encode()):
            self._drop(peer, "wrong secret or not a scalemon relay")
            return False
        held = {str(r): self.counts[r] for r in node_ranks(node, self.nproc)}
        reply = f"ok {_mac(self.key, 'server', peer.nonce, parts[2], node)} {json.dumps(held)}\n"
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
        peer.buffer += data
        *lines, rest = bytes(peer.buffer).split(b"\n")
        if peer.discarding and lines:
            lines, peer.discarding = lines[1:], False  # the tail of an oversize line
        if peer.discarding or len(rest) > records.MAX_RECORD_BYTES:
            if not peer.discarding:
                self.bad += 1
            peer.discarding, rest = True, b""
        peer.buffer = bytearray(rest)
        allowed = node_ranks(peer.node, self.nproc)
        batches: dict[int, list[bytes]] = {}
        for line in lines:
            if line == b"bye":
                self.nodes[peer.node].done = True
                continue
            try:
                record = codec.decode(line)
                if record.rank not in allowed:
                    raise codec.RecordError("not a rank of this node")
                batches.setdefault(record.rank, []).append(codec.encode(record))
            except codec.RecordError:
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


# --- the other nodes ------------------------------------------------------------------


class RelayClient:
    """Sends this node's records to node 0, reconnecting with backoff until told to stop."""

    def __init__(self, run: RunDir, config: dict, log=_log) -> None:
        launch, relay = config["launch"], config["relay"]
        self.run, self.log = run, log
        self.key = bytes.fromhex(relay["secret"])
        self.node = launch["node_rank"]
        self.ranks = node_ranks(self.node, launch["nproc_per_node"])
        self.server = (launch["master_addr"], relay["port"])
        self.connected = False
        self.since = time.time()
        self.sent = 0
        self.error: str | None = None
        self.delivered = False  # everything up to the end was sent and node 0 confirmed it
        self._status = _Status(run)
        self.write_status(urgent=True)

    def status(self) -> dict:
        return {"role": "client", "node_rank": self.node, "server": _where(self.server),
                "connected": self.connected, "since": self.since, "sent": self.sent,
                "error": self.error, "delivered": self.delivered}

    def write_status(self, urgent: bool = False) -> None:
        self._status.write(self.status(), urgent)

    def serve(self, stop: threading.Event, finish: threading.Event) -> None:
        """Relay until `stop`; once `finish` is set, send what is left, say bye and return."""
        backoff = BACKOFF_S[0]
        while not stop.is_set():
            try:
                with socket.create_connection(self.server, timeout=AUTH_TIMEOUT_S) as sock:
                    held = self._handshake(sock)
                    self._set_connected(True, None)
                    backoff = BACKOFF_S[0]
                    if self._stream(sock, held, stop, finish):
                        self.delivered = True
                        self._set_connected(False, None)
                        return
            except (OSError, RelayError) as error:
                self._set_connected(False, str(error) or type(error).__name__)
            except Exception as error:  # a bug: log it, reconnect, resume from node 0's count
                self.log(f"internal error: {type(error).__name__}: {error}")
                self._set_connected(False, f"internal error: {type(error).__name__}")
            stop.wait(backoff)
            backoff = min(2 * backoff, BACKOFF_S[1])

    def _set_connected(self, connected: bool, error: str | None) -> None:
        if connected != self.connected or error != self.error:
            server = self.status()["server"]
            if connected:
                self.log(f"connected to node 0 at {server}")
            elif error is None:
                self.log(f"all {self.sent} records sent to node 0 at {server}")
            elif error != self.error:
                self.log(f"node 0 at {server} unreachable: {error}")
            if connected != self.connected:
                self.connected, self.since = connected, time.time()
            self.error = error
            self.write_status(urgent=True)

    def _handshake(self, sock: socket.socket) -> dict[int, int]:
        greeting = _read_line(sock, MAX_HELLO).split()
        if len(greeting) != 2 or greeting[0] != PROTOCOL or not _HEX64.fullmatch(greeting[1]):
            raise RelayError("not a scalemon relay at that address")
        server_nonce, nonce = greeting[1], secrets.token_hex(32)
        mac = _mac(self.key, "client", server_nonce, nonce, self.node)
        sock.sendall(f"hello {self.node} {nonce} {mac}\n".encode())
        try:
            reply = _read_line(sock, 4096)
        except RelayError:
            raise RelayError("node 0 refused this node: is the run secret the one it "
                             "printed?") from None
        word, proof, held = (reply.split(" ", 2) + ["", ""])[:3]
        expected = _mac(self.key, "server", server_nonce, nonce, self.node)
        if word != "ok" or not hmac.compare_digest(proof.encode(), expected.encode()):
            raise RelayError("the listener at that address does not hold the run secret")
        try:
            counts = {int(rank): count for rank, count in json.loads(held).items()}
        except (ValueError, AttributeError):
            raise RelayError("bad resume point from node 0") from None
        if any(type(c) is not int or c < 0 for c in counts.values()):
            raise RelayError("bad resume point from node 0")
        return counts

    def _stream(self, sock: socket.socket, held: dict[int, int], stop: threading.Event,
                finish: threading.Event) -> bool:
        """Send every record node 0 lacks, then new ones as they come; True once all sent."""
        sock.settimeout(SEND_TIMEOUT_S)
        skip = dict(held)
        tails: dict[int, RecordTail] = {}
        while not stop.is_set():
            finishing = finish.is_set()  # before reading: the files are complete by then
            batch = []
            for path in self.run.rank_files():
                rank = _rank_of(path)
                if rank not in self.ranks:
                    continue
                for record in tails.setdefault(rank, RecordTail(path)).read():
                    if skip.get(rank, 0) > 0:
                        skip[rank] -= 1  # node 0 has it already
                    else:
                        batch.append(codec.encode(record))
            if batch:
                sock.sendall(b"".join(batch))
                self.sent += len(batch)
                self.write_status()
            if finishing:
                sock.sendall(b"bye\n")
                _wait_closed(sock)  # node 0 closes once it has written everything
                return True
            # Nothing to read ever comes from node 0 now; readable means it hung up.
            sock.settimeout(SEND_POLL_S)
            try:
                if sock.recv(1) == b"":
                    raise RelayError("node 0 closed the connection")
                raise RelayError("unexpected data from node 0")
            except TimeoutError:
                pass
            finally:
                sock.settimeout(SEND_TIMEOUT_S)
        return False


def _read_line(sock: socket.socket, limit: int) -> str:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)  # handshake lines are short; never read past the line
        if not chunk:
            raise RelayError("connection closed during the handshake")
        data += chunk
        if len(data) > limit:
            raise RelayError("handshake line too long")
    return data[:-1].decode(errors="replace")


def _wait_closed(sock: socket.socket) -> None:
    sock.settimeout(LINGER_S)
    while sock.recv(4096):
        pass


# --- in the supervisor ----------------------------------------------------------------


class Relay:
    """The relay of one supervised run, on its own thread: `start`, then `finish`."""

    def __init__(self, run: RunDir, config: dict, log=_log) -> None:
        self.stop, self.done = threading.Event(), threading.Event()
        self.log = log
        self.server: RelayServer | None = None
        self.client: RelayClient | None = None
        if config["launch"]["node_rank"] == 0:
            self.server = RelayServer(run, config, log)
            serve, args = self.server.serve, (self.stop,)
        else:
            self.client = RelayClient(run, config, log)
            serve, args = self.client.serve, (self.stop, self.done)
        self.thread = threading.Thread(target=serve, args=args, name="scalemon-relay",
                                       daemon=True)

    def start(self) -> Relay:
        self.thread.start()
        return self

    def finish(self, timeout: float = LINGER_S) -> bool:
        """After the launcher exits: let the last records cross (node 0: until every node
        said bye), at most `timeout` seconds; True if nothing was left behind."""
        deadline = time.monotonic() + timeout
        if self.client is not None:
            self.done.set()
            self.thread.join(timeout)
            complete = self.client.delivered
            if not complete:
                self.log(f"gave up after {timeout:.0f} s: records not sent to node 0 stay "
                         "in this run dir")
        else:
            while not self.server.all_done and time.monotonic() < deadline:
                time.sleep(SEND_POLL_S)
            complete = self.server.all_done
            for node, link in self.server.nodes.items():
                if not link.done:
                    self.log(f"node {node} did not finish sending within {timeout:.0f} s: "
                             "the rest of its records are in its own run dir")
        self.stop.set()
        self.thread.join(max(0.0, deadline - time.monotonic()) + 2 * SEND_POLL_S)
        return complete


def start_relay(run: RunDir, config: dict, log=_log) -> Relay | None:
    """The run's relay, started; None for a one-node run or when it cannot start (the run
    goes on without it: every node's records stay in its own run dir)."""
    if config["launch"].get("nnodes", 1) < 2 or not config.get("relay"):
        return None
    try:
        return Relay(run, config, log).start()
    except OSError as error:
        where = f"{config['launch']['master_addr']}:{config['relay']['port']}"
        log(f"cannot listen on {where}: {error.strerror or error}; remote ranks stay on "
            "their own nodes")
        _Status(run).write({"role": "server", "listen": where, "error": error.strerror or
                            str(error), "refused": 0, "bad": 0, "nodes": {}}, urgent=True)
        return None
