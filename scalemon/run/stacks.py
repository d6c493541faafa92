"""Every rank's Python stack through py-spy (`scalemon attach --stacks`), or
exactly why it cannot be had: py-spy missing, or ptrace not permitted and how to allow it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PTRACE_SCOPES = {
    "0": "classic: any process of the same user may be traced",
    "1": "restricted: only a process's ancestors may trace it",
    "2": "admin-only: tracing needs CAP_SYS_PTRACE",
    "3": "no tracing at all until reboot",
}


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
