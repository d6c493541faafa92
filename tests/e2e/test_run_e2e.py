"""`scalemon run` for real: two gloo ranks, the run dir, checkpoints, resume, ls and replay."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.runs import TINY, rank_records, scalemon

from scalemon.core.records import EndRecord, StartRecord, StepRecord

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEMON_HOME", str(tmp_path))
    return tmp_path


def test_run_checkpoint_resume_ls_replay(home):
    result = scalemon("run", *TINY, "--steps", "40", "--name", "tiny")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "run tiny finished" in result.stdout
    run_path = home / "runs" / "tiny"
    config = json.loads((run_path / "config.json").read_text())
    assert config["train"]["accum"] == 2 and config["launch"]["world_size"] == 2
    assert config["pids"]["supervisor"] and config["pids"]["launcher"]

    for rank in (0, 1):
        recs = rank_records(run_path, rank)
        assert isinstance(recs[0], StartRecord) and recs[0].world == 2
        steps = [r for r in recs if isinstance(r, StepRecord)]
        assert [r.step for r in steps] == list(range(40))
        assert all(r.micro_steps == 2 and r.sync is not None and r.sync.bytes > 0 for r in steps)
        # accumulation: the first micro-step ran under no_sync, a ground-truth compute sample
        assert all(r.nosync_backward is not None for r in steps)
        # the loss head, timed apart for plan --from-run: a part of forward and backward
        assert all(0 < r.phases["loss_head"] < r.phases["forward"] + r.phases["backward"]
                   for r in steps)
        # each rank's batches fingerprinted (the checklist's distinct data)
        assert all(r.data is not None for r in steps)
        assert isinstance(recs[-1], EndRecord) and recs[-1].reason == "finished"
    start, steps = rank_records(run_path, 0)[0], [
        r for r in rank_records(run_path, 0) if isinstance(r, StepRecord)]
    assert abs(steps[0].loss - math.log(256)) < 0.3
    assert min(r.loss for r in steps[-10:]) < start.meta["unigram_entropy"]
    checkpoints = sorted(p.name for p in (run_path / "checkpoints").iterdir())
    assert checkpoints == ["step-00000029.pt", "step-00000039.pt"]
    listed = checklist_of("tiny")
    assert listed["checkpoint"]["state"] == "pass" and listed["checkpoint"]["step"] == 9
    assert listed["resume"]["state"] == "pending"  # not resumed yet: not validated
    assert all(c["state"] == "pass" for k, c in listed.items() if k != "resume"), listed

    # Resume, extending the horizon: continues after the last checkpoint.
    result = scalemon("run", "--resume", "tiny", "--steps", "50", "--no-tui")
    assert result.returncode == 0, result.stderr + result.stdout
    recs = rank_records(run_path, 0)
    starts = [r for r in recs if isinstance(r, StartRecord)]
    assert starts[-1].meta["start_step"] == 40
    assert [r.step for r in recs if isinstance(r, StepRecord)][-10:] == list(range(40, 50))

    listing = json.loads(scalemon("ls", "--json").stdout)
    assert [(r["name"], r["state"], r["step"], r["horizon"]) for r in listing] == [
        ("tiny", "finished", 49, 50)]
    human = scalemon("ls").stdout
    assert "tiny" in human and "50/50" in human

    summary = json.loads(scalemon("replay", "tiny", "--json").stdout)
    assert summary["state"] == "finished" and summary["step"] == 49
    resumed = {c["key"]: c for c in summary["checklist"]["checks"]}["resume"]
    assert resumed["state"] == "pass" and resumed["detail"].startswith("resumed at step 40: ")
    validated = summary["validated_step"]
    assert validated >= 44  # the resume's loss is judged over its first five steps
    assert summary["verdict"].startswith(f"plumbing validated at step {validated}: this run "
                                         "has done its job. d12 here: ")
    assert summary["split"]["sync"] > 0 and summary["split"]["bytes"] > 0
    text = scalemon("replay", "tiny").stdout
    assert "run tiny: finished, step 50 of 50" in text and "regime:" in text
    assert "✓ a resume continues the loss resumed at step 40: " in text

    # The plan from what the run measured: its own setup is the measurement itself.
    plan = scalemon("plan", "--from-run", "tiny", "--depth", "1", "4", "--tokens-per-step",
                    "2048")
    assert plan.returncode == 0, plan.stderr
    assert "measured in tiny: d1 (dim 64, vocab 256" in plan.stdout
    data = json.loads(scalemon("plan", "--from-run", "tiny", "--json").stdout)
    own = data["predictions"][0]
    assert own["measured"] and own["depth"] == 1 and own["micro_steps"] == 2
    assert own["step_s"] == pytest.approx(sum(p["seconds"] for p in own["parts"]))
    assert data["validated_step"] == validated and data["verdict"] == summary["verdict"]


def checklist_of(run: str) -> dict:
    summary = json.loads(scalemon("replay", run, "--json").stdout)
    return {c["key"]: c for c in summary["checklist"]["checks"]}


def test_any_training_script_runs_with_the_probe_on(home):
    script = Path(__file__).resolve().parents[2] / "examples" / "probe_example.py"
    result = scalemon("run", "--nproc-per-node", "2", "--backend", "gloo", "--no-tui",
                      "--name", "script", "--", str(script), "--steps", "30")
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(scalemon("replay", "script", "--json").stdout)
    assert summary["state"] == "finished" and summary["step"] == 29
    assert summary["horizon"] == 30 and summary["vocab"] == 512
    assert summary["split"]["sync"] > 0
    assert summary["loss"] < math.log(512) / 2


@pytest.mark.parametrize("args, message", [
    (["--backend", "nccl", "--device", "cpu"], "needs --device cuda"),
    (["--tokens-per-step", "1000", "--backend", "gloo"], "not a multiple"),
    (["--steps", "5", "--tokens-per-param", "20", "--backend", "gloo"], "either"),
    (["--data", "/nonexistent/shards", "--backend", "gloo"], "no such file"),
    (["--name", "bad/name", "--backend", "gloo"], "bad run name"),
    (["--resume", "nosuch"], "no run named"),
    (["--backend", "gloo", "--", "missing_script.py"], "not found"),
])
def test_impossible_configs_fail_in_one_line(home, args, message):
    result = scalemon("run", *args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_corrupt_run_dir_and_missing_run(home):
    run_path = home / "runs" / "broken"
    run_path.mkdir(parents=True)
    (run_path / "config.json").write_text("{oops")
    for args in (["replay", "broken"], ["replay", "nothing-here"]):
        result = scalemon(*args, timeout=60)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
    assert scalemon("ls", timeout=60).returncode == 0


def test_ctrl_c_stops_the_run_with_a_checkpoint(home):
    proc = subprocess.Popen([sys.executable, "-m", "scalemon", "run", *TINY, "--steps", "100000",
                             "--checkpoint-every", "0", "--name", "stopme"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rank0 = home / "runs" / "stopme" / "ranks" / "rank-0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not rank0.exists() or rank0.read_bytes().count(b'"kind":"step"') < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopping the run" in err and "run stopme stopped" in out
    ends = [r for r in rank_records(home / "runs" / "stopme", 0) if isinstance(r, EndRecord)]
    assert ends[-1].reason == "stopped"
    (checkpoint,) = (home / "runs" / "stopme" / "checkpoints").iterdir()
    assert checkpoint.name == f"step-{ends[-1].step:08d}.pt"
    assert json.loads(scalemon("ls", "--json").stdout)[0]["state"] == "stopped"
