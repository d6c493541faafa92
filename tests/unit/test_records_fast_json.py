"""codec.decode's fast paths (orjson, record_rules.read_step) give exactly the answers of the
reference (json.loads, record_rules.parse_step): the same records accepted, the same reasons for
those rejected."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.strategies import json_values, mutated, records, step_records

from scalemon.core import codec, record_rules
from scalemon.core.codec import decode, encode
from scalemon.core.errors import RecordError
from scalemon.core.records import CollectiveTiming, StepRecord

pytestmark = pytest.mark.skipif(codec.orjson is None, reason="orjson is not installed")


def _outcome(parse, data):
    try:
        value = parse(data)
    except (RecordError, ValueError, RecursionError) as error:
        return "error", str(error) if isinstance(error, RecordError) else "invalid"
    # repr tells 1 from 1.0 and NaN from NaN, all the way down.
    return "ok", repr(value)


def _reference_decode(data):
    fast = codec.orjson
    codec.orjson = None
    try:
        return decode(data)
    finally:
        codec.orjson = fast


@given(json_values | st.integers() | st.floats())
def test_loads_matches_json(value):
    data = json.dumps(value).encode()
    assert _outcome(codec._loads, data) == _outcome(json.loads, data)


numbers = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")


@given(numbers)
def test_number_text_parses_alike(text):
    data = f'{{"x":{text}}}'.encode()
    assert _outcome(codec._loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize("data", [
    b'{"a":NaN,"b":Infinity,"c":-Infinity}', b'"\\ud800"', b"\xef\xbb\xbf{}",
    b'{"x":18446744073709551616}', b'{"x":-9223372036854775809}', b'{"x":1e400}',
    b'{"a":1,"a":2}', b"[" * 1000 + b"]" * 1000, b"[" * 100 + b"]" * 100, b'"\xed\xa0\x80"',
])
def test_loads_edges_match_json(data):
    assert _outcome(codec._loads, data) == _outcome(json.loads, data)


@given(records, st.data())
def test_decode_matches_reference_on_mutated_records(record, data):
    obj = mutated(record, data, json_values | st.integers() | st.floats(), (0, 3))
    raw = json.dumps(obj).encode()
    assert _outcome(decode, raw) == _outcome(_reference_decode, raw)


def _decoded_as(parse):
    # decode() calls a parser through checked(), which turns a missing key into a RecordError.
    return lambda obj: record_rules.checked(parse, obj)


_bad_values = (st.none() | st.booleans() | st.integers(-2, 2**64) | st.floats()
               | st.text(max_size=3)
               | st.dictionaries(st.text(max_size=3), st.floats(), max_size=2))


@given(step_records, st.data())
def test_read_step_matches_parse_step(record, data):
    obj = json.loads(encode(record))
    target = data.draw(st.sampled_from([obj] + [obj[key] for key in ("sync", "collectives")
                                                 if obj.get(key) is not None]))
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(_bad_values)
    assert (_outcome(_decoded_as(record_rules.read_step), obj)
            == _outcome(_decoded_as(record_rules.parse_step), obj))


_SYNC = {"exposed": 0.0, "comm": 0.0, "overlap": 0.0, "bytes": 0, "buckets": 0,
         "last_ready": 0.0}


# Cases random search found: sync={} in CI, counts of 2**63 by `make fuzz`.
@pytest.mark.parametrize("sync", [{}, {"exposed": 0.0}, {"bytes": 1, "buckets": 1}, [],
                                  _SYNC | {"buckets": 2**63}, _SYNC | {"bytes": 2**63},
                                  _SYNC | {"bytes": -1}])
def test_bad_sync_is_the_same_error_on_both_paths(sync):
    obj = json.loads(encode(StepRecord(rank=0, t=0.0, step=0, dt=0.0)))
    obj["sync"] = sync
    fast = _outcome(_decoded_as(record_rules.read_step), obj)
    assert fast[0] == "error" and fast == _outcome(_decoded_as(record_rules.parse_step), obj)


def test_slot_filler_fills_every_field():
    collectives = CollectiveTiming(count=4, bytes=1024, blocked=0.25, first_launch=9.5)
    record = decode(encode(StepRecord(rank=1, t=2.0, step=3, dt=0.5, tokens=7, loss=1.5,
                                            lr=0.1, micro_steps=2, drops=4, lost=5,
                                            phases={"forward": 0.25}, nosync_backward=0.125,
                                            synced_backward=0.375, collectives=collectives)))
    assert record == StepRecord(rank=1, t=2.0, step=3, dt=0.5, tokens=7, loss=1.5, lr=0.1,
                                      micro_steps=2, drops=4, lost=5, phases={"forward": 0.25},
                                      nosync_backward=0.125, synced_backward=0.375,
                                      collectives=collectives)
