"""Records to lines and back: `encode` for writers, `decode` for every reader.

`decode` validates everything (scalemon.core.record_rules) and raises only RecordError, so a
reader can count and skip bad input instead of crashing. `encode` runs the same validation, so
nothing is written that readers reject.
"""

from __future__ import annotations

import json
from typing import Any

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

__all__ = ["RecordError", "decode", "encode"]

orjson: Any
try:
    import orjson
except ImportError:  # json alone gives the same answers, four times slower
    orjson = None


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
    obj = _to_dict(record)
    try:
        line = json.dumps(obj, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise RecordError(f"not encodable: {e}") from None
    # Round-trip through the parsed form so a writer can never emit what readers reject
    # (a bool where an int belongs, a negative duration, a list in meta ...).
    record_rules.parse(json.loads(line))
    data = line.encode() + b"\n"
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    return data



# orjson parses a record in a quarter of json's time, but its answers differ on some input:
# it rejects NaN, Infinity, lone surrogates, a BOM and floats out of range (json's answer is
# taken then), turns integers past 64 bits into floats, and nests deeper than json's recursion
# limit. So it only sees bytes without a run of 19 digits and with few brackets; json is the
# reference for everything else (tests/unit/test_records_fast_json.py compares the two).
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
    if type(kind) is not str or kind not in record_rules.PARSERS:
        raise RecordError("unknown kind")
    return record_rules.parse(obj)
