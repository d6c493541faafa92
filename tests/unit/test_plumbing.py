"""The plumbing line and the split of a script whose own collectives are its sync (an injected
probe's records: a meta record with what it found, steps with `collectives`)."""

from __future__ import annotations

import pytest
from support.builders import T0, fed, run_config, start, step

from scalemon.core.records import CollectiveTiming, MetaRecord
from scalemon.state.summary import summarize
from scalemon.views.text import plumbing_text, sync_text

PARAM_BYTES = 4_000_000
SCRIPT = run_config(command="script", script=["train.py"], launch={"world_size": 2})


def meta(rank: int, **found) -> MetaRecord:
    return MetaRecord(rank=rank, t=T0, meta={"n_params": PARAM_BYTES // 4,
                                             "param_bytes": PARAM_BYTES, **found})


def own(blocked: float, nbytes: int, count: int = 21, launch: float = T0) -> CollectiveTiming:
    return CollectiveTiming(count=count, bytes=nbytes, blocked=blocked, first_launch=launch)


def summary_of(records, config=SCRIPT, world: int = 2):
    starts = [start(rank, world=world) for rank in range(world)]
    return summarize(fed([*starts, *records], config), T0 + 100)


def zero_steps(nbytes: int, n: int = 12):
    """Both ranks of a sharded optimizer's steps, launching their collectives together."""
    return [step(rank, i, collectives=own(0.040, nbytes, launch=T0 + i))
            for i in range(n) for rank in (0, 1)]


def test_ranks_with_no_process_group_are_said_not_to_communicate():
    found = meta(0, process_group="none", ddp=False), meta(1, process_group="none", ddp=False)
    seen = summary_of([*found, *(step(r, i) for i in range(5) for r in (0, 1))])
    assert plumbing_text(seen) == ("2 ranks, no process group: the ranks do not communicate "
                                   "(each trains its own copy)")
    assert any("do not communicate" in event.text for event in seen.events)


@pytest.mark.parametrize("moved, verdict", [
    (2 * PARAM_BYTES, "moving 2.0x the parameters' bytes: gradients synced each step"),
    (PARAM_BYTES // 2, "moving 0.5x the parameters' bytes: less than the gradients: not all "
                       "of them synced each step"),
])
def test_the_bytes_a_step_moves_against_the_parameters_say_whether_gradients_sync(moved,
                                                                                  verdict):
    found = [meta(r, process_group="gloo", ddp=False) for r in (0, 1)]
    seen = summary_of([*found, *zero_steps(moved)])
    assert plumbing_text(seen) == f"gloo, 2 ranks · 21 collectives a step {verdict} · no DDP"


def test_a_single_process_is_its_backend_alone():
    seen = summary_of([meta(0, process_group="none", ddp=False), step(0, 0), step(0, 1)],
                      run_config(command="script", script=["t.py"], launch={"world_size": 1}),
                      world=1)
    assert plumbing_text(seen) == "1 rank"


def test_a_scripts_collectives_are_its_sync_as_a_lower_bound_less_the_wait():
    found = [meta(r, process_group="gloo", ddp=False) for r in (0, 1)]
    # rank 1 launches 30 ms after rank 0 each step: rank 0's first 30 ms blocked are a wait
    records = [step(rank, i, collectives=own(0.050 if rank == 0 else 0.020, 8_000_000,
                                              launch=T0 + i + 0.030 * rank))
               for i in range(12) for rank in (0, 1)]
    seen = summary_of([*found, *records])
    split = seen.split
    assert split.sync_lower_bound and split.collectives == 21
    assert split.sync == pytest.approx(0.020)  # each rank: blocked less its wait
    assert split.wait == pytest.approx(0.015)  # rank 0 waits 30 ms, rank 1 none
    assert sync_text(seen).startswith("sync at least 20 ms: 20 ms blocked in 21 collectives "
                                      "a step of the script's own (8.00 MB)")
