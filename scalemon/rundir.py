"""Run dirs: where a run's config, per-rank records, logs and checkpoints live.

Layout and config schema: docs/internals.md. Everything here fails with
`RunDirError`, a one-line message the CLI prints as is.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scalemon.core import codec, records

CONFIG_SCHEMA = 1
HOME_ENV = "SCALEMON_HOME"  # overrides the state dir (tests, several installs)
RUN_DIR_ENV = "SCALEMON_RUN_DIR"  # set for training processes: switches the probe on
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunDirError(Exception):
    """A run dir that is missing, unreadable or corrupt."""


def _whole(minimum: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# The config.json fields scalemon reads, each with its check and what it must be. A field may
# be missing (hand-made configs, scripts' runs), but never of another kind: the readers trust it.
_TEXT = (lambda v: isinstance(v, str), "a string")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_LIST = (lambda v: isinstance(v, list), "a list")
_COUNT = (_whole(1), "a whole number >= 1")
_INDEX = (_whole(0), "a whole number >= 0")
_NUMBER = (_finite, "a finite number >= 0")
CONFIG_FIELDS = {
    "name": _TEXT, "created": _NUMBER, "command": _TEXT, "hosts": _LIST, "pids": _OBJECT,
    "model.depth": _COUNT, "model.vocab": _COUNT, "model.seq_len": _COUNT,
    "model.aspect_ratio": _COUNT, "model.head_dim": _COUNT,
    "train.device": _TEXT, "train.backend": _TEXT, "train.device_batch": _COUNT,
    "train.accum": _COUNT, "train.tokens_per_step": _COUNT, "train.lr": _NUMBER,
    "train.warmup_steps": _INDEX, "train.seed": (_whole(-(2**63)), "a whole number"),
    "train.checkpoint_every": _INDEX,
    "launch.nproc_per_node": _COUNT, "launch.nnodes": _COUNT, "launch.node_rank": _INDEX,
    "launch.master_addr": _TEXT, "launch.master_port": _COUNT, "launch.world_size": _COUNT,
    "launch.threads_per_rank": _COUNT, "relay.port": _COUNT, "relay.secret": _TEXT,
}
# Null means "unknown" or "none" only for these; elsewhere a reader would trip on it.
CONFIG_NULLABLE = {
    "script": _LIST, "relay": _OBJECT, "train.steps": _COUNT, "train.data": _TEXT,
    "launch.link_bit_s": _NUMBER,
}
# What `scalemon run --resume` relaunches from: every field `scalemon run` writes.
LAUNCH_FIELDS = ("train.device", "train.backend", "train.device_batch",
                 "train.accum", "train.lr", "train.warmup_steps", "train.seed",
                 "launch.nproc_per_node", "launch.nnodes", "launch.node_rank",
                 "launch.master_addr", "launch.master_port", "launch.world_size",
                 "launch.threads_per_rank")
TRAINER_FIELDS = ("train.steps", "model.depth", "model.vocab", "model.seq_len",
                  "model.aspect_ratio", "model.head_dim")


def _field(config: dict, dotted: str):
    """(present, value) of a dotted config field."""
    section, _, key = dotted.rpartition(".")
    holder = config.get(section) if section else config
    if not isinstance(holder, dict) or key not in holder:
        return False, None
    return True, holder[key]


def config_problem(config: dict) -> str | None:
    """What is wrong with a config's fields (one phrase), or None."""
    for table, nullable in ((CONFIG_FIELDS, False), (CONFIG_NULLABLE, True)):
        for dotted, (valid, kind) in table.items():
            present, value = _field(config, dotted)
            if present and not (valid(value) or (nullable and value is None)):
                return f"{dotted} is {json.dumps(value)[:40]}, not {kind}"
    pids = config.get("pids", {})
    for role, pid in pids.items():
        if pid is not None and not _whole(1)(pid):
            return f"pids.{role} is {json.dumps(pid)[:40]}, not a pid"
    return None


