"""The one versioned record schema: what step probes write and every reader reads.

Pure: no I/O, no torch. One record is one compact JSON object on one line (see
docs/internals.md, "Records"). `decode` validates everything and raises only
`RecordError`, so a reader can count and skip bad input instead of crashing.
`encode` runs the same validation, so nothing is written that readers reject.
Keys a reader does not know are ignored, so newer writers stay readable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 65536
END_REASONS = ("finished", "stopped", "error")

JSONScalar = None | bool | int | float | str


class RecordError(ValueError):
    """Input that is not a valid record; the message is a short reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRecord:
    kind: ClassVar[str] = "start"
    rank: int
    t: float
    pid: int
    host: str
    world: int
    local_rank: int
    meta: dict[str, JSONScalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncTiming:
    """Gradient sync of one step, from the DDP comm hook (seconds, bytes, unix time)."""

    exposed: float
    comm: float
    overlap: float
    bytes: int
    buckets: int
    last_ready: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    kind: ClassVar[str] = "step"
    rank: int
    t: float
    step: int
    dt: float
    phases: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    loss: float | None = None
    lr: float | None = None
    micro_steps: int = 1
    sync: SyncTiming | None = None
    nosync_backward: float | None = None
    synced_backward: float | None = None
    drops: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointRecord:
    kind: ClassVar[str] = "checkpoint"
    rank: int
    t: float
    step: int
    path: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EndRecord:
    kind: ClassVar[str] = "end"
    rank: int
    t: float
    reason: str
    step: int | None = None
    message: str | None = None


Record = StartRecord | StepRecord | CheckpointRecord | EndRecord


# --- encoding -------------------------------------------------------------------------


def _sync_dict(s: SyncTiming) -> dict[str, Any]:
    return {
        "exposed": s.exposed,
        "comm": s.comm,
        "overlap": s.overlap,
        "bytes": s.bytes,
        "buckets": s.buckets,
        "last_ready": s.last_ready,
    }


def _to_dict(r: Record) -> dict[str, Any]:
    head = {"v": SCHEMA_VERSION, "kind": r.kind, "rank": r.rank, "t": r.t}
    if type(r) is StepRecord:
        return head | {
            "step": r.step,
            "dt": r.dt,
            "phases": r.phases,
            "loss": r.loss,
            "tokens": r.tokens,
            "lr": r.lr,
            "micro_steps": r.micro_steps,
            "sync": None if r.sync is None else _sync_dict(r.sync),
            "nosync_backward": r.nosync_backward,
            "synced_backward": r.synced_backward,
            "drops": r.drops,
            "lost": r.lost,
        }
    if type(r) is StartRecord:
        return head | {
            "pid": r.pid,
            "host": r.host,
            "world": r.world,
            "local_rank": r.local_rank,
            "meta": r.meta,
        }
    if type(r) is CheckpointRecord:
        return head | {"step": r.step, "path": r.path, "seconds": r.seconds}
    if type(r) is EndRecord:
        return head | {"step": r.step, "reason": r.reason, "message": r.message}
    raise TypeError(f"not a record: {type(r).__name__}")


def encode(record: Record) -> bytes:
    """One JSON line ending in newline; RecordError if the record would not decode."""
    obj = _to_dict(record)
    try:
        line = json.dumps(obj, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise RecordError(f"not encodable: {e}") from None
    # Round-trip through the parsed form so a writer can never emit what readers reject
    # (a bool where an int belongs, a negative duration, a list in meta ...).
    _parse(_PARSERS[record.kind], json.loads(line))
    data = line.encode() + b"\n"
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    return data


# --- decoding -------------------------------------------------------------------------
# Value checkers. `type(x) is int` rejects bool (a subclass of int); ints are accepted where
# floats belong (other writers may print 0 for 0.0) and converted. Parsers read keys with
# obj[key] inside one try block: a missing key is a KeyError turned into a RecordError, which
# keeps decode at a few microseconds (the monitor ingests tens of thousands a second).


def _uint(x: Any, key: str, low: int = 0) -> int:
    if type(x) is not int or x < low:
        raise RecordError(f"{key!r} must be an int >= {low}")
    return x


def _float(x: Any, key: str) -> float:
    if type(x) is float:
        return x
    if type(x) is int:
        try:
            return float(x)
        except OverflowError:
            raise RecordError(f"{key!r} out of range") from None
    raise RecordError(f"{key!r} must be a number")


def _finite(x: Any, key: str) -> float:
    x = _float(x, key)
    if not math.isfinite(x):
        raise RecordError(f"{key!r} must be finite")
    return x


def _seconds(x: Any, key: str) -> float:
    if type(x) is not float:
        x = _float(x, key)
    if not 0.0 <= x < math.inf:  # NaN fails this too
        raise RecordError(f"{key!r} must be finite and >= 0")
    return x


def _opt_seconds(x: Any, key: str) -> float | None:
    return None if x is None else _seconds(x, key)


def _str(x: Any, key: str) -> str:
    if type(x) is not str:
        raise RecordError(f"{key!r} must be a string")
    return x


def _object(x: Any, key: str) -> dict:
    if type(x) is not dict:
        raise RecordError(f"{key!r} must be an object")
    return x


def _parse_start(obj: dict) -> StartRecord:
    rank = _uint(obj["rank"], "rank")
    world = _uint(obj["world"], "world", 1)
    if rank >= world:
        raise RecordError("'rank' must be < 'world'")
    meta = _object(obj["meta"], "meta")
    for x in meta.values():
        if x is not None and type(x) not in (bool, int, float, str):
            raise RecordError("'meta' values must be JSON scalars")
    return StartRecord(
        rank=rank,
        t=_finite(obj["t"], "t"),
        pid=_uint(obj["pid"], "pid"),
        host=_str(obj["host"], "host"),
        world=world,
        local_rank=_uint(obj["local_rank"], "local_rank"),
        meta=meta,
    )


def _parse_sync(x: Any) -> SyncTiming | None:
    if x is None:
        return None
    _object(x, "sync")
    return SyncTiming(
        exposed=_seconds(x["exposed"], "exposed"),
        comm=_seconds(x["comm"], "comm"),
        overlap=_seconds(x["overlap"], "overlap"),
        bytes=_uint(x["bytes"], "bytes"),
        buckets=_uint(x["buckets"], "buckets"),
        last_ready=_finite(x["last_ready"], "last_ready"),
    )


def _parse_step(obj: dict) -> StepRecord:
    phases = {k: _seconds(v, "phases") for k, v in _object(obj["phases"], "phases").items()}
    loss = obj["loss"]
    lr = obj["lr"]
    return StepRecord(
        rank=_uint(obj["rank"], "rank"),
        t=_finite(obj["t"], "t"),
        step=_uint(obj["step"], "step"),
        dt=_seconds(obj["dt"], "dt"),
        phases=phases,
        loss=None if loss is None else _float(loss, "loss"),  # NaN and inf must get through
        tokens=_uint(obj["tokens"], "tokens"),
        lr=None if lr is None else _finite(lr, "lr"),
        micro_steps=_uint(obj["micro_steps"], "micro_steps", 1),
        sync=_parse_sync(obj["sync"]),
        nosync_backward=_opt_seconds(obj["nosync_backward"], "nosync_backward"),
        synced_backward=_opt_seconds(obj["synced_backward"], "synced_backward"),
        drops=_uint(obj["drops"], "drops"),
        lost=_uint(obj["lost"], "lost"),
    )


def _parse_checkpoint(obj: dict) -> CheckpointRecord:
    return CheckpointRecord(
        rank=_uint(obj["rank"], "rank"),
        t=_finite(obj["t"], "t"),
        step=_uint(obj["step"], "step"),
        path=_str(obj["path"], "path"),
        seconds=_seconds(obj["seconds"], "seconds"),
    )


def _parse_end(obj: dict) -> EndRecord:
    step = obj["step"]
    reason = _str(obj["reason"], "reason")
    if reason not in END_REASONS:
        raise RecordError(f"'reason' must be one of {', '.join(END_REASONS)}")
    message = obj["message"]
    if message is not None:
        _str(message, "message")
    return EndRecord(
        rank=_uint(obj["rank"], "rank"),
        t=_finite(obj["t"], "t"),
        reason=reason,
        step=None if step is None else _uint(step, "step"),
        message=message,
    )


_PARSERS = {
    "start": _parse_start,
    "step": _parse_step,
    "checkpoint": _parse_checkpoint,
    "end": _parse_end,
}


def decode(data: bytes | str) -> Record:
    """Parse and validate one record (a trailing newline is fine); RecordError if bad."""
    size = len(data)
    if type(data) is str and size > MAX_RECORD_BYTES // 4:
        size = len(data.encode(errors="surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RecordError("not JSON") from None
    if type(obj) is not dict:
        raise RecordError("not a JSON object")
    v = obj.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:
        raise RecordError("unsupported version")
    kind = obj.get("kind")
    parse = _PARSERS.get(kind) if type(kind) is str else None
    if parse is None:
        raise RecordError("unknown kind")
    return _parse(parse, obj)


def _parse(parse: Callable[[dict], Record], obj: dict) -> Record:
    try:
        return parse(obj)
    except KeyError as e:
        raise RecordError(f"missing {e.args[0]!r}") from None
