"""Records to lines and back: `encode` for writers, `decode` for every reader.

`decode` validates everything (scalemon.core.record_rules) and raises only RecordError, so a
reader can count and skip bad input instead of crashing. `encode` runs the same validation, so
nothing is written that readers reject.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import msgspec
except ImportError:  # a script's own interpreter, which only writes: see core/structs.py
    msgspec = None  # type: ignore[assignment]

from scalemon.core import record_rules
from scalemon.core.errors import RecordError
from scalemon.core.records import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    CheckpointRecord,
    CollectiveTiming,
    EndRecord,
    MetaRecord,
    Record,
    StartRecord,
    StepRecord,
    SyncTiming,
)

__all__ = ["RecordError", "decode", "decode_many", "encode"]


def _sync_dict(s: SyncTiming) -> dict[str, Any]:
    return {
        "exposed": s.exposed,
        "comm": s.comm,
        "overlap": s.overlap,
        "bytes": s.bytes,
        "buckets": s.buckets,
        "last_ready": s.last_ready,
    }


def _collectives_dict(c: CollectiveTiming) -> dict[str, Any]:
    return {"count": c.count, "bytes": c.bytes, "blocked": c.blocked,
            "first_launch": c.first_launch}


def _to_dict(r: Record) -> dict[str, Any]:
    head = {"v": SCHEMA_VERSION, "kind": r.kind, "rank": r.rank, "t": r.t}
    if type(r) is StepRecord:
        step = head | {
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
        if r.collectives is not None:  # an optional key: only injected runs have it
            step["collectives"] = _collectives_dict(r.collectives)
        if r.data is not None:  # optional: only where the probe could read the batch
            step["data"] = r.data
        return step
    if type(r) is MetaRecord:
        return head | {"meta": r.meta}
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
    try:
        data = json.dumps(_to_dict(record), separators=(",", ":")).encode() + b"\n"
    except (TypeError, ValueError) as e:
        raise RecordError(f"not encodable: {e}") from None
    # What readers will say of it, so a writer can never emit what they reject (a bool where
    # an int belongs, a negative duration, a list in meta ...): decode's own fast path for the
    # probe's step lines, half the cost of json.loads and the rules it used to take.
    decode(data)
    return data


# The step records the probe writes go through msgspec, which decodes them straight into
# StepRecord by the bounds on its field types, several times faster than json and the rules.
# Where it gives an answer it is the reference's (json.loads, then record_rules): it has no
# NaN or Infinity token and no number out of float range, so a NaN loss or a 1e400 fails it
# and the reference answers; it checks every `v` and `kind` a line names (json keeps the
# last), escaped or not. What it cannot see is left to the reference: a line that does not
# start as the probe's do (without `v` or `kind`, another kind), and deep nesting, which json
# refuses past its recursion limit. Anything refused goes to the reference, which says why
# (tests/unit/test_records_fast_json.py compares the two).
_STEP_PREFIX = b'{"v":%d,"kind":"step",' % SCHEMA_VERSION
_SHALLOW_BYTES = 1000  # nesting as deep as json's recursion limit takes 2 bytes a level
_step_decoder = msgspec.json.Decoder(StepRecord) if msgspec is not None else None


def _fast_step(data: bytes) -> StepRecord | None:
    if _step_decoder is None or not data.startswith(_STEP_PREFIX) \
            or len(data) > _SHALLOW_BYTES:
        return None
    try:
        return _step_decoder.decode(data)
    except msgspec.MsgspecError:
        return None


def decode(data: bytes | str) -> Record:
    """Parse and validate one record (a trailing newline is fine); RecordError if bad."""
    size = len(data)
    if type(data) is str and size > MAX_RECORD_BYTES // 4:
        size = len(data.encode(errors="surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    if type(data) is bytes:
        step = _fast_step(data)
        if step is not None:
            return step
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
    if type(kind) is not str or kind not in record_rules.PARSERS:
        raise RecordError("unknown kind")
    return record_rules.parse(obj)


def decode_many(lines: list[bytes], blank_is_bad: bool = False) -> tuple[list[Record], int]:
    """The records of many lines (or datagrams), in order, and how many were bad (a blank
    line is neither, unless `blank_is_bad`). Answers as `decode` line by line, but checks what
    `_fast_step` checks once over them all when every line is a step the probe wrote: a
    replay decodes a million."""
    text = b"\n".join(lines)
    starts = text.count(b"\n" + _STEP_PREFIX) + text.startswith(_STEP_PREFIX)
    if _step_decoder is not None and starts == len(lines) \
            and max(map(len, lines), default=0) <= _SHALLOW_BYTES:
        try:
            return [_step_decoder.decode(line) for line in lines], 0
        except msgspec.MsgspecError:
            pass  # a NaN loss, a bad field: the lines one at a time say which
    records, bad = [], 0
    for line in lines:
        if not blank_is_bad and (not line or line.isspace()):
            continue
        try:
            records.append(decode(line))
        except RecordError:
            bad += 1
    return records, bad
