"""The validation rules of the record schema: what `codec.decode` accepts, field by field.

`type(x) is int` rejects bool (a subclass of int); ints are accepted where floats belong (other
writers may print 0 for 0.0) and converted. A missing required key is a KeyError that `parse`
turns into a RecordError. These are the reference rules: `codec.decode` takes the step records
the probe writes through msgspec, by the bounds on the records' field types, and every other
line through here; tests/unit/test_records_fast_json.py checks that both give the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from scalemon.core.errors import RecordError
from scalemon.core.records import (
    END_REASONS,
    INT_END,
    CheckpointRecord,
    CollectiveTiming,
    EndRecord,
    MetaRecord,
    Record,
    StartRecord,
    StepRecord,
    SyncTiming,
)


def _uint(x: Any, key: str, low: int = 0) -> int:
    if type(x) is not int or not low <= x < INT_END:
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


def _meta(x: Any) -> dict:
    meta = _object(x, "meta")
    for value in meta.values():
        if value is not None and type(value) not in (bool, int, float, str):
            raise RecordError("'meta' values must be JSON scalars")
    return meta


def _parse_start(obj: dict) -> StartRecord:
    rank = _uint(obj["rank"], "rank")
    world = _uint(obj["world"], "world", 1)
    if rank >= world:
        raise RecordError("'rank' must be < 'world'")
    meta = _meta(obj["meta"])
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


def _parse_collectives(x: Any) -> CollectiveTiming | None:
    if x is None:
        return None
    _object(x, "collectives")
    return CollectiveTiming(
        count=_uint(x["count"], "count"),
        bytes=_uint(x["bytes"], "bytes"),
        blocked=_seconds(x["blocked"], "blocked"),
        first_launch=_finite(x["first_launch"], "first_launch"),
    )


def _parse_meta(obj: dict) -> MetaRecord:
    return MetaRecord(rank=_uint(obj["rank"], "rank"), t=_finite(obj["t"], "t"),
                      meta=_meta(obj["meta"]))


def _phases(x: Any, key: str) -> dict[str, float]:
    return {k: _seconds(v, key) for k, v in _object(x, key).items()}


def _loss(x: Any, key: str) -> float | None:
    return None if x is None else _float(x, key)  # NaN and inf must get through


def _opt_finite(x: Any, key: str) -> float | None:
    return None if x is None else _finite(x, key)


def _opt_count(x: Any, key: str) -> int | None:
    return None if x is None else _uint(x, key)


# A step's keys that may be left out (their fields have defaults), each with its rule.
_STEP_OPTIONAL: dict[str, Callable[[Any, str], Any]] = {
    "phases": _phases,
    "tokens": _uint,
    "loss": _loss,
    "lr": _opt_finite,
    "micro_steps": lambda x, key: _uint(x, key, 1),
    "sync": lambda x, key: _parse_sync(x),
    "nosync_backward": _opt_seconds,
    "synced_backward": _opt_seconds,
    "drops": _uint,
    "lost": _uint,
    "collectives": lambda x, key: _parse_collectives(x),
    "data": _opt_count,
}


def parse_step(obj: dict) -> StepRecord:
    return StepRecord(
        rank=_uint(obj["rank"], "rank"),
        t=_finite(obj["t"], "t"),
        step=_uint(obj["step"], "step"),
        dt=_seconds(obj["dt"], "dt"),
        **{key: rule(obj[key], key) for key, rule in _STEP_OPTIONAL.items() if key in obj},
    )


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


PARSERS: dict[str, Callable[[dict], Record]] = {
    "start": _parse_start,
    "step": parse_step,
    "meta": _parse_meta,
    "checkpoint": _parse_checkpoint,
    "end": _parse_end,
}


def parse(obj: dict) -> Record:
    """The record a JSON object holds (its `kind` known); RecordError if it breaks a rule."""
    return checked(PARSERS[obj["kind"]], obj)


def checked(parser: Callable[[dict], Record], obj: dict) -> Record:
    """parser(obj), with a missing key said as a RecordError."""
    try:
        return parser(obj)
    except KeyError as e:
        raise RecordError(f"missing {e.args[0]!r}") from None
