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
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

try:
    import orjson
except ImportError:  # json alone gives the same answers, four times slower
    orjson = None

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
    error: str | None = None  # why it was not written (disk full ...); optional key


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
        fields = {"step": r.step, "path": r.path, "seconds": r.seconds}
        return head | fields | ({"error": r.error} if r.error is not None else {})
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


_INT_END = 2**63  # ints stay below: readers keep steps and counts in signed 64-bit arrays


def _uint(x: Any, key: str, low: int = 0) -> int:
    if type(x) is not int or not low <= x < _INT_END:
        raise RecordError(f"{key!r} must be an int >= {low} and < 2**63")
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


# The hot path: a monitor decodes every step record of every rank, tens of thousands a
# second. A frozen dataclass's __init__ (object.__setattr__ per field) and one checker call
# per field took two thirds of that. `_read_step` takes only the plain shape the step probe
# writes (floats as floats, every key there) and fills the slots directly; anything else
# goes to `_parse_step`, which decides and says why. tests/test_records_fast_json.py checks
# that both give the same answers.


def _slot_filler(cls: type, names: tuple[str, ...]) -> Callable[..., Any]:
    """A constructor of `cls` (a frozen slots dataclass) from values in `names` order,
    for values already checked."""
    setters = {f.name: cls.__dict__[f.name].__set__ for f in fields(cls)}
    if set(names) != set(setters):
        raise TypeError(f"{cls.__name__} fields changed: update records._read_step")
    ordered = tuple(setters[name] for name in names)
    new = object.__new__

    def build(*values: Any) -> Any:
        record = new(cls)
        for set_value, value in zip(ordered, values, strict=True):
            set_value(record, value)
        return record

    return build


_STEP_KEYS = ("rank", "t", "step", "dt", "phases", "tokens", "loss", "lr", "micro_steps", "sync",
              "nosync_backward", "synced_backward", "drops", "lost")
_SYNC_KEYS = ("exposed", "comm", "overlap", "bytes", "buckets", "last_ready")
_step_values, _new_step = operator.itemgetter(*_STEP_KEYS), _slot_filler(StepRecord, _STEP_KEYS)
_sync_values, _new_sync = operator.itemgetter(*_SYNC_KEYS), _slot_filler(SyncTiming, _SYNC_KEYS)
_INF = math.inf


def _read_step(obj: dict) -> StepRecord:
    try:
        (rank, t, step, dt, phases, tokens, loss, lr, micro_steps, sync, nosync, synced, drops,
         lost) = _step_values(obj)
    except KeyError:
        return _parse_step(obj)
    plain = (type(rank) is type(step) is type(tokens) is type(micro_steps) is type(drops)
             is type(lost) is int and 0 <= rank < _INT_END and 0 <= step < _INT_END
             and 0 <= tokens < _INT_END and 1 <= micro_steps < _INT_END
             and 0 <= drops < _INT_END and 0 <= lost < _INT_END
             and type(t) is float and -_INF < t < _INF and type(dt) is float and 0.0 <= dt < _INF
             and (loss is None or type(loss) is float)
             and (lr is None or type(lr) is float and -_INF < lr < _INF)
             and (nosync is None or type(nosync) is float and 0.0 <= nosync < _INF)
             and (synced is None or type(synced) is float and 0.0 <= synced < _INF)
             and type(phases) is dict and (sync is None or type(sync) is dict))
    if not plain:
        return _parse_step(obj)
    for seconds in phases.values():
        if type(seconds) is not float or not 0.0 <= seconds < _INF:
            return _parse_step(obj)
    if sync is not None:
        try:
            exposed, comm, overlap, nbytes, buckets, last_ready = _sync_values(sync)
        except KeyError:
            return _parse_step(obj)
        if not (type(exposed) is type(comm) is type(overlap) is type(last_ready) is float
                and type(nbytes) is type(buckets) is int
                and 0 <= nbytes < _INT_END and 0 <= buckets < _INT_END
                and 0.0 <= exposed < _INF and 0.0 <= comm < _INF and 0.0 <= overlap < _INF
                and -_INF < last_ready < _INF):
            return _parse_step(obj)
        sync = _new_sync(exposed, comm, overlap, nbytes, buckets, last_ready)
    return _new_step(rank, t, step, dt, phases, tokens, loss, lr, micro_steps, sync, nosync,
                     synced, drops, lost)


def _parse_checkpoint(obj: dict) -> CheckpointRecord:
    return CheckpointRecord(
        rank=_uint(obj["rank"], "rank"),
        t=_finite(obj["t"], "t"),
        step=_uint(obj["step"], "step"),
        path=_str(obj["path"], "path"),
        seconds=_seconds(obj["seconds"], "seconds"),
        error=None if obj.get("error") is None else _str(obj["error"], "error"),
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
    "step": _read_step,
    "checkpoint": _parse_checkpoint,
    "end": _parse_end,
}


# orjson parses a record in a quarter of json's time, but its answers differ on some input:
# it rejects NaN, Infinity, lone surrogates, a BOM and floats out of range (json's answer is
# taken then), turns integers past 64 bits into floats, and nests deeper than json's recursion
# limit. So it only sees bytes without a run of 19 digits and with few brackets; json is the
# reference for everything else (tests/test_records_fast_json.py compares the two).
_MARKS = bytes.maketrans(b"0123456789[{", b"\0" * 10 + b"\1\1")
_LONG_NUMBER = b"\0" * 19  # 2**63 has 19 digits
_FAST_BRACKETS = 64


def _loads(data: bytes | str) -> Any:
    if orjson is not None and type(data) is bytes:
        marks = data.translate(_MARKS)
        if _LONG_NUMBER not in marks and marks.count(1) <= _FAST_BRACKETS:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
    return json.loads(data)


def decode(data: bytes | str) -> Record:
    """Parse and validate one record (a trailing newline is fine); RecordError if bad."""
    size = len(data)
    if type(data) is str and size > MAX_RECORD_BYTES // 4:
        size = len(data.encode(errors="surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    try:
        obj = _loads(data)
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
