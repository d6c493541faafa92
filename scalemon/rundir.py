"""Run dirs: where a run's config, per-rank records, logs and checkpoints live.

Layout and config schema: docs/internals.md. Everything here fails with
`RunDirError`, a one-line message the CLI prints as is.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scalemon import records

CONFIG_SCHEMA = 1
HOME_ENV = "SCALEMON_HOME"  # overrides the state dir (tests, several installs)
RUN_DIR_ENV = "SCALEMON_RUN_DIR"  # set for training processes: switches the probe on
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunDirError(Exception):
    """A run dir that is missing, unreadable or corrupt."""


def runs_root() -> Path:
    """`$SCALEMON_HOME/runs`, else the platform's user state dir (~/.local/state/scalemon/runs)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "runs"
    from platformdirs import user_state_path

    return user_state_path("scalemon") / "runs"


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise RunDirError(f"bad run name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def write_json_atomic(path: Path, data: dict) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {error.strerror or error}") from None


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def ranks_dir(self) -> Path:
        return self.path / "ranks"

    @property
    def monitors_dir(self) -> Path:
        return self.path / "monitors"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def rank_file(self, rank: int) -> Path:
        return self.ranks_dir / f"rank-{rank}.jsonl"

    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Make a new run dir, private to this user (records are nobody else's to write)."""
        if path.exists() and any(path.iterdir()):
            raise RunDirError(f"run dir {path} already exists and is not empty")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            run = cls(path)
            for sub in (run.ranks_dir, run.monitors_dir, run.logs_dir, run.checkpoints_dir):
                sub.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"cannot create run dir {path}: {error.strerror or error}") from None
        return run

    def read_config(self) -> dict:
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a scalemon run dir (no config.json)") from None
        except OSError as error:
            raise RunDirError(f"cannot read {self.config_path}: {error.strerror}") from None
        try:
            config = json.loads(text)
        except ValueError:
            raise RunDirError(f"corrupt run dir {self.path}: config.json is not JSON") from None
        if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
            raise RunDirError(f"corrupt run dir {self.path}: config.json has no schema "
                              f"{CONFIG_SCHEMA}")
        for section in ("model", "train", "launch"):
            if not isinstance(config.get(section), dict):
                raise RunDirError(f"corrupt run dir {self.path}: config.json lacks '{section}'")
        return config

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_path, config)

    def read_status(self) -> dict | None:
        """The supervisor's exit status, or None while the launcher has not exited."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"exit_code": None, "reason": "status.json unreadable"}
        return status if isinstance(status, dict) else {"exit_code": None}

    def write_status(self, exit_code: int, reason: str) -> None:
        write_json_atomic(self.status_path, {"exit_code": exit_code, "ended": time.time(),
                                             "reason": reason})

    def rank_files(self) -> list[Path]:
        try:
            files = self.ranks_dir.glob("rank-*.jsonl")
            return sorted(files, key=lambda p: int(p.stem[5:]) if p.stem[5:].isdigit() else -1)
        except OSError:
            return []


def resolve_run(name_or_path: str, root: Path | None = None) -> RunDir:
    """A run dir from a path, an exact run name, or a unique prefix of one."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        run = RunDir(candidate.resolve())
        run.read_config()
        return run
    root = root or runs_root()
    exact = root / name_or_path
    if "/" not in name_or_path and exact.is_dir():
        run = RunDir(exact)
        run.read_config()
        return run
    matches = [run for run in list_runs(root) if run.name.startswith(name_or_path)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunDirError(f"no run named {name_or_path!r} (see `scalemon ls`)")
    names = ", ".join(run.name for run in matches[:5])
    raise RunDirError(f"{name_or_path!r} matches several runs: {names}")


def list_runs(root: Path | None = None) -> list[RunDir]:
    """Run dirs under the root, newest first (by config time)."""
    root = root or runs_root()
    try:
        entries = [p for p in root.iterdir() if (p / "config.json").is_file()]
    except OSError:
        return []
    return sorted((RunDir(p) for p in entries),
                  key=lambda run: run.config_path.stat().st_mtime, reverse=True)


class RecordTail:
    """Follows one append-only rank file: new complete lines each call, bad ones counted.

    A partial last line (the writer is mid-record) waits for its newline. A file
    that shrank was truncated or replaced: reading starts again from the top.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.bad = 0
        self.truncations = 0

    def read(self, max_bytes: int = 64 << 20) -> Iterator[records.Record]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.truncations += 1
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                chunk = f.read(max_bytes)
        except OSError:
            return
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > records.MAX_RECORD_BYTES:
            self.bad += 1
            self.partial = b""
        for line in lines:
            if not line.strip():
                continue
            try:
                yield records.decode(line)
            except records.RecordError:
                self.bad += 1


def last_step_record(path: Path, window: int = 256 << 10) -> records.StepRecord | None:
    """The last valid step record of a rank file, reading only its tail."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - window))
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        if b'"kind":"step"' not in line:
            continue
        try:
            record = records.decode(line)
        except records.RecordError:
            continue
        if isinstance(record, records.StepRecord):
            return record
    return None


@dataclass(frozen=True)
class RunListing:
    """What `scalemon ls` shows for a run, read cheaply (tails, not whole files)."""

    run: RunDir
    state: str  # running | finished | stopped | failed
    step: int  # last step reported by rank 0 (-1 before the first)
    horizon: int | None
    loss: float | None
    updated: float  # unix time of the newest record
    world: int | None


def _supervisor_running(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
    return b"scalemon.supervise" in cmdline and not zombie


def describe(run: RunDir) -> RunListing:
    config = run.read_config()
    status = run.read_status()
    if status is not None:
        code = status.get("exit_code")
        if code != 0:
            state = "failed"
        else:
            state = "stopped" if "stopped" in str(status.get("reason", "")) else "finished"
    elif _supervisor_running(config.get("pids", {}).get("supervisor")):
        state = "running"
    else:
        state = "starting" if time.time() - config.get("created", 0) < 10 else "failed"
    last = last_step_record(run.rank_file(0))
    return RunListing(
        run=run, state=state, step=last.step if last else -1,
        horizon=config["train"].get("steps"), loss=last.loss if last else None,
        updated=last.t if last else config.get("created", 0.0),
        world=config["launch"].get("world_size"),
    )


def tail_lines(path, count: int) -> list[str]:
    """The last `count` non-blank lines of a log (reads at most its last 16 kB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [line.rstrip() for line in lines if line.strip()][-count:]
