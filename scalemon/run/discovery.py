"""What `scalemon attach` watches: a scalemon run found from any of its pids, or a plain process.

From a pid, the run is found, in this order, through: `SCALEMON_RUN_DIR` in
the environment of the process or one of its ancestors (every rank and the
launcher have it), a `python -m scalemon.run.supervise RUN_DIR` command line among
them or among its children (the `scalemon run` monitor is the supervisor's
parent), and the pids recorded in live run dirs (config.json's supervisor and
launcher, the monitors' socket names, the ranks' start records). A process
that belongs to no run is watched as a plain training process: its process
tree for the system view, and its stdout (when that is a regular file) or
`--log FILE` for the steps. Without --log, it must look like training (Python,
or torch's launcher environment): `scalemon attach` on a shell's pid is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import psutil

from scalemon.core import layout, relaunch
from scalemon.core.errors import AttachError, RunDirError
from scalemon.io.listing import describe
from scalemon.io.processes import SUPERVISOR_MODULE, process_alive, python_processes
from scalemon.io.rundir import RunDir, list_runs
from scalemon.sources.base import Source
from scalemon.sources.log import LogSource
from scalemon.sources.rundir import RunDirSource, RunWatch

LAUNCHERS = ("torch.distributed.run", "torchrun", "torch.distributed.launch")
# No packet is sent: connect() on a UDP socket only asks the kernel which interface the
# default route leaves by (192.0.2.1 is a documentation address).
DEFAULT_ROUTE_PROBE = "192.0.2.1"
_START_PID = re.compile(rb'"kind":"start"[^\n]*?"pid":(\d+)')
# Start records are read from a rank file's head (the first start) and tail (a recent
# resume), not from the whole history: the launcher's tree and SCALEMON_RUN_DIR already
# find every live rank, the start records only back them up.
START_WINDOW = 256 << 10


@dataclass(frozen=True)
class Target:
    """What to watch: a scalemon run (`run`), or a plain process and its log."""

    pid: int | None = None  # the pid given (None: --run or --log alone)
    run: RunDir | None = None
    role: str = ""  # what the pid is to the run: "rank 1", "the launcher", ...
    name: str = ""  # a plain process's command, for the header
    log: Path | None = None  # a plain process's stdout file, or --log
    log_note: str | None = None  # why there is no log to read
    root: int | None = None  # top of a plain process's tree (its launcher, or itself)
    world: int | None = None  # WORLD_SIZE, when the environment says it
    master_addr: str | None = None  # toward which the run's traffic goes (picks the interface)
    relaunch: str | None = None  # the `scalemon run` command that gives the full view


# --- processes -----------------------------------------------------------------------


def _process(pid: int) -> psutil.Process:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            raise AttachError(f"process {pid} has exited (a zombie waiting for its parent)")
        return proc
    except psutil.NoSuchProcess:
        raise AttachError(f"no process with pid {pid}") from None
    except psutil.AccessDenied:
        raise AttachError(f"not allowed to look at process {pid}") from None


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.Error, OSError):
        return []


def _lineage(proc: psutil.Process) -> list[psutil.Process]:
    """The process and its ancestors, nearest first."""
    try:
        return [proc, *proc.parents()]
    except psutil.Error:
        return [proc]


def _children(proc: psutil.Process) -> list[psutil.Process]:
    """Direct children only: a `scalemon run` monitor's child is the supervisor. None for
    pid 1: it adopts every orphan (a supervisor whose monitor left) without being a monitor."""
    if proc.pid == 1:
        return []
    try:
        return proc.children()
    except psutil.Error:
        return []


def _other_user(proc: psutil.Process) -> str | None:
    """The owner's name when the process is another user's (and we are not root)."""
    try:
        uid = proc.uids().real
    except psutil.Error:
        return None
    if uid == os.getuid() or os.getuid() == 0:
        return None
    try:
        return proc.username()
    except (psutil.Error, KeyError):
        return f"uid {uid}"


# --- finding a scalemon run ----------------------------------------------------------


def _run_at(path: str) -> RunDir | None:
    try:
        run = RunDir(Path(path))
        run.read_config()
        return run
    except RunDirError:
        return None


def _supervised_run(proc: psutil.Process) -> RunDir | None:
    """The run dir of a `python -m scalemon.run.supervise RUN_DIR` process."""
    cmd = _cmdline(proc)
    for i, arg in enumerate(cmd[:-2]):
        if arg == "-m" and cmd[i + 1] == SUPERVISOR_MODULE:
            return _run_at(cmd[i + 2])
    return None


def _start_pids(path: Path, window: int = START_WINDOW) -> set[int]:
    """Rank pids from the start records at the head and in the tail of a rank file."""
    try:
        with open(path, "rb") as f:
            data = f.read(window)
            size = os.fstat(f.fileno()).st_size
            if size > window:
                f.seek(max(window, size - window))
                data += b"\n" + f.read()
    except OSError:
        return set()
    return {int(pid) for pid in _START_PID.findall(data)}


def recorded_pids(run: RunDir) -> set[int]:
    """Pids a run dir names: supervisor, launcher, live monitors and the ranks' starts."""
    try:
        pids = set(run.read_config().pids.values())
    except RunDirError:
        return set()
    pids |= run.monitor_pids()
    for path in run.rank_files():
        pids |= _start_pids(path)
    return pids


