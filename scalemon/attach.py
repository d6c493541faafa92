"""What `scalemon attach` watches: a scalemon run found from any of its pids, or a plain process.

From a pid, the run is found, in this order, through: `SCALEMON_RUN_DIR` in
the environment of the process or one of its ancestors (every rank and the
launcher have it), a `python -m scalemon.supervise RUN_DIR` command line among
them or among its children (the `scalemon run` monitor is the supervisor's
parent), and the pids recorded in live run dirs (config.json's supervisor and
launcher, the monitors' socket names, the ranks' start records). A process
that belongs to no run is watched as a plain training process: its process
tree for the system view, and its stdout (when that is a regular file) or
`--log FILE` for the steps. Without --log, it must look like training (Python,
or torch's launcher environment): `scalemon attach` on a shell's pid is an error.

`stacks(pids)` dumps each rank's Python stack through py-spy, or says exactly
why it cannot.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from scalemon.collector import Collector
from scalemon.launch import process_alive
from scalemon.logfollow import LogCollector, python_processes
from scalemon.rundir import RUN_DIR_ENV, RunDir, RunDirError, RunListing, describe, list_runs

LAUNCHERS = ("torch.distributed.run", "torchrun", "torch.distributed.launch")
# No packet is sent: connect() on a UDP socket only asks the kernel which interface the
# default route leaves by (192.0.2.1 is a documentation address).
DEFAULT_ROUTE_PROBE = "192.0.2.1"
_START_PID = re.compile(rb'"kind":"start"[^\n]*?"pid":(\d+)')
# Start records are read from a rank file's head (the first start) and tail (a recent
# resume), not from the whole history: the launcher's tree and SCALEMON_RUN_DIR already
# find every live rank, the start records only back them up.
START_WINDOW = 256 << 10

PROBE_SNIPPET = """\
from scalemon.probes import StepProbe
probe = StepProbe.from_env(meta={"vocab": vocab, "steps": steps})
probe.attach_ddp(model)                        # times the gradient sync (DDP comm hook)
with probe.step(step, tokens=tokens_per_step) as s:   # around each training step
    with s.phase("forward"): loss = model(x, y)
    with s.phase("backward", synced=True): loss.backward()
    with s.phase("optimizer"): opt.step(); opt.zero_grad()
    s.loss = loss.item()
# then launch it with: scalemon run --nproc-per-node N -- train.py ARGS"""

PTRACE_SCOPES = {
    "0": "classic: any process of the same user may be traced",
    "1": "restricted: only a process's ancestors may trace it",
    "2": "admin-only: tracing needs CAP_SYS_PTRACE",
    "3": "no tracing at all until reboot",
}


class AttachError(Exception):
    """Nothing to attach to, or not allowed to (one line for the CLI)."""


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
    """The run dir of a `python -m scalemon.supervise RUN_DIR` process."""
    cmd = _cmdline(proc)
    for i, arg in enumerate(cmd[:-2]):
        if arg == "-m" and cmd[i + 1] == "scalemon.supervise":
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
        pids = {pid for pid in run.read_config().get("pids", {}).values()
                if isinstance(pid, int)}
    except RunDirError:
        return set()
    with contextlib.suppress(OSError):
        pids |= {int(p.name.split("-")[0]) for p in run.monitors_dir.glob("*.sock")
                 if p.name.split("-")[0].isdigit()}
    for path in run.rank_files():
        pids |= _start_pids(path)
    return pids


def find_run(proc: psutil.Process) -> RunDir | None:
    """The scalemon run this process belongs to (as rank, launcher, supervisor or monitor)."""
    chain = _lineage(proc)
    for member in chain:
        run_dir = _environ(member).get(RUN_DIR_ENV)
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
    """No exit status yet, and a supervisor that is alive (or not yet recorded)."""
    if run.read_status() is not None:
        return False
    try:
        supervisor = run.read_config().get("pids", {}).get("supervisor")
    except RunDirError:
        return False
    return supervisor is None or process_alive(supervisor)


def _role(proc: psutil.Process, run: RunDir) -> str:
    try:
        pids = run.read_config().get("pids", {})
    except RunDirError:
        pids = {}
    if proc.pid == pids.get("supervisor") or _supervised_run(proc):
        return "the supervisor"
    if proc.pid == pids.get("launcher"):
        return "the launcher"
    rank = _environ(proc).get("RANK")
    if rank is not None and _environ(proc).get(RUN_DIR_ENV):
        return f"rank {rank}"
    if any(_supervised_run(child) for child in _children(proc)):
        return "the `scalemon run` monitor"
    if any(p.name.startswith(f"{proc.pid}-") for p in run.monitors_dir.glob("*.sock")):
        return "a monitor"
    return "a process"


def running_runs() -> list[RunListing]:
    """Runs whose supervisor is alive (or that are just starting), newest first."""
    out = []
    for run in list_runs():
        try:
            listing = describe(run)
        except RunDirError:
            continue
        if listing.state in ("running", "starting"):
            out.append(listing)
    return out


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
    world = env.get("WORLD_SIZE", "")
    return Target(pid=pid, name=name, log=log, log_note=note, root=_tree_root(proc),
                  world=int(world) if world.isdigit() and int(world) > 0 else None,
                  master_addr=env.get("MASTER_ADDR"))


