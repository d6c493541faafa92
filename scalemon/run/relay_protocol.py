"""The relay carries the records of other nodes' ranks to node 0 of a multi-node run; this
is its protocol and what both ends share.

Every node keeps its own ranks' records in its own run dir (durable, complete). On node 0 the
supervisor runs a `RelayServer` (relay_server.py); on every other node a `RelayClient`
(relay_client.py) tails the local rank files and sends each record over TCP. Node 0 appends
what arrives to its own `ranks/rank-N.jsonl`, so any monitor there (live, `attach` or `replay`
later) sees every rank from the run dir alone, and passes each record on to live monitors as a
datagram, as the probe does.

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
import hmac
import re
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path

from scalemon.core.config import RelayStatus
from scalemon.core.errors import RunDirError
from scalemon.io.rundir import RunDir
from scalemon.io.tail import RecordTail

SECRET_ENV = "SCALEMON_RUN_SECRET"
PROTOCOL = "scalemon-relay/1"
AUTH_TIMEOUT_S = 5.0  # a peer that has not proved the secret by then is dropped
MAX_PEERS = 16  # connections at once, authenticated or not
MAX_HELLO = 512
SEND_POLL_S = 0.2  # how often a client looks for new records
SEND_TIMEOUT_S = 30.0  # a send stuck this long means the path is down: reconnect
BACKOFF_S = (0.5, 10.0)  # first and longest wait between reconnects
STATUS_EVERY_S = 2.0
LINGER_S = 20.0  # after the launcher exits: time for the last records to cross
HEX64 = re.compile(r"[0-9a-f]{64}")


def new_secret() -> str:
    return secrets.token_hex(32)


def check_secret(text: str) -> str:
    secret = text.strip().lower()
    if not HEX64.fullmatch(secret):
        raise ValueError("the run secret is 64 hex digits, as node 0 printed it")
    return secret


def default_port(master_port: int) -> int:
    """The relay listens next to torch's rendezvous port, so one firewall rule covers both."""
    return master_port + 1 if master_port < 65535 else master_port - 1


def mac(key: bytes, role: str, server_nonce: str, client_nonce: str, node: int) -> str:
    message = "|".join((PROTOCOL, role, server_nonce, client_nonce, str(node)))
    return hmac.new(key, message.encode(), "sha256").hexdigest()


def where(address: tuple) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} scalemon relay: {text}", file=sys.stderr, flush=True)


def count_records(path: Path) -> int:
    tail, count = RecordTail(path), 0
    while True:
        offset = tail.offset
        count += sum(1 for _ in tail.read())
        if tail.offset == offset:
            return count


class StatusWriter:
    """relay.json, rewritten atomically when the state changes (at most every few seconds
    for mere progress); best effort: the relay never fails over its status file."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.last = -float("inf")

    def write(self, status: RelayStatus, urgent: bool = False) -> None:
        now = time.monotonic()
        if not urgent and now - self.last < STATUS_EVERY_S:
            return
        self.last = now
        with contextlib.suppress(RunDirError):
            self.run.write_relay_status(replace(status, updated=time.time()))