def find_run(proc: psutil.Process) -> RunDir | None:
    """The scalemon run this process belongs to (as rank, launcher, supervisor or monitor)."""
    chain = _lineage(proc)
    for member in chain:
        run_dir = _environ(member).get(layout.RUN_DIR_ENV)
        run = (_run_at(run_dir) if run_dir else None) or _supervised_run(member)
        if run is not None:
            return run
    for child in _children(proc):
        run = _supervised_run(child)
        if run is not None:
            return run
    chain_pids = {member.pid for member in chain}
    for run in list_runs():
        # Only live runs: a finished run's pids may belong to other processes now.
        if _live(run) and recorded_pids(run) & chain_pids:
            return run
    return None


def _live(run: RunDir) -> bool:
    try:
        return describe(run).live
    except RunDirError:
        return False


def _role(proc: psutil.Process, run: RunDir) -> str:
    try:
        pids = dict(run.read_config().pids)
    except RunDirError:
        pids = {}
    if proc.pid == pids.get("supervisor") or _supervised_run(proc):
        return "the supervisor"
    if proc.pid == pids.get("launcher"):
        return "the launcher"
    rank = _environ(proc).get("RANK")
    if rank is not None and _environ(proc).get(layout.RUN_DIR_ENV):
        return f"rank {rank}"
    if any(_supervised_run(child) for child in _children(proc)):
        return "the `scalemon run` monitor"
    if proc.pid in run.monitor_pids():
        return "a monitor"
    return "a process"


# --- plain processes -----------------------------------------------------------------


def output_file(pid: int) -> tuple[Path | None, str | None]:
    """(the regular file the process writes its stdout or stderr to, or why there is none)."""
    seen = []
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except PermissionError:
            return None, f"process {pid}'s output is not readable by this user"
        except OSError:
            continue
        if target.startswith("/") and Path(target).is_file():
            return Path(target), None
        seen.append(target)
    where = f"writes its output to {seen[0]}, not to a file" if seen else "has no output open"
    return None, f"process {pid} {where}; give its log with --log FILE to see its steps"


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _is_python(proc: psutil.Process) -> bool:
    """A Python interpreter (torch names its main thread, and so the process, pt_main_thread)."""
    names = [_name(proc), *_cmdline(proc)[:1]]
    return any("python" in Path(name).name.lower() or name == "pt_main_thread" for name in names)


def _may_train(proc: psutil.Process, env: dict[str, str]) -> bool:
    """A plain process that could be training: torch's launcher environment, or Python in it or
    just under it (a shell or `uv run` wrapper)."""
    if "WORLD_SIZE" in env or "RANK" in env:
        return True
    return any(_is_python(member) for member in [proc, *_children(proc)])