# --- watching ------------------------------------------------------------------------


class RunWatch(Collector):
    """A live Collector (system view on) that also says when processes of the run exit.

    The first poll returns at once (the history is folded already). The pid
    attached through may exit (event "process N exited") while the run goes
    on. The supervisor exiting without writing status.json (killed) ends the
    run as failed: nothing will ever record how it ended.
    """

    def __init__(self, run: RunDir, pid: int | None = None) -> None:
        super().__init__(run, system=True)
        self.pid = pid
        self._polled = False

    def poll(self, timeout: float) -> int:
        # The history is folded already: the first screen need not wait for a datagram.
        count = super().poll(timeout if self._polled else 0)
        self._polled = True
        now = time.time()
        if self.pid is not None and not process_alive(self.pid):
            self.state.note(now, "info", f"process {self.pid} exited")
            self.pid = None
        if self.state.status is None:
            supervisor = self._supervisor()
            if supervisor and not process_alive(supervisor):
                count += self.read_files()  # it writes the status just before it exits
                if self.state.status is None:
                    why = f"supervisor {supervisor} exited without recording the run's end"
                    self.state.note(now, "error", f"{why} (killed?)")
                    self.state.status = {"exit_code": None, "ended": now, "reason": why}
        return count

    def _supervisor(self) -> int | None:
        pid = self.config.get("pids", {}).get("supervisor")
        if pid is None:  # the supervisor records itself a moment after the run is created
            try:
                self.config["pids"] = self.run.read_config().get("pids", {})
            except RunDirError:
                return None
            pid = self.config["pids"].get("supervisor")
        return pid


def open_collector(target: Target, steps: int | None = None, vocab: int | None = None):
    """The collector for a target: RunWatch for a scalemon run, LogCollector otherwise."""
    if target.run is not None:
        return RunWatch(target.run, target.pid)
    return LogCollector(target.log, pid=target.pid, root=target.root,
                        name=target.log.name if target.log else f"pid {target.pid}",
                        steps=steps, vocab=vocab, world=target.world,
                        master_addr=target.master_addr or DEFAULT_ROUTE_PROBE)


def stack_pids(collector) -> list[int]:
    """The live processes whose stacks `stacks` should dump: the ranks, or the plain tree."""
    if isinstance(collector, LogCollector):
        return python_processes(collector.root) if collector.root else []
    ranks = sorted(collector.state.ranks.values(), key=lambda info: info.rank)
    return [info.pid for info in ranks if info.pid and process_alive(info.pid)]


# --- py-spy --------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (a venv's bin/)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def ptrace_scope() -> str | None:
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return None


def ptrace_advice(pid: int) -> str:
    scope = ptrace_scope()
    if scope is None:
        where = "ptrace was refused (no Yama LSM here: a container without CAP_SYS_PTRACE?)"
    else:
        where = (f"ptrace is not permitted (kernel.yama.ptrace_scope = {scope}: "
                 f"{PTRACE_SCOPES.get(scope, 'unknown setting')})")
    return (f"{where}.\n"
            "  allow it for everyone: sudo sysctl kernel.yama.ptrace_scope=0\n"
            f"  or run py-spy with CAP_SYS_PTRACE: sudo {py_spy() or 'py-spy'} dump --pid {pid}\n"
            "  (in a container: docker run --cap-add SYS_PTRACE ...)")


def _denied(text: str) -> bool:
    return any(word in text for word in ("Permission denied", "Operation not permitted",
                                         "os error 1)", "os error 13)", "EPERM"))


def stacks(pids: list[int], timeout: float = 20.0) -> str:
    """Every given process's current Python stack (py-spy dump), or why it cannot be had."""
    if not pids:
        return "no live Python processes to dump (the run has no ranks running here)"
    exe = py_spy()
    if exe is None:
        return ("py-spy is not installed, so the ranks' stacks cannot be read.\n"
                f"  install it: {sys.executable} -m pip install py-spy\n"
                "  then press the key again, or run: scalemon attach PID --stacks")
    blocks = []
    for pid in pids:
        try:
            result = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True,
                                    text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            blocks.append(f"=== pid {pid}: py-spy did not answer within {timeout:.0f} s")
            continue
        except OSError as error:
            blocks.append(f"=== pid {pid}: cannot run {exe}: {error.strerror or error}")
            continue
        if result.returncode == 0:
            blocks.append(f"=== pid {pid}\n{result.stdout.rstrip()}")
            continue
        output = (result.stderr.strip() or result.stdout.strip() or
                  f"exit code {result.returncode}")
        block = f"=== pid {pid}: py-spy failed: {output.splitlines()[-1]}"
        if _denied(output):
            block += "\n" + ptrace_advice(pid)
        blocks.append(block)
    return "\n\n".join(blocks)
