"""Run dirs: where a run's config, per-rank records, logs and checkpoints live.

Names: scalemon.core.layout; file schemas: scalemon.core.config. Everything here fails with
`RunDirError`, a one-line message the CLI prints as is.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalemon.core import layout
from scalemon.core.config import (
    ConfigProblem,
    RelayStatus,
    RunConfig,
    RunStatus,
    relay_status_from_dict,
)
from scalemon.core.errors import RunDirError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def runs_root() -> Path:
    """`$SCALEMON_HOME/runs`, else the platform's user state dir (~/.local/state/scalemon/runs)."""
    home = os.environ.get(layout.HOME_ENV)
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


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
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
        return self.path / layout.CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / layout.STATUS

    @property
    def relay_status_path(self) -> Path:
        return self.path / layout.RELAY_STATUS

    @property
    def ranks_dir(self) -> Path:
        return self.path / layout.RANKS

    @property
    def monitors_dir(self) -> Path:
        return self.path / layout.MONITORS

    @property
    def logs_dir(self) -> Path:
        return self.path / layout.LOGS

    @property
    def stderr_log(self) -> Path:
        return self.logs_dir / layout.STDERR_LOG

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / layout.STDOUT_LOG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / layout.CHECKPOINTS

    def rank_file(self, rank: int) -> Path:
        return self.path / layout.rank_file(rank)

    def activity_file(self, rank: int) -> Path:
        return self.path / layout.activity_file(rank)

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
            for sub in layout.SUBDIRS:
                (path / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise RunDirError(f"cannot create run dir {path}: {error.strerror or error}") from None
        return cls(path)

    def read_config(self) -> RunConfig:
        try:
            data = self.config_path.read_bytes()
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a scalemon run dir (no config.json)") from None
        except OSError as error:
            raise RunDirError(f"cannot read {self.config_path}: {error.strerror}") from None
        corrupt = f"corrupt run dir {self.path}"
        if not data.strip():
            raise RunDirError(f"{corrupt}: config.json is empty")
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
            raise RunDirError(f"{corrupt}: config.json is not JSON") from None
        try:
            return RunConfig.from_dict(parsed if isinstance(parsed, dict) else {})
        except ConfigProblem as problem:
            raise RunDirError(f"{corrupt}: {problem}") from None

    def write_config(self, config: RunConfig) -> None:
        write_json_atomic(self.config_path, config.to_dict())

    def read_status(self) -> RunStatus | None:
        """The supervisor's record of how the launcher ended; None while it has not."""
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return RunStatus(exit_code=None, reason="status.json unreadable")
        return RunStatus.from_dict(data)

    def write_status(self, exit_code: int, reason: str) -> None:
        status = RunStatus(exit_code=exit_code, reason=reason, ended=time.time())
        write_json_atomic(self.status_path, status.to_dict())

    def read_relay_status(self) -> RelayStatus | None:
        """The relay's last written state; None for one node, or before it started."""
        try:
            data = json.loads(self.relay_status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return relay_status_from_dict(data)

    def write_relay_status(self, status: RelayStatus) -> None:
        write_json_atomic(self.relay_status_path, status.to_dict())

    def rank_files(self) -> list[Path]:
        """The rank files there are now, by rank."""
        try:
            ranked = [(layout.rank_of_file(p.name), p)
                      for p in self.ranks_dir.glob(layout.RANK_FILE_PATTERN)]
        except OSError:
            return []
        return [path for rank, path in sorted(ranked, key=lambda item: item[0] or -1)]

    def monitor_pids(self) -> set[int]:
        """The pids of the monitors with a socket here (dead ones' too, until swept)."""
        try:
            names = [p.name for p in self.monitors_dir.glob(layout.MONITOR_SOCKET_PATTERN)]
        except OSError:
            return set()
        return {pid for pid in map(layout.monitor_pid, names) if pid is not None}


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
        entries = [p for p in root.iterdir() if (p / layout.CONFIG).is_file()]
    except OSError:
        return []
    return sorted((RunDir(p) for p in entries),
                  key=lambda run: run.config_path.stat().st_mtime, reverse=True)
