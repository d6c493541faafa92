"""Where each rank is right now: the format of the tiny per-rank file the step probe overwrites
in place (scalemon.io.activity writes and reads it).

Step records say what a rank has finished; this says what it is doing: the step and phase it
is in and since when, and since when its oldest collective (a gradient allreduce, or the loop's
own) has been waiting. A rank stuck in sync shows as waiting; the rank it waits for shows in
some other phase. The file outlives the rank, so after a SIGKILL it still says where it died.

    ranks/rank-<RANK>.now   40 bytes: step (int64), phase (16 bytes UTF-8, NUL padded),
                            phase since (unix s, float64) | waiting since (float64, 0: none)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

PHASE = struct.Struct("<q16sd")  # written by the training thread
WAITING = struct.Struct("<d")  # written by the backend's thread too
SIZE = PHASE.size + WAITING.size


@dataclass(frozen=True)
class Activity:
    step: int  # the step in progress, or the last one begun
    phase: str  # a phase name; "step" between phases; "between steps"; "ended"
    since: float  # unix time the phase began
    waiting_since: float | None  # unix time the oldest unfinished collective began


def decode(data: bytes) -> Activity | None:
    """The activity in a file's bytes, or None when they are not one."""
    if len(data) != SIZE:
        return None
    step, name, since = PHASE.unpack_from(data)
    (waiting,) = WAITING.unpack_from(data, PHASE.size)
    if not math.isfinite(since) or not math.isfinite(waiting):
        return None
    phase = name.rstrip(b"\0").decode(errors="replace")
    return Activity(step=step, phase=phase, since=since,
                    waiting_since=waiting if waiting > 0 else None)
