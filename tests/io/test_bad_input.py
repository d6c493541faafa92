"""Every command with wrong arguments, missing files, corrupt run dirs and pids that are no
training run: one line on stderr starting `scalemon: error:`, exit code 2, no traceback, and
nothing written (the state dir is compared byte for byte, mtimes included, before and after).

All in this process, without torch: the `run` cases fail before anything is launched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.builders import run_config

from scalemon.cli import main
from scalemon.core import codec
from scalemon.core.records import StepRecord
from scalemon.io.processes import SUPERVISOR_MODULE
from scalemon.io.rundir import RunDir
from scalemon.run import launch

NOBODY = 65534


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SCALEMON_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    make_run(home, "good")
    (tmp_path / "a-file").write_text("not a run\n")
    return home


def make_run(home: Path, name: str) -> RunDir:
    """A finished run as `scalemon run` leaves it: full config, status, three steps."""
    run = RunDir.create(home / "runs" / name)
    config = launch.build_config(launch.RunOptions(name=name, steps=10), "cpu", "gloo")
    run.write_config(config)
    run.rank_file(0).write_bytes(b"".join(
        codec.encode(StepRecord(rank=0, t=100.0 + i, step=i, dt=0.5, tokens=8, loss=3.0))
        for i in range(3)))
    run.write_status(0, "finished")
    return run


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, content)
    return out


def fails_cleanly(capsys, home: Path, args: list[str], message: str) -> str:
    """Run the CLI; assert the one-line error with exit code 2 and an untouched state dir."""
    before = snapshot(home.parent)
    with pytest.raises(SystemExit) as done:
        main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    assert done.value.code == 2, (out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("scalemon: error: ") and "Traceback" not in err
    assert message in err, err
    assert snapshot(home.parent) == before, "something was written"
    return err


# --- wrong arguments and missing files ------------------------------------------------------

CPU = ["--device", "cpu", "--backend", "gloo"]  # no GPU probe (a torch import) for these
WRONG_ARGUMENTS = [
    (["--bogus"], "No such option"),
    (["nope"], "No such command 'nope'"),
    (["plan", "--depth", "x"], "'x' is not a valid integer"),
    (["plan", "--depth", "4", "--price", "nan"], "'nan' is not a finite number"),
    (["plan", "--depth", "4", "--latency-ms", "inf"], "'inf' is not a finite number"),
    (["plan", "--depth", "4", "--mfu", "2"], "--mfu"),
    (["plan", "--depth", "4", "--link", "fast"], "cannot parse link speed 'fast'"),
    (["plan", "--depth", "4", "--ref-tok-s", "nan@4"], "--ref-tok-s needs TOK_S@DEPTH"),
    (["plan", "--depth"], "requires an argument"),
    (["ls", "extra"], "unexpected extra argument"),
    (["replay"], "give a run name"),
    (["replay", "good", "--log", "a-file"], "not both"),
    (["replay", "good", "--steps", "5"], "--steps and --vocab are for --log"),
    (["attach", "abc"], "'abc' is not a valid integer"),
    (["attach", "0"], "0 is not in the range"),
    (["attach", "5", "--run", "good"], "not both"),
    (["attach", "--run", "good", "--log", "a-file"], "--log is for processes"),
    (["attach", "--run", "good", "--vocab", "5"], "--steps and --vocab are for logs"),
    (["attach", "--interval", "0.1"], "0.1 is not in the range"),
    (["run", *CPU, "--lr", "inf"], "'inf' is not a finite number"),
    (["run", "--device", "cpu", "--backend", "nccl"], "--backend nccl needs --device cuda"),
    (["run", *CPU, "--tokens-per-step", "7"], "--tokens-per-step 7 is not a multiple"),
    (["run", *CPU, "--name", "../x"], "bad run name '../x'"),
    (["run", *CPU, "--name", "good"], "already exists and is not empty"),
    (["run", *CPU, "--nnodes", "2", "--node-rank", "1"], "give the secret node 0 printed"),
    (["run", *CPU, "--nnodes", "2", "--run-secret", "zz"], "64 hex digits"),
    (["run", *CPU, "--link", "fast"], "cannot parse link speed"),
    (["run", *CPU, "--master-port", "70000"], "70000 is not in the range"),
    (["run", *CPU, "--steps", "5", "--tokens-per-param", "2"], "not both"),
    (["run", "--resume", "good", "--depth", "8"], "only --steps may change (got --depth)"),
    (["run", "--resume", "good", "--", "train.py"], "only --steps may change (got a script)"),
]
MISSING_FILES = [
    (["run", *CPU, "--data", "/nope/shards"], "--data /nope/shards: no such file"),
    (["run", *CPU, "--", "/nope/train.py"], "training script '/nope/train.py' not found"),
    (["run", *CPU, "--run-dir", "a-file"], "a file is in the way"),
    (["run", "--resume", "nope"], "no run named 'nope'"),
    (["replay", "nope"], "no run named 'nope'"),
    (["replay", "/nope/run"], "no run named '/nope/run'"),
    (["replay", "./a-file"], "./a-file is not a run dir (not a directory)"),
    (["replay", "--log", "/nope.log"], "no such log file: /nope.log"),
    (["replay", "--log", "home"], "--log home is not a regular file"),
    (["attach", "--run", "nope"], "no run named 'nope'"),
    (["attach", "--log", "/nope.log"], "no such log file: /nope.log"),
    (["attach", "--log", "/dev/null"], "is not a regular file"),
]


@pytest.mark.parametrize("args, message", WRONG_ARGUMENTS + MISSING_FILES,
                         ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_wrong_arguments_and_missing_files(home, capsys, args, message):
    fails_cleanly(capsys, home, args, message)


def test_help_version_and_no_command_write_nothing(home, capsys):
    before = snapshot(home.parent)
    for args in (["--help"], ["--version"], [], *([c, "--help"] for c in
                                                  ("plan", "run", "ls", "replay", "attach"))):
        with pytest.raises(SystemExit) as done:
            main(args)
        out, err = capsys.readouterr()
        assert done.value.code == 0 and out and err == "", args
    assert snapshot(home.parent) == before


# --- corrupt run dirs -----------------------------------------------------------------------


def config_text(text: bytes):
    return lambda run: run.config_path.write_bytes(text)


def config_field(dotted: str, value):
    def corrupt(run: RunDir) -> None:
        config = json.loads(run.config_path.read_text())  # the file as written, untyped
        section, _, key = dotted.rpartition(".")
        (config[section] if section else config)[key] = value
        run.config_path.write_text(json.dumps(config))
    return corrupt


def replace_with_file(run: RunDir) -> None:
    shutil.rmtree(run.path)
    run.path.write_text("a file now\n")


def config_dir(run: RunDir) -> None:
    run.config_path.unlink()
    run.config_path.mkdir()


CORRUPT_RUNS = {
    "garbage config": (config_text(b"{not json"), "config.json is not JSON"),
    "empty config": (config_text(b""), "config.json is empty"),
    "binary config": (config_text(b"\xff\xfe\x00\x81garbage"), "config.json is not JSON"),
    "deep config": (config_text(b"[" * 100_000 + b"]" * 100_000), "config.json is not JSON"),
    "config a list": (config_text(b"[1, 2]"), "config.json has no schema 1"),
    "config without schema": (config_field("schema", 2), "config.json has no schema 1"),
    "config without train": (config_field("train", "cpu"), "config.json lacks 'train'"),
    "steps a string": (config_field("train.steps", "ten"),
                       'config.json: train.steps is "ten", not a whole number >= 1'),
    "world negative": (config_field("launch.world_size", -2), "launch.world_size is -2"),
    "depth a float": (config_field("model.depth", 4.5), "model.depth is 4.5"),
    "nnodes null": (config_field("launch.nnodes", None), "launch.nnodes is null"),
    "created NaN": (config_field("created", float("nan")), "created is NaN"),
    "pids a list": (config_field("pids", [1]), "pids is [1], not an object"),
    "pid a string": (config_field("pids.supervisor", "abc"), 'pids.supervisor is "abc"'),
    "hosts a number": (config_field("hosts", 5), "hosts is 5, not a list"),
    "no config": (lambda run: run.config_path.unlink(), "is not a scalemon run dir"),
    "config a dir": (config_dir, "config.json: Is a directory"),
    "run dir a file": (replace_with_file, "is not a run dir (not a directory)"),
}
COMMANDS = {
    "replay": ["replay", "{name}"],
    "replay path --json": ["replay", "{path}", "--json"],
    "attach": ["attach", "--run", "{name}", "--no-tui"],
    "resume": ["run", "--resume", "{name}", "--no-tui", "--steps", "20"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("corruption", CORRUPT_RUNS)
def test_a_corrupt_run_dir_is_a_one_line_error(home, capsys, corruption, command):
    corrupt, message = CORRUPT_RUNS[corruption]
    run = make_run(home, "bad")
    corrupt(run)
    args = [arg.format(name="bad", path=run.path) for arg in COMMANDS[command]]
    err = fails_cleanly(capsys, home, args, message)
    assert str(run.path) in err  # where: the run dir, or its config.json


def incomplete_config(run: RunDir) -> None:
    run.write_config(run_config(name=run.name))  # no command, no launch fields


@pytest.mark.parametrize("corrupt, message", [
    (incomplete_config, "is not a launchable config (it has no command)"),
    (config_field("command", "dance"), "(command 'dance' is unknown)"),
    (config_field("train.data", "/nope/shards"), "its --data /nope/shards is gone"),
    (lambda run: run.status_path.unlink(), "run bad is still running"),  # or just starting
])
def test_resume_checks_the_run_before_changing_it(home, capsys, corrupt, message):
    run = make_run(home, "bad")
    corrupt(run)
    fails_cleanly(capsys, home, ["run", "--resume", "bad", "--no-tui", "--steps", "20"], message)


def test_damaged_records_and_status_are_reported_not_fatal(home, capsys):
    """Lines a writer broke are skipped and counted; an unreadable status says the run ended
    without saying how. Neither hides the rest of the run."""
    run = make_run(home, "damaged")
    with run.rank_file(0).open("ab") as f:
        f.write(b"garbage\n\x00\xff\xfe\x81\n" + b"x" * 70_000 + b"\n")
    run.rank_file(1).write_bytes(os.urandom(3000).replace(b"\n", b" ") + b"\n")
    run.status_path.write_bytes(b"\xff not json")
    before = snapshot(home.parent)
    for args in (["replay", "damaged"], ["replay", "damaged", "--json"], ["ls"], ["ls", "--json"]):
        with pytest.raises(SystemExit) as done:
            main(args)
        out, err = capsys.readouterr()
        assert done.value.code == 0 and err == "", (args, err)
        if args == ["replay", "damaged"]:
            assert "(4 unreadable record lines skipped)" in out
            assert "status.json unreadable" in out and "step 3 of 10" in out
        if args == ["replay", "damaged", "--json"]:
            assert json.loads(out)["bad_lines"] == 4
    assert snapshot(home.parent) == before


def test_ls_lists_the_good_runs_and_names_the_corrupt_one(home, capsys):
    make_run(home, "bad").config_path.write_text('{"schema": 1, "model": {}}')
    before = snapshot(home.parent)
    with pytest.raises(SystemExit) as done:
        main(["ls", "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 0 and [run["name"] for run in json.loads(out)] == ["good"]
    assert err == (f"scalemon: warning: corrupt run dir {home / 'runs' / 'bad'}: config.json "
                   "lacks 'train' (skipped)\n")
    assert snapshot(home.parent) == before


# --- pids of processes that are not training runs -------------------------------------------


@pytest.fixture
def spawn():
    procs = []

    def start(args, **kw):
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    start.adopted = []  # orphans started through a shell: not our children
    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in start.adopted:
        os.kill(pid, signal.SIGKILL)


def zombie(spawn) -> int:
    proc = spawn(["true"])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc.pid


def dead(spawn) -> int:
    proc = spawn(["true"])
    proc.wait()
    return proc.pid


def nobodys_sleep(spawn) -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root to start another user's process")

    def become_nobody():
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return spawn(["sleep", "100"], preexec_fn=become_nobody).pid


def init(spawn) -> int:
    names = " ".join([psutil.Process(1).name(), *psutil.Process(1).cmdline()[:1]])
    if "python" in names:
        pytest.skip("pid 1 is a Python here (a container's training process, maybe)")
    # A supervisor whose `scalemon run` left is adopted by pid 1, which is still no monitor.
    orphan = subprocess.run(
        ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(60)' -m {SUPERVISOR_MODULE} "
                     f"{os.environ['SCALEMON_HOME']}/runs/good >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True)
    spawn.adopted.append(int(orphan.stdout))
    return 1


NOT_TRAINING = {
    "sleep": (lambda spawn: spawn(["sleep", "100"]).pid, "does not look like a training run"),
    "pid 1": (init, "does not look like a training run"),
    "dead pid": (dead, "no process with pid"),
    "zombie": (zombie, "has exited (a zombie"),
    "another user's sleep": (nobodys_sleep, "does not look like a training run"),
}


@pytest.mark.parametrize("extra", [["--no-tui"], ["--stacks"]], ids=["watch", "stacks"])
@pytest.mark.parametrize("kind", NOT_TRAINING)
def test_a_pid_that_is_no_training_run_is_a_one_line_error(home, capsys, spawn, kind, extra):
    start, message = NOT_TRAINING[kind]
    pid = start(spawn)
    err = fails_cleanly(capsys, home, ["attach", pid, *extra], message)
    assert f"process {pid}" in err or f"pid {pid}" in err
