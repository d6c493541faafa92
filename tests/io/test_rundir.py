"""Run dirs: creation, config checks, following rank files, finding runs."""

import json

import pytest
from support.builders import make_run

from scalemon.core import codec
from scalemon.core.errors import RunDirError
from scalemon.core.records import StepRecord
from scalemon.io.listing import describe
from scalemon.io.rundir import RunDir, list_runs, resolve_run
from scalemon.io.tail import RecordTail


def line(step):
    return codec.encode(StepRecord(rank=0, t=1.0 + step, step=step, dt=0.5, tokens=8,
                                     loss=3.0))


def test_create_is_private_and_refuses_to_clobber(tmp_path):
    run = make_run(tmp_path)
    assert (run.path.stat().st_mode & 0o777) == 0o700
    for sub in (run.ranks_dir, run.monitors_dir, run.logs_dir, run.checkpoints_dir):
        assert sub.is_dir()
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.create(run.path)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not JSON"), ("[1, 2]", "schema"), ('{"schema": 1}', "lacks 'model'")])
def test_corrupt_config_is_a_one_line_error(tmp_path, text, message):
    run = make_run(tmp_path)
    run.config_path.write_text(text)
    with pytest.raises(RunDirError, match=message) as error:
        run.read_config()
    assert "\n" not in str(error.value)


def test_tail_waits_for_complete_lines_and_counts_bad_ones(tmp_path):
    path = tmp_path / "rank-0.jsonl"
    path.write_bytes(line(0) + b"garbage\n" + line(1)[:20])
    tail = RecordTail(path)
    assert [r.step for r in tail.read()] == [0]
    assert tail.bad == 1
    with open(path, "ab") as f:
        f.write(line(1)[20:] + line(2))
    assert [r.step for r in tail.read()] == [1, 2]
    assert list(tail.read()) == []


def test_tail_starts_over_after_truncation(tmp_path):
    path = tmp_path / "rank-0.jsonl"
    path.write_bytes(line(0) + line(1) + line(2))
    tail = RecordTail(path)
    assert len(list(tail.read())) == 3
    path.write_bytes(line(7))
    assert [r.step for r in tail.read()] == [7]
    assert tail.truncations == 1


def test_resolve_by_path_name_and_prefix(tmp_path):
    first, second = make_run(tmp_path, "d4-a"), make_run(tmp_path, "d8-b")
    assert resolve_run("d4-a", tmp_path) == first
    assert resolve_run("d8", tmp_path).path == second.path
    assert resolve_run(str(first.path)).path == first.path.resolve()
    with pytest.raises(RunDirError, match="no run named"):
        resolve_run("d12", tmp_path)
    with pytest.raises(RunDirError, match="several runs"):
        resolve_run("d", tmp_path)
    assert {run.name for run in list_runs(tmp_path)} == {"d4-a", "d8-b"}


def test_describe_reads_state_from_status_and_last_step(tmp_path):
    run = make_run(tmp_path)
    run.rank_file(0).write_bytes(line(0) + line(1))
    listing = describe(run)
    assert listing.state == "failed"  # no supervisor, no status, created long ago
    assert listing.step == 1 and listing.loss == 3.0 and listing.horizon == 10
    run.write_status(0, "finished")
    assert describe(run).state == "finished"
    run.write_status(0, "stopped on request")
    assert describe(run).state == "stopped"
    run.status_path.write_text(json.dumps({"exit_code": 1}))
    assert describe(run).state == "failed"
