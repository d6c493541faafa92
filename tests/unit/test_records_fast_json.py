"""codec.decode's fast path (msgspec, straight into StepRecord) gives exactly the answers of the
reference (json.loads, then record_rules): the same records accepted with the same values, the
same reasons for those rejected, on the lines the probe writes and on every way to break them."""

from __future__ import annotations

import json
import math
from unittest import mock

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from support.strategies import json_values, mutated, records, step_records

from scalemon.core import codec, record_rules
from scalemon.core.codec import decode, encode
from scalemon.core.errors import RecordError
from scalemon.core.records import CollectiveTiming, StepRecord, SyncTiming


def _outcome(parse, data):
    try:
        value = parse(data)
    except (RecordError, ValueError, RecursionError) as error:
        return "error", str(error) if isinstance(error, RecordError) else "invalid"
    # repr tells 1 from 1.0 and NaN from NaN, all the way down; the type tells the classes.
    return "ok", type(value).__name__, repr(value)


def _reference(data: bytes):
    with mock.patch.object(codec, "_fast_step", lambda data: None):
        return decode(data)


def _same_answer(data: bytes) -> None:
    assert _outcome(decode, data) == _outcome(_reference, data)


@given(step_records)
def test_the_probes_lines_take_the_fast_path(record):
    line = encode(record)
    # json escapes a control character in a phase's name: such lines go to the reference
    assume(b"\\" not in line and line.count(b'"v"') == line.count(b'"kind"') == 1)
    assume(record.loss is None or math.isfinite(record.loss))  # NaN: the reference's
    fast = codec._fast_step(line)
    assert fast is not None and encode(fast) == line
    assert type(fast.sync) is type(record.sync) and type(fast.phases) is dict


def test_a_nan_loss_is_decoded_by_the_reference():
    line = encode(StepRecord(rank=0, t=1.0, step=2, dt=0.5, loss=float("nan")))
    assert codec._fast_step(line) is None and decode(line).loss != decode(line).loss


_bad_values = (st.none() | st.booleans() | st.integers(-2, 2**64) | st.floats()
               | st.text(max_size=3) | st.lists(st.integers(), max_size=2)
               | st.dictionaries(st.text(max_size=3), st.floats(), max_size=2))


@given(step_records, st.data())
def test_a_broken_field_is_the_same_answer_on_both_paths(record, data):
    obj = json.loads(encode(record))
    nested = [obj[key] for key in ("sync", "collectives", "phases") if obj.get(key)]
    target = data.draw(st.sampled_from([obj, *nested]))
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        target[key] = data.draw(_bad_values)
    else:
        del target[key]
    _same_answer(json.dumps(obj, separators=(",", ":")).encode())


@given(step_records, st.data())
def test_mutated_step_records_are_the_same_answer(record, data):
    obj = mutated(record, data, json_values | st.integers() | st.floats(), (0, 3))
    _same_answer(json.dumps({"v": 1, "kind": "step"} | obj, separators=(",", ":")).encode())


numbers = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")


@given(numbers, st.sampled_from(["t", "dt", "step", "loss", "lr", "tokens", "data"]))
def test_number_text_is_the_same_answer(text, key):
    line = encode(StepRecord(rank=0, t=1.0, step=2, dt=0.5, tokens=64, loss=1.5, lr=0.1,
                             data=7))
    obj = json.loads(line)
    old = json.dumps(obj[key])
    _same_answer(line.replace(f'"{key}":{old}'.encode(), f'"{key}":{text}'.encode(), 1))


_LINE = encode(StepRecord(rank=0, t=1.0, step=2, dt=0.5, phases={"forward": 0.25},
                          sync=SyncTiming(exposed=0.1, comm=0.2, overlap=0.1, bytes=8,
                                          buckets=1, last_ready=1.0),
                          collectives=CollectiveTiming(count=1, bytes=4, blocked=0.0,
                                                       first_launch=1.0)))
_BODY = _LINE[len(b'{"v":1,"kind":"step",'):-2]  # without the braces and the newline


