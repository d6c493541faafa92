"""The validation rules of the record schema: what `codec.decode` accepts, field by field.

`type(x) is int` rejects bool (a subclass of int); ints are accepted where floats belong (other
writers may print 0 for 0.0) and converted. Parsers read keys with obj[key] inside one try
block: a missing key is a KeyError that `parse` turns into a RecordError, which keeps decoding
at a few microseconds (the monitor ingests tens of thousands of records a second).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from scalemon.core.errors import RecordError
from scalemon.core.records import (
    END_REASONS,
    CheckpointRecord,
    CollectiveTiming,
    EndRecord,
    MetaRecord,
    Record,
    StartRecord,
    StepRecord,
    SyncTiming,
)

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


def parse_step(obj: dict) -> StepRecord:
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
        collectives=_parse_collectives(obj.get("collectives")),
        data=None if obj.get("data") is None else _uint(obj["data"], "data"),
    )


# The hot path: a monitor decodes every step record of every rank, tens of thousands a
# second. A frozen dataclass's __init__ (object.__setattr__ per field) and one checker call
# per field took two thirds of that. `read_step` takes only the plain shape the step probe
# writes (floats as floats, every key there) and fills the slots directly; anything else
# goes to `parse_step`, which decides and says why. tests/unit/test_records_fast_json.py checks
# that both give the same answers.


def _slot_filler(cls: type, names: tuple[str, ...]) -> Callable[..., Any]:
    """A constructor of `cls` (a frozen slots dataclass) from values in `names` order,
    for values already checked."""
    setters = {f.name: cls.__dict__[f.name].__set__ for f in fields(cls)}
    if set(names) != set(setters):
        raise TypeError(f"{cls.__name__} fields changed: update record_rules.read_step")
    ordered = tuple(setters[name] for name in names)
    new = object.__new__

    def build(*values: Any) -> Any:
        record: object = new(cls)
        for set_value, value in zip(ordered, values, strict=True):
            set_value(record, value)
        return record

    return build


_STEP_KEYS = ("rank", "t", "step", "dt", "phases", "tokens", "loss", "lr", "micro_steps", "sync",
              "nosync_backward", "synced_backward", "drops", "lost")
_SYNC_KEYS = ("exposed", "comm", "overlap", "bytes", "buckets", "last_ready")
_step_values = operator.itemgetter(*_STEP_KEYS)
_new_step = _slot_filler(StepRecord, (*_STEP_KEYS, "collectives", "data"))
_sync_values, _new_sync = operator.itemgetter(*_SYNC_KEYS), _slot_filler(SyncTiming, _SYNC_KEYS)
_COLLECTIVE_KEYS = ("count", "bytes", "blocked", "first_launch")
_collective_values = operator.itemgetter(*_COLLECTIVE_KEYS)
_new_collectives = _slot_filler(CollectiveTiming, _COLLECTIVE_KEYS)
_INF = math.inf


def read_step(obj: dict) -> StepRecord:
    try:
        (rank, t, step, dt, phases, tokens, loss, lr, micro_steps, sync, nosync, synced, drops,
         lost) = _step_values(obj)
    except KeyError:
        return parse_step(obj)
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
        return parse_step(obj)
    for seconds in phases.values():
        if type(seconds) is not float or not 0.0 <= seconds < _INF:
            return parse_step(obj)
    if sync is not None:
        try:
            exposed, comm, overlap, nbytes, buckets, last_ready = _sync_values(sync)
        except KeyError:
            return parse_step(obj)
        if not (type(exposed) is type(comm) is type(overlap) is type(last_ready) is float
                and type(nbytes) is type(buckets) is int
                and 0 <= nbytes < _INT_END and 0 <= buckets < _INT_END
                and 0.0 <= exposed < _INF and 0.0 <= comm < _INF and 0.0 <= overlap < _INF
                and -_INF < last_ready < _INF):
            return parse_step(obj)
        sync = _new_sync(exposed, comm, overlap, nbytes, buckets, last_ready)
    collectives = obj.get("collectives")
    if collectives is not None:
        try:
            count, nbytes, blocked, first = _collective_values(collectives)
        except (KeyError, TypeError):
            return parse_step(obj)
        if not (type(count) is type(nbytes) is int and type(blocked) is type(first) is float
                and 0 <= count < _INT_END and 0 <= nbytes < _INT_END
                and 0.0 <= blocked < _INF and -_INF < first < _INF):
            return parse_step(obj)
        collectives = _new_collectives(count, nbytes, blocked, first)
    data = obj.get("data")
    if data is not None and not (type(data) is int and 0 <= data < _INT_END):
        return parse_step(obj)
    return _new_step(rank, t, step, dt, phases, tokens, loss, lr, micro_steps, sync, nosync,
                     synced, drops, lost, collectives, data)


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
    "step": read_step,
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
