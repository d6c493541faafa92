"""The live socket under bad input: a real RunDirSource on a real run dir gets random bytes,
empty, oversize and hostile datagrams between valid ones; it never raises, folds every valid
record, counts the bad ones and says so in an event (throttled)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.builders import make_run
from support.strategies import json_values, record_keys
from support.strategies import records as any_record

from scalemon.core import codec, records
from scalemon.core.records import StartRecord, StepRecord
from scalemon.sources import rundir as source_module
from scalemon.sources.rundir import RunDirSource
from scalemon.state.observations import Tick
from scalemon.state.summary import summarize
from scalemon.tui.view import build_view
from scalemon.views import headless

QUEUE = 8  # AF_UNIX datagram queues can be as short as 10: drain before they fill


@contextlib.contextmanager
def live_collector():
    with tempfile.TemporaryDirectory() as tmp, \
            RunDirSource(make_run(Path(tmp), "run")) as collector:
        assert collector.socket is not None, collector.socket_problem
        yield collector


def socket_path(collector: RunDirSource) -> str:
    assert collector.socket is not None, collector.socket_problem
    return str(collector.socket.path)


def sender() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return sock


def deliver(collector: RunDirSource, datagrams: list[bytes]) -> None:
    """Send each datagram to the collector's socket, letting it read every few."""
    path = socket_path(collector)
    with sender() as sock:
        for i, data in enumerate(datagrams):
            sock.sendto(data, path)
            if i % QUEUE == QUEUE - 1:
                collector.read_socket()
    collector.read_socket()


def is_record(data: bytes) -> bool:
    try:
        codec.decode(data)
    except codec.RecordError:
        return False
    return True


def as_json(value) -> bytes:
    return json.dumps(value).encode()


datagrams = st.one_of(
    st.binary(max_size=300),  # random bytes, the empty datagram included
    json_values.map(as_json),  # JSON that is not a record
    st.dictionaries(record_keys, json_values, max_size=12).map(  # a record's keys, bad values
        lambda obj: as_json({"v": 1, "kind": "step", "rank": 0} | obj)),
    any_record.map(codec.encode),  # valid, with hypothesis' extremes (hostile values)
    any_record.map(lambda r: codec.encode(r)[:-1] + b" \x00"),  # valid, then a NUL
)


@settings(max_examples=80, deadline=None)
@given(st.lists(datagrams, max_size=24))
def test_every_valid_datagram_is_folded_and_every_bad_one_counted(batch):
    with live_collector() as collector:
        deliver(collector, batch)
        valid = sum(map(is_record, batch))
        state = collector.state
        assert state.records + state.duplicates == valid
        assert collector.bad_datagrams == len(batch) - valid
        show(state)


def show(state) -> None:
    """What the headless lines and the screen make of the state: they survive whatever came in."""
    state.apply(Tick(4e9))
    summary = summarize(state, 4e9)  # the loss series too, downsampled for the chart
    headless.report(summary)
    build_view(summary)


def step(n: int) -> bytes:
    return codec.encode(StepRecord(rank=0, t=100.0 + n, step=n, dt=0.5, tokens=8, loss=3.0))


INT_FIELDS = ("rank", "step", "tokens", "micro_steps", "drops", "lost")


def test_ints_past_64_bits_are_counted_and_the_largest_folded():
    base = json.loads(step(0))
    too_big = [as_json(base | {key: value}) for key in INT_FIELDS for value in (2**63, 10**30)]
    largest = [as_json(base | {key: 2**63 - 1, "t": 200.0 + i})
               for i, key in enumerate(INT_FIELDS)]
    with live_collector() as collector:
        deliver(collector, [step(0), step(1), *too_big, *largest])
        assert collector.bad_datagrams == len(too_big)
        assert collector.state.records == 2 + len(largest)
        show(collector.state)  # a step 2**63 - 1 after step 1: no loop over the gap


def largest_datagram(path: Path) -> int:
    """The biggest datagram this machine lets one socket send to another (SO_SNDBUF bound)."""
    size = 8 << 20
    with sender() as sock:
        while size > records.MAX_RECORD_BYTES:
            try:
                sock.sendto(b"x" * size, str(path))
                return size
            except OSError:  # EMSGSIZE, ENOBUFS: smaller
                size //= 2
    pytest.fail("cannot send a datagram over the record limit")


def padded_start(size: int) -> bytes:
    """A valid start record of exactly `size` bytes."""
    def encoded(pad: int) -> bytes:
        return codec.encode(StartRecord(rank=0, t=1.0, pid=1, host="h", world=2,
                                          local_rank=0, meta={"pad": "x" * pad}))
    return encoded(size - len(encoded(0)))


