"""The measurement trap (DESIGN.md): the probe's exposed sync must match ground truth.

Two real gloo DDP ranks train scalemon's GPT with the probe attached and cycle three kinds
of step (see support/sync_truth_worker.py). The probe's comm-hook estimate of exposed sync must be
close to ground truth (synced backward minus no_sync backward), and the naive barrier timer
must read almost nothing, which is why the probe does not use it.

Shape: DESIGN's d4 (depth 4, vocab 65536, 147 MB of fp32 gradients) on 16 tokens a step,
so sync is most of backward and large next to scheduling noise on a busy 2-core machine
(the barrier's few ms stay far below 5%). 100 MB buckets: DDP closes a bucket once it
passes the cap, so all gradients go in one bucket. With two (75 MB), the head's allreduce
overlaps the embedding's backward; on 2 cores both are memory-bound and slow each other,
which ground truth counts and a comm hook cannot see: over ten runs the estimate read
0.71-1.01x truth (median 0.85x), too close to the 0.65 bound. With one bucket it reads
0.84-1.18x. Bucket ordering, the union of intervals and overlap are covered with real
multi-bucket DDP in test_probe.py. Medians pool both ranks' samples. DDP keeps gradients as
bucket views (see the worker) so that its gradient copy, which the hook cannot see either,
does not skew ground truth.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from scalemon.core.codec import decode
from scalemon.core.records import StepRecord

WORKER = Path(__file__).resolve().parents[1] / "support" / "sync_truth_worker.py"
WORLD = 2
WARMUP = 2
STEPS = 10  # of each kind


@pytest.mark.slow
def test_probe_exposed_sync_matches_ground_truth(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = os.environ | {"SCALEMON_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(WORLD), str(WORKER), str(tmp_path),
        "--depth", "4", "--vocab", "65536", "--seq-len", "16", "--bucket-mb", "100",
        "--steps", str(STEPS), "--warmup", str(WARMUP),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    steps: list[StepRecord] = []
    truth: list[float] = []
    naive: list[float] = []
    for rank in range(WORLD):
        records = [decode(line) for line in (run_dir / "ranks" / f"rank-{rank}.jsonl").open("rb")]
        assert [r.kind for r in records[:1] + records[-1:]] == ["start", "end"]
        steps += [r for r in records if isinstance(r, StepRecord) and r.step >= WARMUP]
        timers = json.loads((tmp_path / f"timers-rank{rank}.json").read_text())
        truth += timers["truth"]
        naive += timers["naive"]
    assert len(steps) == WORLD * STEPS
    assert all(s.sync is not None and s.sync.buckets == 1 for s in steps)

    probe = statistics.median(s.sync.exposed for s in steps)
    comm = statistics.median(s.sync.comm for s in steps)
    backward = statistics.median(s.synced_backward for s in steps)
    true = statistics.median(truth)
    barrier = statistics.median(naive)
    print(
        f"\nexposed sync, median of {len(steps)} probe steps / {len(truth)} truth samples:"
        f"\n  probe (comm hook)   {probe * 1e3:7.1f} ms  ({probe / true:.2f} x truth)"
        f"\n  ground truth        {true * 1e3:7.1f} ms  (synced - no_sync backward)"
        f"\n  naive barrier       {barrier * 1e3:7.2f} ms  ({barrier / true:.1%} of truth)"
        f"\n  probe total comm    {comm * 1e3:7.1f} ms, synced backward {backward * 1e3:.1f} ms"
    )
    assert abs(probe - true) <= 0.35 * true
    assert barrier < 0.05 * true
