"""The split's sync is what sync costs a step (DESIGN.md, "The measurement trap" and "Overlap
is not free"), checked against an independent ground truth on real gloo ranks.

Two DDP ranks train scalemon's GPT with the probe attached and alternate kinds of step (see
support/sync_truth_worker.py): probe steps, whose records the monitor folds into its split,
and truth steps, which time the same backward under no_sync and synced on the same input and
note when each rank's compute ended (a tensor hook, not the probe's comm hook); in one case
also naive steps, a barrier after backward.

Ground truth: per rank and step, the synced backward less the no_sync one, less the rank's
wait for its slower peer (the latest compute end of the step less its own); the median over
rank-steps. That is the split's definition, computed from other measurements. The split's
sync must be within 15% of it (or three times the two medians' combined standard error, where the
machine's noise is wider: see Samples); with a straggler its wait within 15% of the spread of the
compute ends; and the naive barrier must read almost nothing.

Shape: depth 2, vocab 65536 (69 MB of fp32 gradients) on 16 tokens a step, so sync is most of
a step and its overlap with backward large enough to see: with DDP's default 25 MB buckets and
with 1 MB ones the allreduces slow the backward by about a quarter of what sync costs, which
the tail after the last bucket alone does not count (the old figure fails these cases). One
100 MB bucket overlaps nothing. A rank slowed by a sleep makes its peer wait; that wait must
show as wait, not as sync.

Samples: one backward on this 2-core machine varies by about half the sync at this shape, so
each figure is a median of many: STEPS cycles give STEPS truth samples per rank and 100 probe
steps per rank (the monitor's window), their no_sync calibration taken every step
(SCALEMON_CALIBRATE=1) so that the compute estimate holds its 32 samples per rank. At 100 the
two figures differ by about 4% from noise alone (the ratio spread 0.95-1.09 over eight cases
in two runs), against the 15% allowed; at 60 it was twice that. Now and then the samples of
a run are too spread for the split to price the overlap (it then says "sync at least" the
tail); that case runs once more. After a second such run (a full-suite run on the loaded
2-core machine saw it in two cases) the test checks that the figure said is a lower bound and
that the estimate withheld (`split.sync_estimate`, with its standard error `split.sync_error`)
is as close to the truth as a figure said would have to be. Two full-suite runs also saw said
figures 1.19x and 1.21x the truth, each 2.2 combined standard errors off (44 and 37 ms of
sync): with both medians' errors (2-5 ms each at 100 cycles) 15% is about one standard
deviation, and the errors, computed as for normal noise, understate this machine's. So the
allowance is 15% or three combined standard errors, whichever is larger. With DDP's default
buckets the tail alone (the old figure: 35-39 ms against 44-54 ms) still fails it.

`make test` runs the default buckets and the straggler; `make test-long` adds 1 MB buckets
and one 100 MB bucket (about two minutes more).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from support.builders import make_run

from scalemon.sources.rundir import RunDirSource
from scalemon.state.analysis import Estimate, estimate

WORKER = Path(__file__).resolve().parents[1] / "support" / "sync_truth_worker.py"
WORLD = 2
WARMUP = 2
STEPS = 100  # cycles of probe and truth steps (see the docstring for why so many)
SLEEP_S = 0.15  # rank 1's delay in the straggler case: about twice what sync costs
TOLERANCE = 0.15


def run_worker(tmp_path: Path, bucket_mb: float, sleep: float = 0.0, naive: bool = False):
    """(the monitor's summary of the probe steps, truth samples by rank, naive samples)."""
    tmp_path.mkdir()
    run = make_run(tmp_path, "run", launch={"world_size": WORLD})
    env = os.environ | {"SCALEMON_RUN_DIR": str(run.path), "OMP_NUM_THREADS": "1",
                        "SCALEMON_CALIBRATE": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(WORLD), str(WORKER), str(tmp_path),
        "--depth", "2", "--vocab", "65536", "--seq-len", "16", "--bucket-mb", str(bucket_mb),
        "--steps", str(STEPS), "--warmup", str(WARMUP), "--sleep", str(sleep),
        *(["--naive"] if naive else []),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    timers = [json.loads((tmp_path / f"timers-rank{r}.json").read_text()) for r in range(WORLD)]
    with RunDirSource(run, live=False) as source:
        summary = source.summary()
    return summary, [t["truth"] for t in timers], [n for t in timers for n in t["naive"]]


def ground_truth(truth: list[list[list[float]]]) -> tuple[Estimate, float]:
    """(sync cost: the median over rank-steps of synced less no_sync backward less the rank's
    wait for the latest compute end of its step, with its standard error; the median spread
    of the compute ends)."""
    costs, spreads = [], []
    for steps in zip(*truth, strict=True):  # one truth step, every rank
        ends = [end for _, _, end in steps]
        costs += [synced - nosync - (max(ends) - end) for synced, nosync, end in steps]
        spreads.append(max(ends) - min(ends))
    return estimate(costs), statistics.median(spreads)


def allowed(true_sync: Estimate, error: float) -> float:
    """How far the split may be from the truth: 15%, or three times the two medians' combined
    standard error where the machine's noise is wider than that."""
    return max(TOLERANCE * true_sync.value, 3 * math.hypot(true_sync.error, error))


@pytest.mark.slow
@pytest.mark.parametrize("bucket_mb, sleep, naive", [
    pytest.param(25.0, 0.0, True, id="DDP's default 25 MB buckets"),
    pytest.param(1.0, 0.0, False, id="1 MB buckets", marks=pytest.mark.long),
    pytest.param(100.0, 0.0, False, id="one 100 MB bucket", marks=pytest.mark.long),
    pytest.param(25.0, SLEEP_S, False, id="a straggler"),
])
def test_split_sync_is_what_sync_costs(tmp_path, bucket_mb, sleep, naive):
    summary, truth, naive_samples = run_worker(tmp_path / "first", bucket_mb, sleep, naive)
    if summary.split.sync_lower_bound:  # too noisy a run to price the overlap: one more
        summary, truth, naive_samples = run_worker(tmp_path / "second", bucket_mb, sleep,
                                                   naive)
    split = summary.split
    truth_estimate, true_wait = ground_truth(truth)
    true_sync = truth_estimate.value
    barrier = statistics.median(naive_samples) if naive_samples else 0.0
    lag = summary.straggler
    print(f"\n{bucket_mb:g} MB buckets, sleep {sleep:g} s, medians of {split.steps} probe "
          f"rank-steps / {sum(map(len, truth))} truth samples:"
          f"\n  split sync    {split.sync * 1e3:7.1f} ms ({split.sync / true_sync:.2f} x truth):"
          f" {split.sync_tail * 1e3:.1f} after backward + {split.sync_overlap * 1e3:.1f} "
          f"slowing it"
          f"\n  ground truth  {true_sync * 1e3:7.1f} ms (synced - no_sync backward - wait)"
          f"\n  wait          {lag.wait_s * 1e3 if lag else 0:7.1f} ms (truth "
          f"{true_wait * 1e3:.1f} ms), slowest rank {lag.rank if lag else '-'}"
          f"\n  naive barrier {barrier * 1e3:7.2f} ms ({barrier / true_sync:.1%} of truth)")
    assert barrier < 0.05 * true_sync
    if sleep:
        assert lag is not None and lag.rank == 1
        assert abs(lag.wait_s - true_wait) <= TOLERANCE * true_wait
    if split.sync_lower_bound:
        # Said as "at least": it must be one, and the estimate it withholds as too uncertain
        # must be right within that uncertainty.
        assert split.sync <= (1 + TOLERANCE) * true_sync
        assert split.sync_estimate is not None and split.sync_error is not None
        print(f"  withheld      {split.sync_estimate * 1e3:7.1f} ms +- "
              f"{split.sync_error * 1e3:.1f} ms")
        assert abs(split.sync_estimate - true_sync) <= allowed(truth_estimate, split.sync_error)
        return
    assert split.sync_error is not None
    print(f"  allowed       {allowed(truth_estimate, split.sync_error) * 1e3:7.1f} ms (truth "
          f"+- {truth_estimate.error * 1e3:.1f} ms, split +- {split.sync_error * 1e3:.1f} ms)")
    assert abs(split.sync - true_sync) <= allowed(truth_estimate, split.sync_error)