def _tree_root(proc: psutil.Process) -> int:
    """The launcher above a rank (torchrun), so the system view sees every rank; else itself."""
    try:
        parent = proc.parent()
    except psutil.Error:
        parent = None
    if parent is not None and any(name in " ".join(_cmdline(parent)) for name in LAUNCHERS):
        return parent.pid
    return proc.pid


def target_for_pid(pid: int, log: Path | None = None) -> Target:
    """The run a pid belongs to, or the plain process to watch; AttachError when neither."""
    proc = _process(pid)
    run = find_run(proc)
    if run is not None:
        if log is not None:
            raise AttachError(f"process {pid} is part of scalemon run {run.name}: its steps "
                              "are in the run dir, --log is not needed")
        return Target(pid=pid, run=run, role=_role(proc, run))
    owner = _other_user(proc)
    if owner and log is None:
        raise AttachError(f"process {pid} belongs to user {owner}: scalemon cannot read its "
                          "environment or output; attach as that user (or root), or give its "
                          "log with --log FILE")
    env = _environ(proc)
    name = " ".join(_cmdline(proc))[:80] or _name(proc)
    if log is None and not _may_train(proc, env):
        raise AttachError(f"process {pid} ({name}) does not look like a training run: not part "
                          "of a scalemon run, not Python, no torch launcher environment; give "
                          "its log with --log FILE to watch it anyway")
    note = None
    if log is None:
        log, note = output_file(pid)
    root = _tree_root(proc)
    if "WORLD_SIZE" not in env:  # a launcher: its ranks have the launch environment
        env = next((e for child in _children(proc) if "WORLD_SIZE" in (e := _environ(child))),
                   env)
    world = env.get("WORLD_SIZE", "")
    return Target(pid=pid, name=name, log=log, log_note=note, root=root,
                  world=int(world) if world.isdigit() and int(world) > 0 else None,
                  master_addr=env.get("MASTER_ADDR"), relaunch=_relaunch(root))


def _relaunch(pid: int) -> str | None:
    """`cd DIR && scalemon run ... -- ...`: what the process would be under scalemon."""
    import shlex
    import shutil
    import sys

    try:
        proc = psutil.Process(pid)
        cmdline, cwd = proc.cmdline(), proc.cwd()
    except (psutil.Error, OSError):
        return None
    if cmdline and Path(cmdline[0]).name.startswith("python"):
        # The interpreter as its shell found it (a venv's python is a symlink: not resolved).
        found = cmdline[0] if "/" in cmdline[0] else \
            shutil.which(cmdline[0], path=_environ(proc).get("PATH"))
        cmdline = [os.path.join(cwd, found) if found else cmdline[0], *cmdline[1:]]
    command = relaunch.scalemon_command(cmdline, os.path.abspath(sys.executable))
    if command is None:
        return None
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command


# --- watching ------------------------------------------------------------------------


def open_source(target: Target, steps: int | None = None, vocab: int | None = None) -> Source:
    """What to watch a target through: RunWatch for a scalemon run, LogSource otherwise."""
    if target.run is not None:
        return RunWatch(target.run, target.pid)
    return LogSource(target.log, pid=target.pid, root=target.root,
                     name=target.log.name if target.log else f"pid {target.pid}",
                     steps=steps, vocab=vocab, world=target.world,
                     master_addr=target.master_addr or DEFAULT_ROUTE_PROBE,
                     relaunch=target.relaunch)


def stack_pids(source: Source) -> list[int]:
    """The live processes whose stacks `stacks` should dump: the ranks, or the plain tree."""
    if isinstance(source, LogSource):
        return python_processes(source.root) if source.root else []
    assert isinstance(source, RunDirSource)
    ranks = sorted(source.state.ranks.values(), key=lambda info: info.rank)
    return [info.pid for info in ranks if info.pid and process_alive(info.pid)]
