"""The split's sync: the tail after the last bucket, what the overlapped allreduces slow the
backward (from no_sync samples), and a slower peer's wait kept apart; the parts add up."""

import pytest
from support.builders import T0, fed, run_config, start, step, sync

from scalemon.state.summary import summarize
from scalemon.views.headless import report, status_line
from scalemon.views.text import split_text, sync_text

CONFIG = run_config(model={"depth": 2, "vocab": 256}, train={"steps": 100},
                    launch={"world_size": 2, "nproc_per_node": 2})
COMPUTE = 0.40  # backward compute without sync, both ranks
TAIL = 0.10  # sync after the last bucket
SLOWED = 0.06  # the overlapped allreduces' cost to backward
LATE = 0.05  # rank 1's last bucket this much after rank 0's: rank 0 waits


def records(samples: bool = True, late: float = LATE) -> list:
    """Two ranks; rank 0's tail includes its wait for rank 1. With `samples`, each step has a
    no_sync backward sample (as accumulation or calibration gives)."""
    out = [start(0), start(1)]
    for n in range(20):
        for rank in (0, 1):
            wait = late if rank == 0 else 0.0
            tail = TAIL + wait
            synced = COMPUTE + SLOWED + tail
            phases = {"data": 0.01, "forward": 0.2, "backward": synced, "optimizer": 0.05}
            ready = T0 + n + (late if rank == 1 else 0.0)
            out.append(step(rank, n, dt=0.9, phases=phases,
                            timing=sync(tail, 0.3, last_ready=ready),
                            synced_backward=synced,
                            nosync_backward=COMPUTE if samples else None))
    return out


def summary_of(items):
    return summarize(fed(items, CONFIG), T0 + 100)


def test_sync_is_the_tail_plus_what_overlap_slows_and_wait_is_apart():
    split = summary_of(records()).split
    assert not split.sync_lower_bound
    assert split.sync_tail == pytest.approx(TAIL)
    assert split.sync_overlap == pytest.approx(SLOWED)
    assert split.sync == pytest.approx(TAIL + SLOWED)
    assert split.wait == pytest.approx(LATE / 2)  # the median rank-step: one waits, one not
    assert split.backward == pytest.approx(COMPUTE)
    parts = sum(getattr(split, name) for name in split.PARTS)
    assert parts == pytest.approx(split.total)


def test_without_no_sync_samples_the_tail_is_a_lower_bound():
    summary = summary_of(records(samples=False))
    split = summary.split
    assert split.sync_lower_bound and split.sync == pytest.approx(TAIL)
    assert split.sync_overlap == 0.0
    assert "sync ≥" in split_text(summary)
    assert sync_text(summary).startswith("sync at least 100 ms (after backward; what overlap "
                                         "costs needs no_sync samples")


def test_the_parts_are_named_on_every_view():
    summary = summary_of(records())
    assert sync_text(summary) == ("sync 160 ms: 100 ms after backward + 60 ms slowing the "
                                  "overlapped backward; rank 1 slowest, peers wait 50 ms")
    assert "sync 160 ms: 100 ms after backward + 60 ms slowing it" in status_line(summary)
    assert "sync 160 ms: 100 ms after backward + 60 ms slowing the overlapped" in \
        report(summary)
    assert "wait 3%" in split_text(summary)
    split = summary.to_dict()["split"]
    assert split["sync"] == pytest.approx(0.16) and split["sync_tail"] == pytest.approx(0.1)
    assert split["sync_overlap"] == pytest.approx(0.06) and split["wait"] == pytest.approx(0.025)
    assert split["sync_lower_bound"] is False


def test_noise_cannot_make_the_overlap_cost_negative():
    items = records()
    faster = [r if not hasattr(r, "synced_backward") else
              type(r)(**{**{f: getattr(r, f) for f in r.__slots__},
                         "nosync_backward": COMPUTE + 0.2}) for r in items]
    split = summary_of(faster).split
    assert split.sync_overlap == 0.0 and split.sync == pytest.approx(TAIL)


def test_advice_and_the_regime_use_the_full_figure():
    items = [start(0), start(1)]
    for n in range(20):
        for rank in (0, 1):  # sync-bound only once the overlap's cost is counted
            phases = {"data": 0.0, "forward": 0.1, "backward": 0.2 + 0.06 + 0.14,
                      "optimizer": 0.02}
            items.append(step(rank, n, dt=0.52, phases=phases,
                              timing=sync(0.06, 0.3, last_ready=T0 + n),
                              synced_backward=0.4, nosync_backward=0.2))
    summary = summary_of(items)
    assert summary.split.sync == pytest.approx(0.2)
    assert summary.regime == "sync-bound"
    lower = summary_of([r if not hasattr(r, "nosync_backward") else
                        type(r)(**{**{f: getattr(r, f) for f in r.__slots__},
                                   "nosync_backward": None}) for r in items])
    assert lower.regime == "compute-bound"  # the tail alone hides it


def test_a_few_noisy_samples_leave_it_a_lower_bound_until_they_agree():
    items = records(samples=False)
    noisy = [0.25, 0.55, 0.40]  # compute without sync, three samples far apart
    for i, sample in enumerate(noisy):  # ranks 0 and 1, steps 17-19
        for rank in (0, 1):
            index = next(j for j, r in enumerate(items)
                         if getattr(r, "step", None) == 17 + i and r.rank == rank)
            record = items[index]
            items[index] = type(record)(**{**{f: getattr(record, f) for f in record.__slots__},
                                           "nosync_backward": sample})
    summary = summary_of(items)
    assert summary.split.sync_lower_bound and summary.split.sync_samples == 3
    assert summary.split.sync == pytest.approx(TAIL)
    assert "(after backward; 3 no_sync samples so far, too few to price the overlap)" in \
        sync_text(summary)