def test_oversize_and_empty_datagrams_are_counted_between_valid_ones():
    with live_collector() as collector:
        biggest = largest_datagram(Path(socket_path(collector)))  # is counted: read with the others
        at_limit = padded_start(records.MAX_RECORD_BYTES)
        assert len(at_limit) == records.MAX_RECORD_BYTES
        bad = [b"", b"\n", b"x" * (records.MAX_RECORD_BYTES + 1),
               at_limit[:-1] + b" \n",  # one byte over: not folded, however valid it looks
               step(5) * 2, b"{" * records.MAX_RECORD_BYTES]
        deliver(collector, [step(0), *bad[:3], step(1), *bad[3:], at_limit, step(2)])
        assert collector.state.loss_steps.tolist() == [0, 1, 2]
        assert collector.state.ranks[0].pid == 1  # the start record at the limit is in
        assert collector.bad_datagrams == len(bad) + 1
        assert biggest > records.MAX_RECORD_BYTES


def test_bad_input_is_reported_as_a_throttled_event(monkeypatch):
    with live_collector() as collector:
        out: list[str] = []
        deliver(collector, [b"junk"] * 3 + [step(0)])
        headless.follow(collector, out.append, interval=60, stop=lambda: True)
        assert any("ignored 3 malformed datagrams on the monitor socket" in line
                   for line in out), out
        deliver(collector, [b"junk"] * 2)  # within BAD_INPUT_NOTE_S: no new event yet
        with collector.run.rank_file(1).open("ab") as f:
            f.write(b"not a record\n" + step(1).replace(b'"rank":0', b'"rank":1'))
        collector.read_files()
        warnings = [e.text for e in collector.state.events if "ignored" in e.text]
        assert warnings == ["ignored 3 malformed datagrams on the monitor socket"]
        monkeypatch.setattr(source_module, "BAD_INPUT_NOTE_S", 0.0)
        collector.read_socket()
        assert [e.text for e in collector.state.events if "ignored" in e.text][-1] == (
            f"ignored 2 malformed datagrams on the monitor socket and 1 unreadable line in "
            f"{collector.run.ranks_dir}")
        assert collector.state.ranks[1].last_step == 1


def test_replay_counts_bad_lines_without_an_event(tmp_path):
    run = make_run(tmp_path, "run")
    run.rank_file(0).write_bytes(step(0) + b"\x00\xff garbage\n" + step(1))
    with RunDirSource(run, live=False) as collector:
        assert collector.bad_file_lines == 1
        assert collector.state.loss_steps.tolist() == [0, 1]
        assert not [e for e in collector.state.events if "ignored" in e.text]


SENDER = """
import itertools, socket, sys
from scalemon.core.records import StepRecord
from scalemon.core.codec import encode
path, count = sys.argv[1], int(sys.argv[2])  # count 0: send for ever
# Faster than any reader: a record made once, its step number filled in by % formatting.
record = encode(StepRecord(rank=0, t=100.0, step=987654321, dt=0.5, tokens=8, loss=3.0))
step = record.replace(b"987654321", b"%d")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(path)
print(flush=True)
for n in itertools.count() if count == 0 else range(count):
    # blocks while the queue is full: nothing is dropped
    sock.send(b"junk" if count and n == count // 2 else step % n)  # a flood: steps only
"""


def send_steps(collector: RunDirSource, count: int) -> subprocess.Popen:
    sending = subprocess.Popen([sys.executable, "-c", SENDER, socket_path(collector),
                                str(count)], stdout=subprocess.PIPE)
    sending.stdout.readline()  # connected, about to send
    return sending


def test_a_sender_outrunning_the_queue_loses_nothing():
    # The queue holds about 10 datagrams: the collector empties it, then decodes what it took
    # while the blocked sender refills it.
    count = 2000
    with live_collector() as collector:
        sending = send_steps(collector, count)
        folded_per_poll = []
        while sending.poll() is None or folded_per_poll[-1:] != [0]:
            folded_per_poll.append(collector.poll(0.5))
        assert sending.returncode == 0
        assert collector.state.records == count - 1 and collector.bad_datagrams == 1
        assert max(folded_per_poll) > 4 * QUEUE, folded_per_poll


@pytest.mark.timeout(60)
def test_a_flood_does_not_hold_a_poll():
    # However fast datagrams come, a poll returns (SOCKET_READ_S) and the screen redraws.
    with live_collector() as collector:
        sending = send_steps(collector, 0)
        try:
            for _ in range(3):
                assert collector.poll(0.5) > 0
                assert sending.poll() is None, "the flood ended before the poll returned"
        finally:
            sending.kill()
            sending.wait()
