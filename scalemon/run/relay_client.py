"""The other nodes' end of the relay (protocol: relay_protocol.py): it tails this node's rank
files and sends every record node 0 lacks, reconnecting with backoff."""

from __future__ import annotations

import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable

from scalemon.core import codec, layout
from scalemon.core.config import RelayClientStatus, RunConfig
from scalemon.core.errors import RelayError
from scalemon.io.rundir import RunDir
from scalemon.io.tail import RecordTail
from scalemon.run import relay_protocol as protocol
from scalemon.run.relay_protocol import (
    AUTH_TIMEOUT_S,
    BACKOFF_S,
    LINGER_S,
    MAX_HELLO,
    PROTOCOL,
    SEND_POLL_S,
    SEND_TIMEOUT_S,
)


class RelayClient:
    """Sends this node's records to node 0, reconnecting with backoff until told to stop."""

    def __init__(self, run: RunDir, config: RunConfig, log: Callable[[str], None] = protocol.log
                 ) -> None:
        launch, relay = config.launch, config.relay
        assert relay is not None and launch.master_addr is not None
        self.run, self.log = run, log
        self.key = bytes.fromhex(relay.secret)
        self.node = launch.node_rank
        self.ranks = launch.ranks_of(self.node)
        self.server = (launch.master_addr, relay.port)
        self.connected = False
        self.since = time.time()
        self.sent = 0
        self.error: str | None = None
        self.delivered = False  # everything up to the end was sent and node 0 confirmed it
        self._status = protocol.StatusWriter(run)
        self.write_status(urgent=True)

    def status(self) -> RelayClientStatus:
        return RelayClientStatus(node_rank=self.node, server=protocol.where(self.server),
                                 connected=self.connected, since=self.since, sent=self.sent,
                                 error=self.error, delivered=self.delivered)

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
            server = protocol.where(self.server)
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
        if len(greeting) != 2 or greeting[0] != PROTOCOL or \
                not protocol.HEX64.fullmatch(greeting[1]):
            raise RelayError("not a scalemon relay at that address")
        server_nonce, nonce = greeting[1], secrets.token_hex(32)
        mac = protocol.mac(self.key, "client", server_nonce, nonce, self.node)
        sock.sendall(f"hello {self.node} {nonce} {mac}\n".encode())
        try:
            reply = _read_line(sock, 4096)
        except RelayError:
            raise RelayError("node 0 refused this node: is the run secret the one it "
                             "printed?") from None
        word, proof, held = (reply.split(" ", 2) + ["", ""])[:3]
        expected = protocol.mac(self.key, "server", server_nonce, nonce, self.node)
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
                rank = layout.rank_of_file(path.name)
                if rank is None or rank not in self.ranks:
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
