"""StepProbe: records on disk and on monitor sockets, and never a stall or raise in training."""

from __future__ import annotations

import errno
import gc
import os
import socket
import subprocess
import sys
import time

import pytest
from support.builders import make_run

from scalemon.core import layout
from scalemon.core.codec import decode
from scalemon.core.records import CheckpointRecord, EndRecord, StartRecord, StepRecord
from scalemon.io import transport
from scalemon.io.activity import ActivityWriter, read_activity
from scalemon.probes import StepProbe
from scalemon.probes.step.buckets import BucketTimer


def _records(run_dir, rank=0):
    return [decode(line) for line in (run_dir / "ranks" / f"rank-{rank}.jsonl").open("rb")]


def _train(probe, steps, accum=1, start=0):
    """The loop from docs/internals.md, minus the model."""
    for step in range(start, start + steps):
        with probe.step(step, tokens=64, lr=0.01) as s:
            for micro in range(accum):
                with s.phase("data"):
                    pass
                with s.phase("forward"):
                    pass
                with s.phase("backward", synced=micro == accum - 1):
                    pass
            with s.phase("optimizer"):
                pass
            s.loss = 3.5


def _bind(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


@pytest.fixture
def no_run_dir(monkeypatch):
    monkeypatch.delenv("SCALEMON_RUN_DIR", raising=False)


# --- inactive ------------------------------------------------------------------------


def test_inactive_probe_is_a_noop(tmp_path, monkeypatch, no_run_dir):
    monkeypatch.chdir(tmp_path)
    probe = StepProbe.from_env(meta={"depth": 4})
    assert not probe.active
    probe.attach_ddp(object())
    first = probe.step(0, tokens=64, lr=0.1)
    assert probe.step(1) is first  # one shared null step, nothing allocated per step
    with first as s:
        assert s.phase("forward") is s.phase("backward", synced=True)
        with s.phase("forward"):
            pass
        s.loss = 1.0
    _train(probe, 3, accum=2)
    probe.checkpoint(3, "x.pt", 0.5)
    probe.close("finished")
    with probe:
        pass
    assert (probe.lost, probe.drops, probe.discarded) == (0, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_close_rejects_unknown_reason_even_inactive(no_run_dir):
    with pytest.raises(ValueError):
        StepProbe.from_env().close("done")


# --- records on disk -----------------------------------------------------------------


def test_active_probe_writes_valid_records(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEMON_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with StepProbe.from_env(meta={"depth": 4, "device": "cpu", "entropy_rate": None}) as probe:
        assert probe.active
        with probe.step(7, tokens=2048, lr=0.003) as s:
            for micro in range(3):
                with s.phase("data"):
                    pass
                with s.phase("forward"):
                    pass
                with s.phase("backward", synced=micro == 2):
                    time.sleep(0.01 * (micro + 1))
            with s.phase("optimizer"):
                pass
            s.loss = 4.25
        probe.checkpoint(7, tmp_path / "checkpoints" / "step-00000007.pt", 1.5)

    start, step, ckpt, end = _records(tmp_path, rank=3)
    assert isinstance(start, StartRecord)
    assert (start.rank, start.world, start.local_rank, start.pid) == (3, 4, 1, os.getpid())
    assert start.meta == {"depth": 4, "device": "cpu", "entropy_rate": None}
    assert isinstance(step, StepRecord)
    assert (step.rank, step.step, step.tokens, step.lr, step.loss) == (3, 7, 2048, 0.003, 4.25)
    assert step.micro_steps == 3
    assert set(step.phases) == {"data", "forward", "backward", "optimizer"}
    assert step.sync is None  # no DDP attached
    # sleeps give lower bounds only: median of the two no_sync backwards is >= 15 ms
    assert step.nosync_backward >= 0.015
    assert step.synced_backward >= 0.03
    assert step.dt >= sum(step.phases.values())
    assert (step.drops, step.lost) == (0, 0)
    assert isinstance(ckpt, CheckpointRecord) and ckpt.path.endswith("step-00000007.pt")
    assert isinstance(end, EndRecord) and (end.reason, end.step) == ("finished", 7)


def test_error_and_interrupt_end_reasons(tmp_path):
    with pytest.raises(RuntimeError), StepProbe(tmp_path / "a") as probe:
        _train(probe, 2)
        raise RuntimeError("boom")
    end = _records(tmp_path / "a")[-1]
    assert (end.reason, end.message, end.step) == ("error", "RuntimeError: boom", 1)

    with pytest.raises(KeyboardInterrupt), StepProbe(tmp_path / "b"):
        raise KeyboardInterrupt
    assert _records(tmp_path / "b")[-1].reason == "stopped"

    with pytest.raises(SystemExit), StepProbe(tmp_path / "c"):
        sys.exit(0)
    assert _records(tmp_path / "c")[-1].reason == "finished"


def test_close_is_idempotent_and_later_steps_are_noops(tmp_path):
    probe = StepProbe(tmp_path)
    _train(probe, 1)
    probe.close("stopped", message="SIGTERM")
    probe.close("finished")
    _train(probe, 2, start=1)
    kinds = [r.kind for r in _records(tmp_path)]
    assert kinds == ["start", "step", "end"]
    assert _records(tmp_path)[-1].message == "SIGTERM"


def test_step_that_raises_emits_nothing(tmp_path):
    probe = StepProbe(tmp_path)
    with pytest.raises(ValueError), probe.step(0) as s, s.phase("forward"):
        raise ValueError
    probe.close()
    assert [r.kind for r in _records(tmp_path)] == ["start", "end"]


def test_odd_loss_values(tmp_path):
    np = pytest.importorskip("numpy")
    probe = StepProbe(tmp_path)
    odd = [float("nan"), float("inf"), 2, np.float32(2.5), "not a number", None]
    for step, loss in enumerate(odd):
        with probe.step(step) as s:
            s.loss = loss
    probe.close()
    losses = [r.loss for r in _records(tmp_path) if isinstance(r, StepRecord)]
    assert losses[0] != losses[0] and losses[1:] == [float("inf"), 2.0, 2.5, None, None]


def test_values_the_schema_rejects_never_raise(tmp_path):
    probe = StepProbe(tmp_path)
    with probe.step(0, tokens=-5):
        pass
    with probe.step(1, tokens=None):
        pass
    with probe.step(2, lr=float("nan")):
        pass
    probe.checkpoint(-1, "p", 1.0)
    with probe.step(3, tokens=8):
        pass
    probe.close("error", message=RuntimeError("kept as text"))
    assert probe.lost == 4  # never written, counted
    records = _records(tmp_path)
    assert [r.kind for r in records] == ["start", "step", "end"]
    assert records[1].lost == 4 and records[2].message == "kept as text"


def test_bad_meta_fails_at_construction(tmp_path):
    with pytest.raises(ValueError):  # RecordError is a ValueError
        StepProbe(tmp_path, meta={"hosts": ["a", "b"]})


def test_synchronize_called_at_phase_and_step_ends(tmp_path):
    calls = []
    probe = StepProbe(tmp_path, synchronize=lambda: calls.append(1))
    _train(probe, 1)
    probe.close()
    assert len(calls) == 5  # data, forward, backward, optimizer, step


def test_cuda_runs_synchronize_the_device(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("SCALEMON_RUN_DIR", str(tmp_path))
    probe = StepProbe.from_env(meta={"device": "cuda"})
    assert probe._synchronize is torch.cuda.synchronize  # wired only; no GPU needed
    probe.close()
    assert StepProbe(tmp_path / "cpu")._synchronize is None


# --- sync timing ----------------------------------------------------------------------


def test_bucket_timer_union_and_overlap(tmp_path):
    timer = BucketTimer(ActivityWriter(tmp_path / "rank-0.now"))
    # Three buckets: [1, 3] and [2, 4] overlap, [6, 7] ready last; backward ends at 8.
    timer._buckets = [[2.0, 4.0, 10.0], [1.0, 3.0, 20.0], [6.0, 7.0, 30.0]]
    sync = timer.summary(end=8.0, wall_offset=1000.0)
    assert sync.exposed == 2.0  # 8 - 6
    assert sync.comm == 4.0  # [1, 4] + [6, 7]
    assert sync.overlap == 2.0
    assert (sync.bytes, sync.buckets, sync.last_ready) == (60, 3, 1006.0)
    # A bucket not done by the end of backward counts as busy until then.
    timer._buckets = [[5.0, -1.0, 8.0]]
    assert timer.summary(end=8.0, wall_offset=0.0).comm == 3.0
    timer.reset()
    assert timer.summary(end=8.0, wall_offset=0.0) is None


def test_plain_module_has_no_sync(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(4, 4)
    probe = StepProbe(tmp_path)
    probe.attach_ddp(net)  # world size 1: no DDP, nothing to hook
    with probe.step(0) as s:
        with s.phase("forward"):
            loss = net(torch.ones(2, 4)).sum()
        with s.phase("backward", synced=True):
            loss.backward()
    probe.close()
    step = _records(tmp_path)[1]
    assert step.sync is None and step.synced_backward is not None


def test_ddp_hook_times_buckets_and_keeps_gradients(tmp_path):
    torch = pytest.importorskip("torch")
    dist = torch.distributed
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
        ddp = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.05)
        x = torch.randn(8, 64)
        probe = StepProbe(tmp_path / "run")
        probe.attach_ddp(ddp)
        for step, synced in enumerate([False, True]):
            with probe.step(step) as s:
                with s.phase("forward"):
                    loss = ddp(x).square().mean()
                with s.phase("backward", synced=synced):
                    if synced:
                        loss.backward()
                    else:
                        with ddp.no_sync():
                            loss.backward()
            if step == 0:
                local = [p.grad.clone() for p in net.parameters()]
                ddp.zero_grad(set_to_none=True)
        probe.close()
        # world size 1: the averaged gradient is the local one
        for before, p in zip(local, net.parameters(), strict=True):
            torch.testing.assert_close(p.grad, before)
        # gloo's worker releases the comm hook's Python callback after the allreduce is
        # done; a DDP freed before that, GIL held, joins that worker and deadlocks. A barrier
        # runs on the same worker after it: past it, the DDP can go, then the group.
        dist.barrier()
        del ddp
        gc.collect()
    finally:
        dist.destroy_process_group()

    nosync, synced = [r for r in _records(tmp_path / "run") if isinstance(r, StepRecord)]
    assert nosync.sync is None and nosync.nosync_backward is not None
    sync = synced.sync
    assert sync is not None and synced.synced_backward is not None
    assert sync.bytes == sum(p.numel() * 4 for p in net.parameters())
    assert sync.buckets >= 2
    assert 0 <= sync.exposed <= synced.synced_backward
    assert sync.overlap == pytest.approx(max(0.0, sync.comm - sync.exposed))
    assert synced.t - 60 < sync.last_ready <= synced.t


TWO_RANKS = """
import gc, os, sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from scalemon.probes import StepProbe
rank, init, run = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
x = torch.randn(8, 64, generator=torch.Generator().manual_seed(rank))  # each rank its own data
for view in (False, True):
    grads = []
    for probed in (False, True):
        ddp = DDP(net, bucket_cap_mb=0.05, gradient_as_bucket_view=view)
        if probed:
            probe = StepProbe(run, rank=rank, world=2)
            probe.attach_ddp(ddp)
        ddp(x).square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        ddp.zero_grad(set_to_none=True)
        if probed:
            probe.close()
        # A DDP still holding the process group at interpreter exit makes gloo abort.
        del ddp
    for builtin, probed in zip(*grads, strict=True):
        torch.testing.assert_close(probed, builtin, rtol=0, atol=0)
gc.collect()
dist.destroy_process_group()
os._exit(0)  # checked; gloo's threads are not torn down by the interpreter's exit order
"""


def test_ddp_hook_averages_as_the_builtin_allreduce_does_on_two_ranks(tmp_path):
    # The probe does the bucket's averaging itself: the gradients must be DDP's own, bit for
    # bit, whether DDP copies gradients into buckets or keeps them as views.
    pytest.importorskip("torch")
    init = f"file://{tmp_path / 'pg'}"
    ranks = [subprocess.Popen([sys.executable, "-c", TWO_RANKS, str(rank), init,
                               str(tmp_path / "run")], stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for rank in ranks:
        _, err = rank.communicate(timeout=120)
        assert rank.returncode == 0, err[-3000:]


# --- the activity file ---------------------------------------------------------------


class _PhaseSpy:
    """Reads the activity file from inside each phase, as a monitor would."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def look(self):
        self.seen.append(read_activity(self.path))


def test_activity_follows_phases_steps_and_close(tmp_path):
    probe = StepProbe(tmp_path)
    path = tmp_path / layout.activity_file(0)
    spy = _PhaseSpy(path)
    before = time.time()
    with probe.step(7) as s:
        spy.look()
        with s.phase("forward"):
            spy.look()
        spy.look()
    spy.look()
    with probe.collective("stop vote"):
        spy.look()
    spy.look()
    probe.close()
    assert [(a.step, a.phase) for a in spy.seen] == [
        (7, "step"), (7, "forward"), (7, "step"), (7, "between steps"), (7, "stop vote"),
        (7, "stop vote")]
    assert all(before <= a.since <= time.time() for a in spy.seen)
    waiting = [a.waiting_since for a in spy.seen]
    assert waiting[:4] == [None] * 4 and waiting[4] >= spy.seen[4].since and waiting[5] is None
    ended = read_activity(path)
    assert (ended.step, ended.phase, ended.waiting_since) == (7, "ended", None)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_collectives_wait_from_the_oldest_until_the_last_is_done(tmp_path):
    writer = ActivityWriter(tmp_path / "rank-0.now")
    timer = BucketTimer(writer)
    timer.begin_wait(100.0)
    timer.begin_wait(101.0)
    timer.end_wait()
    assert read_activity(tmp_path / "rank-0.now").waiting_since == 100.0
    timer.end_wait()
    assert read_activity(tmp_path / "rank-0.now").waiting_since is None


def test_activity_file_problems_are_silent(tmp_path):
    (tmp_path / "ranks").mkdir()
    (tmp_path / "ranks" / "rank-0.now").mkdir()  # not a file: the writer gives up quietly
    probe = StepProbe(tmp_path)
    _train(probe, 2)
    probe.close()
    assert [r.step for r in _records(tmp_path) if isinstance(r, StepRecord)] == [0, 1]
    assert read_activity(tmp_path / "ranks" / "rank-0.now") is None
    (tmp_path / "short.now").write_bytes(b"\x01" * 7)
    assert read_activity(tmp_path / "short.now") is None


# --- monitor datagrams ---------------------------------------------------------------


def test_datagrams_reach_monitor_sockets(tmp_path):
    (tmp_path / "monitors").mkdir()
    socks = [_bind(tmp_path / "monitors" / f"m{i}.sock") for i in range(2)]
    _bind(tmp_path / "monitors" / "ignored.other")  # only *.sock counts
    probe = StepProbe(tmp_path)
    _train(probe, 3)
    probe.close()
    on_disk = (tmp_path / "ranks" / "rank-0.jsonl").read_bytes().splitlines(keepends=True)
    for sock in socks:
        sock.setblocking(False)
        got = [sock.recv(65536) for _ in range(len(on_disk))]
        assert got == on_disk
        with pytest.raises(BlockingIOError):
            sock.recv(65536)
    assert probe.drops == 0


def test_no_monitor_dir_costs_nothing(tmp_path):
    probe = StepProbe(tmp_path)
    _train(probe, 5)
    probe.close()
    assert probe.drops == 0
    assert len(_records(tmp_path)) == 7


def test_stale_socket_dropped_once_then_forgotten(tmp_path, monkeypatch):
    monkeypatch.setattr(transport, "MONITOR_RESCAN_S", 0.0)  # rescan on every record
    monitors = tmp_path / "monitors"
    monitors.mkdir()
    _bind(monitors / "dead.sock").close()  # socket file left behind by a dead monitor
    (monitors / "junk.sock").write_text("")  # not a socket at all
    probe = StepProbe(tmp_path)
    _train(probe, 5)
    assert probe.drops == 2  # once each, not once per record
    assert (monitors / "dead.sock").exists()  # the probe unlinks nothing

    # A new monitor reusing the name is a new socket file: it gets records again. (Bound
    # beside the old one, then moved over it, so the two cannot share an inode.)
    live = _bind(monitors / "new.tmp")
    os.replace(monitors / "new.tmp", monitors / "dead.sock")
    live.setblocking(False)
    _train(probe, 1, start=5)
    assert decode(live.recv(65536)).step == 5
    probe.close()
    assert probe.drops == 2


def test_monitor_appearing_later_is_found_on_rescan(tmp_path, monkeypatch):
    probe = StepProbe(tmp_path)
    (tmp_path / "monitors").mkdir()
    late = _bind(tmp_path / "monitors" / "late.sock")
    late.setblocking(False)
    _train(probe, 1)  # within 2 s of the last scan: not seen yet
    with pytest.raises(BlockingIOError):
        late.recv(65536)
    monkeypatch.setattr(transport, "MONITOR_RESCAN_S", 0.0)
    probe._monitors._next_scan = 0.0
    _train(probe, 1, start=1)
    assert decode(late.recv(65536)).step == 1
    probe.close()


def test_full_monitor_socket_never_blocks(tmp_path):
    (tmp_path / "monitors").mkdir()
    full = _bind(tmp_path / "monitors" / "slow.sock")  # never read from
    probe = StepProbe(tmp_path)
    _train(probe, 3000)
    probe.close()
    assert probe.drops > 0
    assert len(_records(tmp_path)) == 3002  # the file got everything
    full.close()


# --- disk trouble --------------------------------------------------------------------


class FlakyDisk:
    """os.write for the probe's record file with a quota of bytes, then ENOSPC."""

    def __init__(self, monkeypatch, probe):
        self.quota: int | None = None
        self._fd = None
        self._probe = probe
        real = os.write

        def write(fd, data):
            if self.quota is None or fd != self._probe._file._fd:
                return real(fd, data)
            if self.quota == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real(fd, bytes(data[: self.quota]))  # a partial write, like a real full disk
            self.quota -= n
            return n

        monkeypatch.setattr(os, "write", write)


def test_full_disk_counts_lost_then_recovers_everything(tmp_path, monkeypatch):
    probe = StepProbe(tmp_path)
    disk = FlakyDisk(monkeypatch, probe)
    _train(probe, 2)
    disk.quota = 100  # room for part of one more record
    _train(probe, 5, start=2)
    assert probe.lost == 5
    disk.quota = None  # space is back
    _train(probe, 2, start=7)
    probe.close()

    records = _records(tmp_path)  # every line decodes: the partial record was completed
    assert [r.step for r in records if isinstance(r, StepRecord)] == list(range(9))
    losts = [r.lost for r in records if isinstance(r, StepRecord)]
    assert losts == [0, 0, 0, 1, 2, 3, 4, 5, 5]  # each record carries the count before it
    assert probe.discarded == 0


def test_unwritable_run_dir_recovers(tmp_path):
    (tmp_path / "ranks").write_text("in the way")  # mkdir fails, even for root
    probe = StepProbe(tmp_path)
    _train(probe, 3)
    assert probe.lost == 4
    (tmp_path / "ranks").unlink()
    _train(probe, 1, start=3)
    probe.close()
    assert [r.kind for r in _records(tmp_path)] == ["start"] + ["step"] * 4 + ["end"]


def test_backlog_is_bounded(tmp_path, monkeypatch):
    probe = StepProbe(tmp_path, backlog=3)
    disk = FlakyDisk(monkeypatch, probe)
    disk.quota = 0
    _train(probe, 6)
    assert (probe.lost, probe.discarded) == (6, 3)
    disk.quota = None
    _train(probe, 1, start=6)
    probe.close()
    steps = [r.step for r in _records(tmp_path) if isinstance(r, StepRecord)]
    assert steps == [0, 1, 2, 6]  # the oldest unwritten records kept, newer ones given up


# --- import boundary -----------------------------------------------------------------


def test_import_probes_does_not_import_torch():
    code = "import sys, scalemon.probes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_run_dir_path_too_long_for_a_socket_address_still_gets_live_records(tmp_path):
    from scalemon.sources.rundir import RunDirSource

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    run = make_run(deep, "run")
    with RunDirSource(run) as collector:
        assert collector.socket is not None, collector.socket_problem
        assert len(str(collector.socket.path)) > transport.MAX_SOCKET_ADDRESS
        probe = StepProbe(run.path)
        _train(probe, 3)
        probe.close()
        assert collector.read_socket() == 5  # start, 3 steps, end: all as datagrams
        assert collector.state.ranks[0].last_step == 2
        assert collector.state.ranks[0].ended == "finished"


def test_a_new_monitor_sweeps_away_the_sockets_of_killed_ones(tmp_path):
    from scalemon.sources.rundir import RunDirSource

    run = make_run(tmp_path, "run")
    run.monitors_dir.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = _bind(run.monitors_dir / f"{dead}-abcdef.sock")
    alive = _bind(run.monitors_dir / f"{os.getpid()}-123456.sock")
    with RunDirSource(run) as collector:
        names = sorted(p.name for p in run.monitors_dir.iterdir())
        assert names == sorted([f"{os.getpid()}-123456.sock", collector.socket.path.name])
    left.close()
    alive.close()
