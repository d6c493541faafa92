"""A long history folded tail first (scalemon.sources.history): the first state comes from the
files' tails, the full one follows in the polls, and ends up the same as one fold of
everything, with the records that arrived meanwhile neither lost nor doubled."""

from __future__ import annotations

import math
import socket
import time

import pytest
from support import builders
from support.builders import T0, make_run

from scalemon.core import codec
from scalemon.core.records import CheckpointRecord, EndRecord, StartRecord, StepRecord
from scalemon.io import tail as tailing
from scalemon.io.rundir import RunDir
from scalemon.io.tail import RecordTail, history_tail
from scalemon.sources import history, rundir
from scalemon.sources.rundir import RunDirSource
from scalemon.state.events import Level
from scalemon.state.observations import Note
from scalemon.state.summary import summarize


def start(rank: int, step: int = 0) -> StartRecord:
    return builders.start(rank, t=T0 + step, start_step=step, vocab=256, steps=10_000)


def step(rank: int, n: int, t_offset: float = 0.0) -> StepRecord:
    loss = math.nan if n == 700 else 5.0 - n / 1000
    timing = builders.sync(exposed=0.01, comm=0.02 + (n % 7) / 100, overlap=0.01,
                           nbytes=1000, buckets=2, last_ready=T0 + n + t_offset - 0.1)
    return builders.step(rank, n, t=T0 + n + 0.5 + t_offset, dt=0.5 + (n % 5) / 10,
                         tokens=64, loss=loss, lr=1e-3, timing=timing,
                         phases={"data": 0.01, "forward": 0.1, "backward": 0.2,
                                 "optimizer": 0.05})


def history_records(rank: int) -> list:
    """Steps 0-1499 with checkpoints, a NaN loss, then a resume from 1200 (steps redone)."""
    out = [start(rank)]
    for n in range(1500):
        out.append(step(rank, n))
        if rank == 0 and n % 250 == 249:
            out.append(CheckpointRecord(rank=0, t=T0 + n + 0.6, step=n, path=f"c{n}", seconds=0.1))
    out.append(EndRecord(rank=rank, t=T0 + 1501, reason="stopped", step=1499))
    out.append(start(rank, 1200))
    out += [step(rank, n, t_offset=1000) for n in range(1200, 1400)]
    return out


def write(run: RunDir, rank: int, items: list, mode: str = "ab") -> None:
    with open(run.rank_file(rank), mode) as f:
        f.write(b"".join(codec.encode(r) for r in items))


@pytest.fixture
def long_run(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "TAIL_BYTES", 20_000)  # about 50 records: history is long
    monkeypatch.setattr(history, "SLICE_BYTES", 8_000)
    monkeypatch.setattr(rundir, "BACKFILL_MIN_S", 0.001)  # the whole history takes polls
    run = make_run(tmp_path, "long", created=T0, model={"vocab": 256},
                   train={"steps": 10_000}, launch={"world_size": 2, "nnodes": 1})
    for rank in (0, 1):
        write(run, rank, history_records(rank), "wb")
    with open(run.rank_file(1), "ab") as f:
        f.write(b"not a record\n")
    return run


def same_state(a, b) -> None:
    assert list(a.loss_steps) == list(b.loss_steps)
    assert [repr(v) for v in a.loss_values] == [repr(v) for v in b.loss_values]
    now = time.time()
    summary_a, summary_b = summarize(a, now).to_dict(), summarize(b, now).to_dict()
    # A live monitor also notes what it ignored (the bad line); a replay only counts it.
    events = summary_a.pop("events"), summary_b.pop("events")
    assert repr(summary_a) == repr(summary_b)
    own = [[e for e in side if not e["text"].startswith("ignored ")] for side in events]
    assert own[0] == own[1]
    assert a.records == b.records


def test_first_state_from_the_tails_then_the_whole_history(long_run):
    full = RunDirSource(long_run, live=False)  # one fold of everything, as before
    assert not full.history_pending
    with RunDirSource(long_run) as collector:
        assert collector.history_pending
        first = collector.state
        assert first.step == 1399 and len(first.loss_steps) < 100  # the tail only
        assert summarize(first, time.time()).split is not None  # the recent window is full
        assert first.meta["vocab"] == 256  # the start record, from the first line
        polls = 0
        while collector.history_pending:
            collector.poll(0)
            polls += 1
        assert polls > 1  # a slice at a time
        same_state(collector.state, full.state)
        assert collector.bad_file_lines == full.bad_file_lines == 1