@pytest.mark.parametrize("data", [
    b'{"v":1,"kind":"step",' + _BODY + b',"v":2}',  # json takes the last of two keys
    b'{"v":1,"kind":"step",' + _BODY + b',"kind":"end"}',
    b'{"v":1,"kind":"step",' + _BODY + b',"\\u0076":2}',  # "v", escaped
    b'{"v":1,"kind":"step",' + _BODY + b',"step":3,"step":4}',
    b'{"v":1,"kind":"step",' + _BODY + b',"dt":-1}',
    b'{"v":1,"kind":"step",' + _BODY + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'{"v":1,"kind":"step",' + _BODY + b',"x":' + b"[" * 70 + b"]" * 70 + b"}",
    b'{"v":1,"kind":"step",' + _BODY + b',"x":18446744073709551616}',
    b'{"v":1,"kind":"step",' + _BODY + b',"t":1e400}',
    b'{"v":1,"kind":"step",' + _BODY + b',"loss":-Infinity}',
    b'{"v":1,"kind":"step",' + _BODY + b',"tokens":9223372036854775808}',
    b'{"v":1,"kind":"step",' + _BODY + b',"tokens":9223372036854775807}',
    b'{"v":1,"kind":"step",' + _BODY + b',"phases":{"\xed\xa0\x80":0.1}}',
    b'{"v":1,"kind":"step",' + _BODY + b',"phases":{"\\ud800":0.1}}',
    b'{"v":1,"kind":"step",' + _BODY + b'} {}',
    b'{"v":1,"kind":"step",' + _BODY + b'}\n',
    b'{"v":1,"kind":"step","rank":0,"t":1,"step":2,"dt":0}',  # ints where floats belong
    b'{"v":1,"kind":"step","rank":0,"t":1.0,"step":2}',  # dt is required
    b'{"v":1,"kind":"step","rank":true,"t":1.0,"step":2,"dt":0.5}',
    b'{"v":1,"kind":"step","rank":0,"t":1.0,"step":2,"dt":0.5,"micro_steps":0}',
    b'{"v":1,"kind":"step","rank":0,"t":1.0,"step":2,"dt":0.5,"sync":{}}',
    b'\xef\xbb\xbf{"v":1,"kind":"step","rank":0,"t":1.0,"step":2,"dt":0.5}',
])
def test_edges_are_the_same_answer(data):
    _same_answer(data)


def test_keys_with_defaults_may_be_left_out_on_both_paths():
    line = b'{"v":1,"kind":"step","rank":1,"t":2.0,"step":3,"dt":0.5}\n'
    assert codec._fast_step(line) == StepRecord(rank=1, t=2.0, step=3, dt=0.5) \
        == record_rules.parse(json.loads(line))


def _one_by_one(lines, blank_is_bad):
    records, bad = [], 0
    for line in lines:
        if not blank_is_bad and not line.strip():
            continue
        try:
            records.append(decode(line))
        except RecordError:
            bad += 1
    return [repr(r) for r in records], bad


_lines = st.lists(
    st.builds(lambda r: encode(r).rstrip(b"\n"), step_records)
    | st.builds(lambda r: encode(r).rstrip(b"\n"), records)
    | st.sampled_from([b"", b"  ", b"not a record", _LINE.replace(b"1.0", b"NaN", 1),
                       _LINE.rstrip(b"\n") + b" {}", _LINE + _LINE.rstrip(b"\n")]),
    max_size=12)


@given(_lines, st.booleans())
def test_many_lines_decode_as_one_by_one(lines, blank_is_bad):
    records, bad = codec.decode_many(lines, blank_is_bad=blank_is_bad)
    assert ([repr(r) for r in records], bad) == _one_by_one(lines, blank_is_bad)


@given(st.lists(step_records, min_size=1, max_size=8))
def test_many_step_lines_take_one_check(steps):
    lines = [encode(r).rstrip(b"\n") for r in steps]
    records, bad = codec.decode_many(lines)
    assert bad == 0 and [encode(r) for r in records] == [encode(r) for r in steps]
