"""`scalemon run -- SCRIPT` and `-- -m MODULE` on scripts with no probe code (the field's
loop shapes, tests/support/field_loop.py): the injected probe's steps, loss, tokens,
accumulation, DDP sync and the script's own collectives, against what the script measured and
printed itself."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from support.runs import rank_records

from scalemon.core.records import MetaRecord, StepRecord
from scalemon.io.rundir import RunDir
from scalemon.sources.rundir import RunDirSource
from scalemon.state.checklist import FAIL, PASS, PENDING, UNKNOWN
from scalemon.views.text import plumbing_text, verdict_text

SUPPORT = Path(__file__).resolve().parents[1] / "support"
LOOP = SUPPORT / "field_loop.py"
STEPS = 10


def launch(tmp_path: Path, nproc: int, *script: str, cwd: Path | None = None,
           extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOP_OUT": str(tmp_path), "SCALEMON_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "scalemon", "run", "--nproc-per-node", str(nproc), "--no-tui",
         "--interval", "30", "--run-dir", str(tmp_path / "run"), *extra, "--", *script],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def loop_run(tmp_path: Path, shape: str, nproc: int, accum: int = 1,
             extra: tuple[str, ...] = ()) -> tuple[list, list]:
    result = launch(tmp_path, nproc, str(LOOP), "--shape", shape, "--accum", str(accum),
                    "--steps", str(STEPS), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [rank_records(tmp_path / "run", rank) for rank in range(nproc)]
    measured = [json.loads((tmp_path / f"loop-rank{rank}.json").read_text())
                for rank in range(nproc)]
    return records, measured


def steps_of(records: list) -> list[StepRecord]:
    return [r for r in records if isinstance(r, StepRecord)]


def meta_of(records: list) -> dict:
    (meta,) = [r.meta for r in records if isinstance(r, MetaRecord)]
    return meta


def summary(tmp_path: Path):
    with RunDirSource(RunDir(tmp_path / "run"), live=False) as source:
        return source.summary()


def check_steps(records: list, measured: dict, accum: int) -> list[StepRecord]:
    """Every step recorded, the first too (the model is found when its optimizer is built),
    with the script's own loss and tokens and one backward per micro-step; the steps after
    the first (warm-up) are returned."""
    steps = steps_of(records)
    assert [s.step for s in steps] == list(range(STEPS))
    for ours, theirs in zip(steps, measured["steps"], strict=True):
        assert ours.loss == pytest.approx(theirs["loss"], rel=1e-6)
        assert ours.tokens == theirs["tokens"]
        assert ours.micro_steps == accum
        assert {"forward", "backward", "optimizer"} <= ours.phases.keys()
    return steps[1:]


@pytest.mark.parametrize("shape", ["ddp", "zero", "single", "accum-nosync", "accum-flag",
                                   "no-group"])
def test_a_loop_with_no_probe_code_is_timed(tmp_path, shape):
    nproc = 1 if shape == "single" else 2
    accum = 3 if shape.startswith("accum") else 1
    # The ddp loop saves a checkpoint; the accum-flag loop feeds every rank the same batches.
    extra = {"ddp": ("--save-at", "5"), "accum-flag": ("--same-data",)}.get(shape, ())
    records, measured = loop_run(tmp_path, shape, nproc, accum, extra)
    meta = meta_of(records[0])
    assert meta["n_params"] == measured[0]["n_params"] and meta["vocab"] == 512
    assert meta["model"] == "TinyGPT" and "unknown" not in meta
    assert meta["process_group"] == ("none" if shape in ("single", "no-group") else "gloo")
    assert meta["ddp"] is (shape in ("ddp", "accum-nosync", "accum-flag"))
    for rank in range(nproc):
        steps = check_steps(records[rank], measured[rank], accum)
        if meta["ddp"]:
            assert all(s.sync is not None and s.synced_backward is not None for s in steps)
            if accum > 1:  # the micro-steps before the last ran under no_sync: compute alone
                assert all(s.nosync_backward is not None for s in steps)
        else:
            assert all(s.sync is None for s in steps)
        if shape == "zero":
            # The script's collectives: each launch counted, and the host's time in the calls
            # and waits as the script measured it around them.
            theirs = measured[rank]["steps"][1:]
            assert [s.collectives.count for s in steps] == [t["collectives"] for t in theirs]
            blocked = statistics.median(s.collectives.blocked for s in steps)
            waited = statistics.median(sum(t["waits"]) for t in theirs)
            assert blocked == pytest.approx(waited, rel=0.2, abs=2e-3)
            ours = statistics.median(s.phases["optimizer"] + s.collectives.blocked for s in steps)
            assert ours == pytest.approx(statistics.median(t["optimizer"] for t in theirs),
                                         rel=0.2, abs=2e-3)
        else:
            assert all(s.collectives is None for s in steps)
    seen = summary(tmp_path)
    assert seen.horizon == STEPS and seen.printed is not None  # from the script's `step S/N`
    assert seen.printed.step == STEPS - 1
    assert seen.printed.loss == pytest.approx(measured[0]["steps"][-1]["loss"], abs=1e-6)
    plumbing = plumbing_text(seen) or ""
    if shape == "no-group":
        assert "no process group: the ranks do not communicate" in plumbing
        assert any("do not communicate" in e.text for e in seen.events)
    elif shape == "zero":
        assert seen.split is not None and seen.split.sync_lower_bound
        assert seen.split.collectives == measured[0]["steps"][-1]["collectives"]
        assert "gradients synced each step" in plumbing and "no DDP" in plumbing
    elif shape == "ddp":
        assert "gradients synced each step" in plumbing
    check_the_checklist(seen, shape, tmp_path)


def check_the_checklist(seen, shape: str, tmp_path: Path) -> None:
    """What the plumbing checklist proves of each loop shape, from the same run."""
    listed = {c.key: c for c in seen.checklist.checks}
    states = {key: check.state for key, check in listed.items()}
    alone = shape == "single"
    assert states["group"] == (UNKNOWN if alone else FAIL if shape == "no-group" else PASS)
    assert states["synced"] == (UNKNOWN if alone else FAIL if shape == "no-group" else PASS)
    assert states["ranks"] == PASS
    assert states["data"] == UNKNOWN  # its batches come from torch.randint, not a DataLoader
    # Batches are fingerprinted on the CPU: the same seed on every rank is seen
    assert states["distinct"] == (UNKNOWN if alone else FAIL if shape == "accum-flag" else PASS)
    if shape == "ddp":  # torch.save after step 5: a checkpoint, whatever the script calls it
        assert states["checkpoint"] == PASS and listed["checkpoint"].step == 5
        assert listed["checkpoint"].detail == f"written at step 5 ({tmp_path}/model_00005.pt)"
    else:
        assert states["checkpoint"] == PENDING and listed["checkpoint"].detail == \
            "no checkpoint yet"
    assert states["resume"] == UNKNOWN and states["learning"] == UNKNOWN


def test_a_rank_that_never_steps_fails_the_checklist(tmp_path):
    result = launch(tmp_path, 2, str(LOOP), "--shape", "no-group", "--steps", "6",
                    "--idle-rank", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    seen = summary(tmp_path)
    ranks = next(c for c in seen.checklist.checks if c.key == "ranks")
    assert (ranks.state, ranks.detail) == (FAIL, "rank 1 ended without a step (finished)")
    assert verdict_text(seen) == ("plumbing: 0 of 4 proved; failing: group, synced, ranks; "
                                  "to prove: checkpoint")


def test_a_module_runs_from_the_working_directory_with_the_given_python(tmp_path):
    result = launch(tmp_path, 1, "-m", "field_loop", "--shape", "single", "--steps", "4",
                    cwd=SUPPORT, extra=("--python", sys.executable))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s.step for s in steps_of(rank_records(tmp_path / "run", 0))] == [0, 1, 2, 3]
    config = RunDir(tmp_path / "run").read_config()
    assert config.launch.python == sys.executable and config.launch.cwd == str(SUPPORT)


@pytest.mark.parametrize("script, extra, said", [
    (("-m", "no_such_module_here"), (), "finds no module no_such_module_here"),
    (("-m",), (), "-m needs a module"),
    (("missing.py",), (), "training script 'missing.py' not found"),
    (("-m", "field_loop"), ("--python", "/nonexistent/python3"), "no such interpreter"),
])
def test_a_script_that_cannot_start_is_one_line_and_exit_2(tmp_path, script, extra, said):
    result = launch(tmp_path, 1, *script, cwd=SUPPORT, extra=extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_script_whose_imports_fail_under_scalemons_python_is_told_of_python(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import wandb_is_not_installed_here\n")
    result = launch(tmp_path, 1, str(script))
    assert result.returncode != 0
    assert "No module named 'wandb_is_not_installed_here'" in result.stderr
    assert result.stderr.rstrip().endswith(
        "the script imports 'wandb_is_not_installed_here', which scalemon's Python lacks: give "
        "the script's own environment with --python PATH (its venv's python)")


def test_a_script_with_a_probe_of_its_own_keeps_it(tmp_path):
    """The example builds its DDP before its StepProbe: the injected probe had hooked the DDP,
    stands down for the script's own, and the script's probe times the sync inside that hook."""
    example = Path(__file__).resolve().parents[2] / "examples" / "probe_example.py"
    result = launch(tmp_path, 2, str(example), "--steps", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in range(2):
        records = rank_records(tmp_path / "run", rank)
        kinds = [r.kind for r in records]
        assert kinds == ["start", "start", *["step"] * 6, "end"]
        assert records[0].meta["probe"] == "injected" and "probe" not in records[1].meta
        assert all(s.sync is not None and s.sync.buckets > 0 for s in steps_of(records))
