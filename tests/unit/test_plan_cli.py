"""`scalemon plan` end to end through the real console script."""

import json
import subprocess
import sys

import pytest

ANALYSIS = ["plan", "--depth", "4", "8", "12", "20", "--ref-tok-s", "115@4",
            "--tokens-per-step", "65536", "--steps", "200000", "--nodes", "2",
            "--link", "1gbit", "--price", "2", "--device", "h100", "--mfu", "0.4"]


def scalemon(*args):
    return subprocess.run([sys.executable, "-m", "scalemon", *args],
                          capture_output=True, text=True, timeout=60)


def test_plan_table_reproduces_the_checked_numbers():
    result = scalemon(*ANALYSIS)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for figure in ("36.7M", "91%", "92.3M", "185.6M", "561.0M", "220M", "554M", "1.11B",
                   "22.7 / 16.0", "48 min / 68 min", "18 years / 26 years", "5.9 s", "742 MB"):
        assert figure in out, figure
    assert "d12 on this machine: 68 min/step, 26 years to 200,000 steps" in out
    assert "one H100 SXM at 40% MFU" in out


def test_plan_json():
    result = scalemon(*ANALYSIS, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    reference, h100 = data["setups"]
    d12 = reference["rows"][2]
    assert d12["params"] == 185_597_952
    assert d12["estimates"]["6N"]["tok_s"] == pytest.approx(22.74, abs=0.01)
    assert d12["estimates"]["exact"]["tok_s"] == pytest.approx(16.03, abs=0.01)
    assert d12["allreduce_s"] == pytest.approx(5.94, abs=0.01)
    assert h100["rows"][2]["estimates"]["exact"]["cost"] > 0
    assert reference["rows"][2]["estimates"]["exact"]["cost"] is None


def test_sync_bound_verdict_recommends_accumulation():
    result = scalemon("plan", "--depth", "12", "--ref-tok-s", "115@4", "--tokens-per-step",
                      "2048", "--steps", "1000", "--nodes", "2", "--link", "100mbit")
    assert result.returncode == 0, result.stderr
    assert "micro-steps per allreduce bring it under 10%" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["plan", "--depth", "0"], "--depth"),
    (["plan", "--depth", "4", "--link", "fast"], "cannot parse link speed"),
    (["plan", "--depth", "4", "--ref-tok-s", "115"], "TOK_S@DEPTH"),
    (["plan", "--depth", "4", "--device", "h900"], "unknown device"),
    (["plan"], "at least one depth"),
    (["plan", "--depth", "4", "--steps", "10", "--tokens-per-param", "20"], "either"),
    (["plan", "--nonsense"], "No such option"),
    (["plan", "--from-run", "no-such-run-here"], "no run named 'no-such-run-here'"),
    (["plan", "--from-run", "r", "--vocab", "512"], "come from the run with --from-run"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, message):
    result = scalemon(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalemon: error:") and message in lines[0]


def test_a_run_with_no_steps_yet_has_nothing_to_plan_from(tmp_path):
    from support.builders import make_run

    run = make_run(tmp_path, "fresh", command="train", model={"depth": 2, "vocab": 512})
    result = scalemon("plan", "--from-run", str(run.path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("scalemon: error: fresh has no measured step to plan "
                                     "from (waiting)")
