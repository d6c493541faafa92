"""The names inside a run dir, in one place: the probe that writes them, the monitor that reads
them and the relay that copies them all use these (docs/internals.md, "Run dir").

Names only (relative paths as text); `scalemon.io.rundir.RunDir` joins them to a real path.
"""

from __future__ import annotations

RUN_DIR_ENV = "SCALEMON_RUN_DIR"  # set for training processes: switches the probe on
HOME_ENV = "SCALEMON_HOME"  # overrides the state dir (tests, several installs)

CONFIG = "config.json"
STATUS = "status.json"  # the supervisor's record of how the launcher ended
RELAY_STATUS = "relay.json"  # multi-node runs: the relay's state, for the monitors
RANKS = "ranks"
MONITORS = "monitors"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
SUPERVISOR_LOG = "supervisor.log"
PYTHON_PATH = "python-path"  # for ranks of another interpreter (--python): scalemon, linked
SUBDIRS = (RANKS, MONITORS, LOGS, CHECKPOINTS)

RANK_FILE_PATTERN = "rank-*.jsonl"
MONITOR_SOCKET_PATTERN = "*.sock"


def rank_file(rank: int) -> str:
    """One append-only record file per global rank."""
    return f"{RANKS}/rank-{rank}.jsonl"


def activity_file(rank: int) -> str:
    """The few bytes a rank overwrites in place to say where it is now (scalemon.io.activity)."""
    return f"{RANKS}/rank-{rank}.now"


def rank_of_file(name: str) -> int | None:
    """The rank a file name like 'rank-3.jsonl' is for; None for any other name."""
    stem, dot, suffix = name.partition(".")
    digits = stem[5:]
    if not stem.startswith("rank-") or not dot or suffix != "jsonl" or not digits.isdigit():
        return None
    return int(digits)


def monitor_socket(pid: int, token: str) -> str:
    """A live monitor's socket in monitors/: its pid first, so a dead monitor's can be swept."""
    return f"{pid}-{token}.sock"


def monitor_pid(name: str) -> int | None:
    """The pid in a monitor socket's name, or None."""
    pid, dash, rest = name.partition("-")
    return int(pid) if dash and rest.endswith(".sock") and pid.isdigit() else None
