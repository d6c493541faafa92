"""Run dirs and monitor sockets are private to their user; records are data only.

The cross-user checks need root (to become uid 65534, "nobody", in a forked child) and are
skipped otherwise. Their run dirs sit in a directory everyone may enter, so what keeps
nobody out is the run dir's own mode, not the test's temp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from scalemon.core import codec, records
from scalemon.core.errors import RunDirError
from scalemon.core.records import StepRecord
from scalemon.io.rundir import RunDir
from scalemon.io.transport import MonitorSender
from scalemon.run import launch
from scalemon.sources.rundir import RunDirSource

NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_dir():
    """A directory every user may enter (tmp_path's parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="scalemon-security-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def multinode_run(root: Path) -> RunDir:
    """What `scalemon run` makes for node 0 of two machines: the config holds the secret."""
    opts = launch.RunOptions(device="cpu", backend="gloo", nnodes=2, run_dir=str(root / "run"))
    return launch.create_run(opts)


def test_run_dir_config_and_socket_are_private(open_dir):
    run = multinode_run(open_dir)
    relay = run.read_config().relay
    assert relay is not None and relay.secret
    for path in (run.path, run.ranks_dir, run.monitors_dir, run.logs_dir, run.checkpoints_dir):
        assert mode(path) == 0o700, path
    assert mode(run.config_path) == 0o600
    with RunDirSource(run) as collector:
        assert collector.socket is not None, collector.socket_problem
        assert stat.S_ISSOCK(os.lstat(collector.socket.path).st_mode)
        assert mode(collector.socket.path) == 0o600


def test_an_empty_run_dir_given_open_is_made_private(open_dir):
    given = open_dir / "given"
    given.mkdir(mode=0o777)
    given.chmod(0o777)
    assert mode(RunDir.create(given).path) == 0o700


@as_root
def test_an_empty_run_dir_of_another_user_is_refused(open_dir):
    theirs = open_dir / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)  # they could swap monitors/ for their own
    with pytest.raises(RunDirError, match="another user owns it"):
        RunDir.create(theirs)


def as_nobody(action: Callable[[], object]) -> str:
    """Run `action` in a forked child that became uid and gid 65534: what it returned, or the
    name of the OSError it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                answer = repr(action())
            except OSError as error:
                answer = type(error).__name__
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def send(path: Path, data: bytes) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        return sock.sendto(data, str(path))


def bind(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        return "bound"


def step_line(rank: int = 0, step: int = 0) -> bytes:
    return codec.encode(StepRecord(rank=rank, t=1.0 + step, step=step, dt=0.5, tokens=8))


@as_root
def test_another_user_cannot_inject_read_or_listen(open_dir):
    run = multinode_run(open_dir)
    run.rank_file(0).write_bytes(step_line())
    line = step_line(step=1)
    with RunDirSource(run) as collector:
        assert collector.socket is not None, collector.socket_problem
        path = collector.socket.path
        assert as_nobody(lambda: send(path, line)) == "PermissionError"
        assert as_nobody(lambda: run.rank_file(0).read_bytes()) == "PermissionError"
        assert as_nobody(lambda: run.config_path.read_bytes()) == "PermissionError"
        assert as_nobody(lambda: os.listdir(run.monitors_dir)) == "PermissionError"
        assert as_nobody(lambda: bind(run.monitors_dir / "spy.sock")) == "PermissionError"
        collector.read_socket()
        assert collector.state.loss_steps.tolist() == [0]  # nothing came in
        # The control: the same child gets through where the modes let it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as open_sock:
            open_sock.bind(str(open_dir / "open.sock"))
            os.chmod(open_dir / "open.sock", 0o666)
            assert as_nobody(lambda: send(open_dir / "open.sock", line)) == str(len(line))
            assert "open.sock" in as_nobody(lambda: os.listdir(open_dir))


def receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(records.MAX_RECORD_BYTES))
        except BlockingIOError:
            return out


def test_the_probe_sends_only_to_this_users_own_sockets(tmp_path):
    monitors = tmp_path / "monitors"
    monitors.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with receiver(monitors / "mine.sock") as mine, \
            receiver(elsewhere / "target.sock") as target, \
            receiver(monitors / "theirs.sock") as theirs:
        (monitors / "link.sock").symlink_to(elsewhere / "target.sock")
        (monitors / "file.sock").write_bytes(b"")
        if os.geteuid() == 0:
            os.chown(monitors / "theirs.sock", NOBODY, NOBODY, follow_symlinks=False)
        sender = MonitorSender(monitors)
        sender.send(step_line())
        sender.close()
        assert received(mine) == [step_line()]
        assert received(target) == []  # a symlink in monitors/ leads nowhere
        if os.geteuid() == 0:
            assert received(theirs) == []  # another user's socket gets nothing


# Records are JSON, parsed by msgspec or json into plain values and checked field by field:
# nothing that reads a run dir or a datagram unpickles, evaluates or imports.
UNSAFE = re.compile(r"\b(pickle|marshal|shelve|dill)\.loads?\(|\beval\(|\bexec\(|"
                    r"yaml\.(unsafe_)?load\(|\b__import__\(|\bimportlib\.import_module\(")


def test_records_and_run_dirs_are_data_only():
    sources = [*REPO.joinpath("scalemon").rglob("*.py"), *REPO.joinpath("probes").rglob("*.py"),
               *REPO.joinpath("tui").rglob("*.py")]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not UNSAFE.search(text), f"{path.relative_to(REPO)}: {UNSAFE.search(text)[0]}"
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path.relative_to(REPO)}: {call}"
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{path.relative_to(REPO)}: {call}"
