"""Reading a run's stderr.log (its tail, from scalemon.io.tail.read_tail): the ranks' own last
words apart from torchrun's failure report.

When a rank fails, torchrun ends stderr with its own report (log lines, its own traceback and a
summary box). Its last lines say only "exitcode: 1"; the rank's traceback is above them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# torch.distributed.elastic's log lines: "E1124 15:29:47.415000 16656 .../api.py:1002] ..."
LAUNCHER_LOG = re.compile(r"^[EWIF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S*torch/distributed/")
FAILURE = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)(?:[^\n]*\((SIG\w+)\))?",
                     re.S)


@dataclass(frozen=True)
class RankFailure:
    rank: int
    exit_code: int  # as a shell would say it: killed by signal N is 128 + N
    signal: str | None  # "SIGKILL" ...


def first_failure(text: str) -> RankFailure | None:
    """The rank torchrun names as the root cause (its summary lists that one first)."""
    start = text.rfind("Root Cause")
    match = FAILURE.search(text, start if start >= 0 else 0)
    if match is None:
        return None
    code = int(match.group(2))
    return RankFailure(rank=int(match.group(1)), exit_code=128 - code if code < 0 else code,
                       signal=match.group(3))


def _report_start(lines: list[str]) -> int:
    """Index of the first line of torchrun's own failure report (len(lines) if none)."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback") and any(
                "torch/distributed/run.py" in line for line in lines[i + 1:i + 6]):
            start = i
            while start > 0 and (LAUNCHER_LOG.match(lines[start - 1]) or
                                 not lines[start - 1].strip()):
                start -= 1
            return start
    return len(lines)


def rank_error_lines(text: str, count: int) -> list[str]:
    """The last `count` non-blank lines the ranks wrote, then which rank failed first."""
    lines = text.splitlines()
    ours = [line.rstrip() for line in lines[:_report_start(lines)] if line.strip()]
    failure = first_failure(text)
    if failure is not None:
        # torchrun marks each rank's lines "[rankN]:"; its peers' errors only echo its fall.
        own = [line for line in ours if line.startswith(f"[rank{failure.rank}]:")]
        ours = own or ours
    ours = ours[-count:]
    if failure is not None:
        how = f"killed by {failure.signal}" if failure.signal else f"exit code {failure.exit_code}"
        ours.append(f"(torchrun: rank {failure.rank} failed first, {how})")
    return ours


MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")


def missing_module(text: str) -> str | None:
    """The module a rank could not import ('wandb'), when that is how it failed."""
    match = MISSING_MODULE.search(text)
    return match.group(1) if match else None