def relaunch_problem(config: dict) -> str | None:
    """What a config lacks to be launched again (one phrase), or None."""
    command = config.get("command")
    if command not in ("train", "script"):
        return "it has no command" if command is None else f"command {command!r} is unknown"
    needed = LAUNCH_FIELDS + (("script",) if command == "script" else TRAINER_FIELDS)
    if (config.get("launch", {}).get("nnodes") or 1) > 1:
        needed += ("relay.port", "relay.secret")
    for dotted in needed:
        present, value = _field(config, dotted)
        if not present or value is None:
            return f"it has no {dotted}"
    return None


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


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write, fsync, rename: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # 0600: config.json holds a multi-node run's relay secret.
        with open(tmp, "w", encoding="utf-8", opener=_private) as f:
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
        try:
            if path.exists():
                if not path.is_dir():
                    raise RunDirError(f"cannot make run dir {path}: a file is in the way")
                if any(path.iterdir()):
                    raise RunDirError(f"run dir {path} already exists and is not empty")
                if path.stat().st_uid != os.geteuid():
                    # Its owner could swap monitors/ or ranks/ for their own.
                    raise RunDirError(f"cannot use {path} as a run dir: another user owns it")
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)  # an empty dir given with --run-dir may be open to everyone
            run = cls(path)
            for sub in (run.ranks_dir, run.monitors_dir, run.logs_dir, run.checkpoints_dir):
                sub.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"cannot create run dir {path}: {error.strerror or error}") from None
        return run

    def read_config(self) -> dict:
        try:
            data = self.config_path.read_bytes()
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a scalemon run dir (no config.json)") from None
        except OSError as error:
            raise RunDirError(f"cannot read {self.config_path}: {error.strerror}") from None
        corrupt = f"corrupt run dir {self.path}: config.json"
        if not data.strip():
            raise RunDirError(f"{corrupt} is empty")
        try:
            config = json.loads(data)
        except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
            raise RunDirError(f"{corrupt} is not JSON") from None
        if not isinstance(config, dict) or config.get("schema") != CONFIG_SCHEMA:
            raise RunDirError(f"{corrupt} has no schema {CONFIG_SCHEMA}")
        for section in ("model", "train", "launch"):
            if not isinstance(config.get(section), dict):
                raise RunDirError(f"{corrupt} lacks '{section}'")
        problem = config_problem(config)
        if problem:
            raise RunDirError(f"{corrupt}: {problem}")
        return config

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_path, config)

    def read_status(self) -> dict | None:
        """The supervisor's exit status, or None while the launcher has not exited."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return {"exit_code": None, "reason": "status.json unreadable"}
        # Corrupt: the run ended (the file exists), but how is unknown.
        corrupt = {"exit_code": None, "reason": "status.json corrupt"}
        if not isinstance(status, dict):
            return corrupt
        code, ended = status.get("exit_code"), status.get("ended")
        if not (code is None or _whole(-(2**31))(code)) or not (ended is None or _finite(ended)):
            return corrupt
        if not isinstance(status.get("reason", ""), str):
            return corrupt
        return status

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
    if "/" in name_or_path and candidate.exists():
        raise RunDirError(f"{name_or_path} is not a run dir (not a directory)")
    root = root or runs_root()
    exact = root / name_or_path
    if "/" not in name_or_path and exact.exists():
        if not exact.is_dir():
            raise RunDirError(f"{exact} is not a run dir (not a directory)")
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


READ_CHUNK = 1 << 20  # a long file is read a piece at a time, never held whole


class RecordTail:
    """Follows one append-only rank file: new complete lines each call, bad ones counted.

    A partial last line (the writer is mid-record) waits for its newline. A file
    that shrank was truncated or replaced: reading starts again from the top.
    `offset` starts following at that byte (the start of a line).
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.bad = 0
        self.truncations = 0

    def read(self, max_bytes: int = 64 << 20) -> Iterator[records.Record]:
        """The records of the lines added since the last call, reading up to `max_bytes`."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.truncations += 1
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                stop = min(size, self.offset + max_bytes)
                while self.offset < stop:
                    chunk = f.read(min(READ_CHUNK, stop - self.offset))
                    if not chunk:
                        return
                    self.offset += len(chunk)
                    yield from self._records(chunk)
        except OSError:
            return

    def _records(self, chunk: bytes) -> Iterator[records.Record]:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > records.MAX_RECORD_BYTES:
            self.bad += 1
            self.partial = b""
        for line in lines:
            if not line or line.isspace():
                continue
            try:
                yield codec.decode(line)
            except codec.RecordError:
                self.bad += 1


def history_tail(path: Path, window: int) -> tuple[list[bytes], int]:
    """A rank file's first line and its complete lines in the last `window` bytes, and the
    offset just past them, where following the file goes on. ([], 0) if unreadable."""
    try:
        with open(path, "rb") as f:
            first = f.readline(records.MAX_RECORD_BYTES + 1)
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - window)
            f.seek(start)
            chunk = f.read(size - start)
    except OSError:
        return [], 0
    cut = chunk.rfind(b"\n") + 1  # what follows is a record still being written
    lines = chunk[:cut].split(b"\n")[:-1]
    if start > 0:
        lines = [first.rstrip(b"\n"), *lines[1:]]  # the window's first line is a piece
    return lines, start + cut


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
            record = codec.decode(line)
        except codec.RecordError:
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

