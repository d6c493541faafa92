"""The relay between nodes: authentication, validation, resume, catch-up (real TCP on loopback)."""

import json
import socket
import threading
import time

import pytest
from support.builders import T0, run_config

from scalemon.core import codec, records
from scalemon.core.config import RelayClientStatus, RelayServerStatus
from scalemon.core.errors import RelayError
from scalemon.core.records import StartRecord, StepRecord
from scalemon.io.rundir import RunDir
from scalemon.run import relay, relay_protocol, relay_server
from scalemon.run.relay_client import RelayClient, _read_line
from scalemon.run.relay_server import RelayServer
from scalemon.state.fold import RunState
from scalemon.state.observations import RelaySeen
from scalemon.state.summary import summarize
from scalemon.views.text import nodes_text

SECRET = "ab" * 32


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(node_rank, port, secret=SECRET, nproc=1, nnodes=2, master="127.0.0.1"):
    return run_config(launch={"nproc_per_node": nproc, "nnodes": nnodes, "node_rank": node_rank,
                              "master_addr": master, "master_port": port - 1,
                              "world_size": nproc * nnodes},
                      relay={"port": port, "secret": secret})


def step_line(rank, n):
    return codec.encode(StepRecord(rank=rank, t=T0 + n, step=n, dt=1.0, tokens=512, loss=5.0))


def append(run, rank, lines):
    with open(run.rank_file(rank), "ab") as f:
        f.write(b"".join(lines))


def lines_of(run, rank):
    path = run.rank_file(rank)
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


class Server:
    """A RelayServer on its own thread, as the supervisor runs it."""

    def __init__(self, run, port, secret=SECRET, **kw):
        self.logs = []
        self.server = RelayServer(run, config(0, port, secret, **kw), log=self.logs.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)


class Client:
    def __init__(self, run, port, secret=SECRET, node=1, **kw):
        self.logs = []
        self.client = RelayClient(run, config(node, port, secret, **kw), log=self.logs.append)
        self.stop, self.finish = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self.client.serve, args=(self.stop, self.finish),
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def runs(tmp_path):
    return RunDir.create(tmp_path / "node0"), RunDir.create(tmp_path / "node1")


@pytest.fixture
def port():
    return free_port()


