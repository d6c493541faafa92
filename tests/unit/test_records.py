"""Record codec: round trips, and bad input of every shape ends in RecordError only."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.strategies import json_values, mutated, record_keys, records, valid_step

from scalemon.core.codec import decode, encode
from scalemon.core.errors import RecordError
from scalemon.core.record_rules import parse
from scalemon.core.records import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    CheckpointRecord,
    EndRecord,
    MetaRecord,
    StartRecord,
    StepRecord,
)


def _same(a, b) -> bool:
    # NaN != NaN, so compare through the canonical encoding, plus the type.
    return type(a) is type(b) and encode(a) == encode(b)


@given(records)
def test_round_trip_every_kind(record):
    data = encode(record)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert len(data) <= MAX_RECORD_BYTES
    back = decode(data)
    assert _same(back, record)
    assert _same(decode(data.decode()), record)  # str input too
    assert encode(back) == data  # NaN (loss, meta values) compares unequal but encodes alike


def test_encoding_is_compact_and_versioned():
    rec = EndRecord(rank=0, t=1.5, reason="finished", step=3)
    data = encode(rec)
    assert b" " not in data
    obj = json.loads(data)
    assert obj == {
        "v": SCHEMA_VERSION,
        "kind": "end",
        "rank": 0,
        "t": 1.5,
        "step": 3,
        "reason": "finished",
        "message": None,
    }


def test_nan_loss_survives():
    rec = decode(encode(StepRecord(rank=0, t=1.0, step=0, dt=0.1, loss=math.inf)))
    assert rec.loss == math.inf
    rec = decode(encode(StepRecord(rank=0, t=1.0, step=0, dt=0.1, loss=math.nan)))
    assert math.isnan(rec.loss)


def test_unknown_keys_are_ignored():
    obj = json.loads(encode(CheckpointRecord(rank=2, t=9.0, step=7, path="p", seconds=1.0)))
    obj["added_in_v1_5"] = {"anything": [1, 2]}
    assert decode(json.dumps(obj)) == CheckpointRecord(rank=2, t=9.0, step=7, path="p", seconds=1.0)


def test_ints_accepted_where_floats_belong():
    obj = json.loads(encode(CheckpointRecord(rank=0, t=9.0, step=7, path="p", seconds=1.0)))
    obj["t"], obj["seconds"] = 9, 2
    rec = decode(json.dumps(obj))
    assert rec.t == 9.0 and type(rec.t) is float and type(rec.seconds) is float


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "version"),
        ({"v": True}, "version"),
        ({"v": "1"}, "version"),
        ({"kind": "stpe"}, "kind"),
        ({"kind": None}, "kind"),
        ({"kind": ["step"]}, "kind"),
        ({"rank": -1}, "rank"),
        ({"rank": True}, "rank"),
        ({"rank": 1.0}, "rank"),
        ({"step": -3}, "step"),
        ({"dt": -0.1}, "dt"),
        ({"dt": math.nan}, "dt"),
        ({"dt": math.inf}, "dt"),
        ({"dt": "0.5"}, "dt"),
        ({"t": math.nan}, "t"),
        ({"phases": {"forward": -1.0}}, "phases"),
        ({"phases": [0.1]}, "phases"),
        ({"loss": "nan"}, "loss"),
        ({"loss": False}, "loss"),
        ({"micro_steps": 0}, "micro_steps"),
        ({"tokens": -1}, "tokens"),
        ({"lr": math.inf}, "lr"),
        ({"sync": 3}, "sync"),
        ({"sync": {"exposed": 0.1}}, "missing"),
        ({"drops": None}, "drops"),
    ],
)
def test_bad_fields_have_short_reasons(change, reason):
    obj = valid_step() | change
    with pytest.raises(RecordError, match=reason):
        decode(json.dumps(obj))


_STEP_REQUIRED = {"v", "kind", "rank", "t", "step", "dt"}


@pytest.mark.parametrize("key", sorted(_STEP_REQUIRED))
def test_a_step_without_its_number_or_time_is_refused(key):
    obj = valid_step()
    del obj[key]
    for line in (json.dumps(obj), json.dumps(obj, separators=(",", ":")).encode()):
        with pytest.raises(RecordError):
            decode(line)


@pytest.mark.parametrize("key", sorted(set(valid_step()) - _STEP_REQUIRED))
def test_a_key_with_a_default_may_be_left_out(key):
    obj = valid_step()
    del obj[key]
    default = getattr(StepRecord(rank=0, t=1.0, step=5, dt=0.5), key)
    for line in (json.dumps(obj), json.dumps(obj, separators=(",", ":")).encode()):
        assert getattr(decode(line), key) == default


def test_collectives_are_optional_and_checked():
    obj = valid_step()
    del obj["collectives"]
    assert decode(json.dumps(obj)).collectives is None  # records written before the key
    with pytest.raises(RecordError, match="blocked"):
        decode(json.dumps(valid_step() | {"collectives": {"count": 1, "bytes": 4,
                                                         "blocked": -1.0,
                                                         "first_launch": 1.0}}))


@pytest.mark.parametrize("read", [decode, lambda line: parse(json.loads(line))],
                         ids=["decode", "parse"])
def test_the_data_fingerprint_is_optional_and_a_count(read):
    assert read(json.dumps(valid_step())).data is None  # records written before the key
    record = read(json.dumps(valid_step() | {"data": 2**62}))
    assert record.data == 2**62 and decode(encode(record)) == record
    for bad in (-1, 2**63, 1.5, "7", True):
        with pytest.raises(RecordError, match="data"):
            read(json.dumps(valid_step() | {"data": bad}))


def test_meta_records_round_trip_and_take_only_scalars():
    record = MetaRecord(rank=1, t=5.0, meta={"vocab": 4096, "process_group": "none"})
    assert decode(encode(record)) == record
    with pytest.raises(RecordError, match="scalars"):
        decode(json.dumps(json.loads(encode(record)) | {"meta": {"x": [1]}}))


def test_start_and_end_rules():
    start = json.loads(encode(StartRecord(rank=1, t=1.0, pid=9, host="h", world=2, local_rank=1)))
    with pytest.raises(RecordError, match="world"):
        decode(json.dumps(start | {"world": 1}))
    with pytest.raises(RecordError, match="meta"):
        decode(json.dumps(start | {"meta": {"x": [1]}}))
    end = json.loads(encode(EndRecord(rank=0, t=1.0, reason="error", message="boom")))
    with pytest.raises(RecordError, match="reason"):
        decode(json.dumps(end | {"reason": "exploded"}))
    with pytest.raises(RecordError, match="message"):
        decode(json.dumps(end | {"message": 5}))


def test_oversize_rejected_both_ways():
    with pytest.raises(RecordError, match="too large"):
        decode(b" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(RecordError, match="too large"):
        decode("\u20ac" * (MAX_RECORD_BYTES // 2))  # few chars, many UTF-8 bytes
    meta = {"x": "y" * 70000}
    with pytest.raises(RecordError, match="too large"):
        encode(StartRecord(rank=0, t=1.0, pid=1, host="h", world=1, local_rank=0, meta=meta))


def test_encode_refuses_what_decode_would_reject():
    with pytest.raises(RecordError):
        encode(StepRecord(rank=0, t=1.0, step=-1, dt=0.1))
    with pytest.raises(RecordError):
        encode(StepRecord(rank=0, t=1.0, step=1, dt=0.1, tokens=True))
    with pytest.raises(RecordError):
        encode(StartRecord(rank=0, t=1.0, pid=1, host="h", world=1, local_rank=0, meta={"a": {}}))
    with pytest.raises(RecordError):
        encode(EndRecord(rank=0, t=1.0, reason="meh"))


def test_hostile_json():
    for data in [b"", b"\xff\xfe", b"null", b"[]", b'"s"', b"{", b"[" * 30000 + b"]" * 30000]:
        with pytest.raises(RecordError):
            decode(data)
    with pytest.raises(RecordError):
        decode(b'{"v":1,"kind":"step","rank":' + b"9" * 5000 + b"}")  # int digit limit
    with pytest.raises(RecordError):
        decode(json.dumps(valid_step() | {"dt": 10**400}))  # int too large for a float


# --- nothing but RecordError, whatever comes in --------------------------------------


def _decode_or_record_error(data) -> None:
    with contextlib.suppress(RecordError):
        decode(data)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data):
    _decode_or_record_error(data)


@given(json_values)
def test_arbitrary_json(value):
    _decode_or_record_error(json.dumps(value))


@given(st.dictionaries(record_keys, json_values, max_size=20))
def test_arbitrary_objects_with_record_keys(obj):
    _decode_or_record_error(json.dumps(obj))
    _decode_or_record_error(json.dumps({"v": 1, "kind": "step"} | obj))


@given(records, st.data())
def test_mutated_valid_records(record, data):
    _decode_or_record_error(json.dumps(mutated(record, data, json_values, (1, 4))))


@given(records, st.data())
def test_corrupted_bytes(record, data):
    raw = bytearray(encode(record))
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[i] = data.draw(st.integers(min_value=0, max_value=255))
    _decode_or_record_error(bytes(raw))
    _decode_or_record_error(bytes(raw[: data.draw(st.integers(0, len(raw)))]))


_WITHOUT_MSGSPEC = """
import sys
sys.modules["msgspec"] = None  # a training script's own interpreter, without msgspec
import scalemon.probes.inject  # what `scalemon run --python PY` injects
from scalemon.core import codec
from scalemon.core.records import StepRecord, SyncTiming
sync = SyncTiming(exposed=0.1, comm=0.2, overlap=0.1, bytes=8, buckets=1, last_ready=1.0)
record = StepRecord(rank=0, t=1.0, step=2, dt=0.5, phases={"forward": 0.1}, sync=sync,
                    loss=float("nan"))
a, b = StepRecord(rank=0, t=1.0, step=1, dt=0.1), StepRecord(rank=0, t=1.0, step=1, dt=0.1)
line = codec.encode(record)
print(line.decode(), end="")
print(repr(codec.decode(line)) == repr(record), a == b and a.phases is not b.phases)
"""


def test_the_schema_writes_without_msgspec():
    out = subprocess.run([sys.executable, "-c", _WITHOUT_MSGSPEC], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[1] == "True True"
    with_msgspec = decode(out[0].encode())  # and this side reads what that side wrote
    assert with_msgspec.step == 2 and math.isnan(with_msgspec.loss)