def test_live_records_during_the_backfill_are_neither_lost_nor_doubled(long_run):
    with RunDirSource(long_run) as collector:
        assert collector.history_pending
        assert collector.socket is not None
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.connect(str(collector.socket.path))
        for n in range(1400, 1430):
            new = [step(0, n, 1000), step(1, n, 1000)]
            write(long_run, 0, new[:1])
            write(long_run, 1, new[1:])
            for record in new:  # each live record twice: file and datagram
                sender.send(codec.encode(record))
            sender.send(codec.encode(step(0, 5)))  # an old record, again
            collector.poll(0)
            collector._last_file_poll = -math.inf  # read the files at every poll
        sender.close()
        collector.finish_history()
        collector.read_files()
        full = RunDirSource(long_run, live=False)
        same_state(collector.state, full.state)
        assert collector.state.step == 1429
        assert {r: i.steps for r, i in collector.state.ranks.items()} == \
            {r: i.steps for r, i in full.state.ranks.items()}


def test_the_monitors_own_notes_and_observations_survive_the_swap(long_run):
    with RunDirSource(long_run) as collector:
        collector.state.apply(Note(time.time(), Level.WARN, "seen by this monitor"))
        collector.state.ranks[1].frozen = True
        count = collector.state.events.count
        collector.finish_history()
        state = collector.state
        assert state.events[-1].text == "seen by this monitor"
        assert state.events.count == count  # the history's events are not news to the views
        assert any("checkpoint at step 249" in e.text for e in state.events)  # older history
        assert state.ranks[1].frozen


def test_a_replaced_file_ends_the_backfill(long_run):
    with RunDirSource(long_run) as collector:
        write(long_run, 0, [start(0), step(0, 0)], "wb")  # shrank: a new file
        collector._last_file_poll = -math.inf
        collector.poll(0)
        collector.finish_history()
        assert not collector.history_pending  # the shown state goes on from the new file
        assert collector.tails[str(long_run.rank_file(0))].truncations == 1


def test_short_histories_are_folded_at_once(tmp_path):
    run = make_run(tmp_path, "s", created=T0, train={"steps": None}, launch={"world_size": 1})
    write(run, 0, [start(0)] + [step(0, n) for n in range(20)], "wb")
    with RunDirSource(run) as collector:
        assert not collector.history_pending and collector.state.step == 19


def test_history_tail_stops_at_the_last_complete_line(tmp_path):
    path = tmp_path / "rank-0.jsonl"
    lines = [codec.encode(start(0))] + [codec.encode(step(0, n)) for n in range(50)]
    path.write_bytes(b"".join(lines) + b'{"v":1,"kind":"st')  # a record being written
    window = sum(map(len, lines[-10:])) + 5
    got, end = history_tail(path, window)
    assert end == sum(map(len, lines))
    assert [codec.decode(line).kind for line in got[:1]] == ["start"]
    assert [codec.decode(line).step for line in got[1:]] == list(range(41, 50))
    tail = RecordTail(path, end)
    path.write_bytes(path.read_bytes() + b'ep"}\n' + lines[-1])
    assert list(tail.read()) == [codec.decode(lines[-1])] and tail.bad == 1


def test_record_tail_reads_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(tailing, "READ_CHUNK", 100)  # records straddle every piece
    path = tmp_path / "rank-0.jsonl"
    path.write_bytes(b"".join(codec.encode(step(0, n)) for n in range(30)))
    tail = RecordTail(path)
    assert [r.step for r in tail.read(max_bytes=2000)] == list(range(len(
        [n for n in range(30) if sum(len(codec.encode(step(0, k))) for k in range(n + 1))
         <= 2000])))
    assert [r.step for r in tail.read()][-1] == 29 and tail.bad == 0


def test_a_full_fold_reads_past_the_per_poll_limit(long_run, monkeypatch):
    from scalemon.sources import rundir as collecting

    monkeypatch.setattr(collecting, "FILE_READ_BYTES", 10_000)  # less than a rank file
    full = RunDirSource(long_run, live=False)
    assert full.state.records == sum(len(history_records(rank)) for rank in (0, 1))
    assert len(full.state.loss_steps) == 1400