def handshake(port, secret=SECRET, node=1):
    """Authenticate by hand, as a peer would; returns the socket and node 0's counts."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    greeting = _read_line(sock, 512).split()
    nonce = "cd" * 32
    mac = relay_protocol.mac(bytes.fromhex(secret), "client", greeting[1], nonce, node)
    sock.sendall(f"hello {node} {nonce} {mac}\n".encode())
    return sock, _read_line(sock, 4096)


def test_records_cross_reconnect_resumes_without_loss_or_duplicates(runs, port):
    node0, node1 = runs
    server = Server(node0, port)
    try:
        source = [step_line(1, n) for n in range(5)]
        append(node1, 1, source)
        client = Client(node1, port)
        assert wait_until(lambda: len(lines_of(node0, 1)) == 5)
        client.close()  # the path goes down mid-run ...
        more = [step_line(1, n) for n in range(5, 12)]
        append(node1, 1, more)
        client = Client(node1, port)  # ... and comes back: a fresh tail from the file's top
        assert wait_until(lambda: len(lines_of(node0, 1)) == 12)
        append(node1, 1, [step_line(1, 12)])
        client.finish.set()
        client.thread.join(10)
        assert client.client.delivered
        assert lines_of(node0, 1) == source + more + [step_line(1, 12)]
        assert server.server.all_done and server.server.bad == 0
        assert not (node0.ranks_dir / "rank-0.jsonl").exists()
        status = node0.read_relay_status()
        assert isinstance(status, RelayServerStatus) and status.nodes[1].records == 13
    finally:
        server.close()


def test_wrong_secret_gets_nothing_in_and_nothing_out(runs, port):
    node0, node1 = runs
    server = Server(node0, port)
    try:
        append(node1, 1, [step_line(1, n) for n in range(3)])
        intruder = RelayClient(node1, config(1, port, secret="ef" * 32), log=lambda _: 0)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
                pytest.raises(RelayError, match="run secret"):
            intruder._handshake(sock)
        # Records without any hello: the first line is not a hello, the peer is cut off.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(step_line(1, 0) * 3)
            assert wait_until(lambda: server.server.refused == 2)
        assert not lines_of(node0, 1)
        # A peer cannot pose as node 0 either: the client checks node 0's proof.
        client = RelayClient(node1, config(1, port), log=lambda _: 0)
        a, b = socket.socketpair()
        with a, b, pytest.raises(RelayError, match="does not hold the run secret"):
            b.sendall(f"{relay_protocol.PROTOCOL} {'12' * 32}\nok {'00' * 32} {{}}\n".encode())
            client._handshake(a)
    finally:
        server.close()


def test_silent_peers_are_dropped_and_connections_capped(runs, port, monkeypatch):
    monkeypatch.setattr(relay_server, "AUTH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(relay_server, "MAX_PEERS", 3)
    server = Server(runs[0], port)
    try:
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        assert wait_until(lambda: server.server.refused == 4)  # one over the cap, three late
        assert not server.server.peers
        for sock in silent:
            sock.close()
    finally:
        server.close()


def test_garbage_oversize_and_foreign_ranks_are_dropped_and_counted(runs, port):
    node0, _ = runs
    server = Server(node0, port)
    try:
        sock, reply = handshake(port)
        assert reply.startswith("ok ") and json.loads(reply.split(" ", 2)[2]) == {"1": 0}
        with sock:
            sock.sendall(b"not json at all\n")
            sock.sendall(b'{"v": 1, "kind": "step", "rank": 1}\n')  # a record missing keys
            sock.sendall(b"x" * (records.MAX_RECORD_BYTES + 10))  # oversize, in pieces
            sock.sendall(b"y" * 1000 + b"\n")
            sock.sendall(step_line(0, 1))  # node 0's own rank: not node 1's to write
            sock.sendall(b'{"__import__": "os"}\n')
            sock.sendall(step_line(1, 7))
            assert wait_until(lambda: len(lines_of(node0, 1)) == 1)
            assert wait_until(lambda: server.server.bad == 5)
        assert lines_of(node0, 1) == [step_line(1, 7)]
        assert not (node0.ranks_dir / "rank-0.jsonl").exists()
    finally:
        server.close()


def test_node0_down_then_up_catches_up(runs, port):
    node0, node1 = runs
    source = [codec.encode(StartRecord(rank=1, t=T0, pid=7, host="b", world=2, local_rank=0))]
    source += [step_line(1, n) for n in range(20)]
    append(node1, 1, source)
    client = Client(node1, port)
    try:
        assert wait_until(lambda: client.client.error is not None)
        status = node1.read_relay_status()
        assert isinstance(status, RelayClientStatus) and status.connected is False
        server = Server(node0, port)  # node 0 comes up: the backlog crosses
        assert wait_until(lambda: len(lines_of(node0, 1)) == 21, timeout=20)
        server.close()  # node 0 restarts: it counts what it holds and the client resumes
        append(node1, 1, [step_line(1, 20)])
        server = Server(node0, port)
        assert wait_until(lambda: len(lines_of(node0, 1)) == 22, timeout=20)
        assert lines_of(node0, 1) == source + [step_line(1, 20)]
        assert any("resumes after {'1': 21}" in line for line in server.logs)
        server.close()
    finally:
        client.close()


def test_relayed_records_reach_live_monitors(runs, port):
    node0, node1 = runs
    path = node0.monitors_dir / "test.sock"
    monitor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    monitor.bind(str(path))
    monitor.settimeout(10)
    server = Server(node0, port)
    client = Client(node1, port)
    try:
        append(node1, 1, [step_line(1, 3)])
        assert monitor.recv(70000) == step_line(1, 3)
    finally:
        client.close()
        server.close()
        monitor.close()


def test_supervisor_relay_finishes_when_every_node_said_bye(runs, port):
    node0, node1 = runs
    first = relay.start_relay(node0, config(0, port, nproc=2), log=lambda _: 0)
    second = relay.start_relay(node1, config(1, port, nproc=2), log=lambda _: 0)
    append(node1, 2, [step_line(2, 0)])
    append(node1, 3, [step_line(3, 0)])
    assert second.finish(10) is True
    assert first.finish(10) is True
    assert lines_of(node0, 2) == [step_line(2, 0)] and lines_of(node0, 3) == [step_line(3, 0)]
    assert relay.start_relay(node0, run_config(launch={"nnodes": 1})) is None


def test_a_busy_port_leaves_the_run_going(runs, port):
    with socket.create_server(("127.0.0.1", port)):
        messages = []
        assert relay.start_relay(runs[0], config(0, port), log=messages.append) is None
    assert "cannot listen" in messages[0]
    state = RunState(run_config(launch={"nnodes": 2, "nproc_per_node": 1}))
    state.apply(RelaySeen(runs[0].read_relay_status()))
    text = nodes_text(summarize(state, time.time()))
    assert text is not None and f"relay not listening on 127.0.0.1:{port}: " in text


def test_secret_checks():
    assert relay_protocol.check_secret(" " + "AB" * 32 + "\n") == "ab" * 32
    for bad in ("", "ab" * 31, "zz" * 32):
        with pytest.raises(ValueError, match="64 hex digits"):
            relay_protocol.check_secret(bad)
    new_secret = relay_protocol.new_secret
    assert len(new_secret()) == 64 and new_secret() != new_secret()
    default_port = relay_protocol.default_port
    assert default_port(29500) == 29501 and default_port(65535) == 65534
    assert list(run_config(launch={"nproc_per_node": 2}).launch.ranks_of(1)) == [2, 3]


def test_listener_binds_the_master_address_or_all_when_others_cannot_reach_it(runs, port):
    logs = []
    for master, bound in (("127.0.0.1", "127.0.0.1"), ("192.0.2.1", "0.0.0.0"),
                          ("localhost", "0.0.0.0")):
        server = RelayServer(runs[0], config(0, port, master=master), log=logs.append)
        assert server.address.rsplit(":", 1)[0] == bound
        server.close()
    assert "listening on all interfaces" in logs[-1]
