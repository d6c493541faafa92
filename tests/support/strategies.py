"""Hypothesis strategies for records: valid records of every kind, arbitrary JSON, and
records with a few keys broken (the property tests of the codec and of the socket share them)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from scalemon.core.codec import encode
from scalemon.core.records import (
    END_REASONS,
    CheckpointRecord,
    CollectiveTiming,
    EndRecord,
    MetaRecord,
    StartRecord,
    StepRecord,
    SyncTiming,
)

uints = st.integers(min_value=0, max_value=2**63 - 1)
seconds = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
wall = st.floats(min_value=0.0, max_value=4e9, allow_nan=False, allow_infinity=False)
short_text = st.text(max_size=40)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | short_text

sync_timings = st.builds(
    SyncTiming,
    exposed=seconds,
    comm=seconds,
    overlap=seconds,
    bytes=uints,
    buckets=uints,
    last_ready=wall,
)
collective_timings = st.builds(
    CollectiveTiming, count=uints, bytes=uints, blocked=seconds, first_launch=wall)


@st.composite
def start_records(draw):
    world = draw(st.integers(min_value=1, max_value=4096))
    return StartRecord(
        rank=draw(st.integers(min_value=0, max_value=world - 1)),
        t=draw(wall),
        pid=draw(uints),
        host=draw(short_text),
        world=world,
        local_rank=draw(uints),
        meta=draw(st.dictionaries(short_text, scalars, max_size=12)),
    )


step_records = st.builds(
    StepRecord,
    rank=uints,
    t=wall,
    step=uints,
    dt=seconds,
    phases=st.dictionaries(short_text, seconds, max_size=8),
    tokens=uints,
    loss=st.none() | st.floats(),  # NaN and infinities included: a NaN loss must be seen
    lr=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    micro_steps=st.integers(min_value=1, max_value=10**6),
    sync=st.none() | sync_timings,
    nosync_backward=st.none() | seconds,
    synced_backward=st.none() | seconds,
    drops=uints,
    lost=uints,
    collectives=st.none() | collective_timings,
    data=st.none() | uints,
)
meta_records = st.builds(MetaRecord, rank=uints, t=wall,
                         meta=st.dictionaries(short_text, scalars, max_size=12))
checkpoint_records = st.builds(
    CheckpointRecord, rank=uints, t=wall, step=uints, path=short_text, seconds=seconds
)
end_records = st.builds(
    EndRecord,
    rank=uints,
    t=wall,
    reason=st.sampled_from(END_REASONS),
    step=st.none() | uints,
    message=st.none() | short_text,
)
records = (start_records() | step_records | meta_records | checkpoint_records
           | end_records)



def valid_step() -> dict:
    """A valid step record as a JSON object, to break one field at a time."""
    rec = StepRecord(
        rank=0,
        t=1.0,
        step=5,
        dt=0.5,
        phases={"forward": 0.1},
        tokens=64,
        sync=SyncTiming(exposed=0.1, comm=0.2, overlap=0.1, bytes=8, buckets=1, last_ready=1.0),
        collectives=CollectiveTiming(count=3, bytes=96, blocked=0.05, first_launch=1.0),
    )
    return json.loads(encode(rec))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
record_keys = st.sampled_from(sorted(valid_step()) + ["exposed", "meta", "pid", "host", "path"])


def mutated(record, data, values, changes: tuple[int, int]) -> dict:
    """The record as a JSON object with a few keys (min..max) given drawn values or deleted."""
    obj = json.loads(encode(record))
    for _ in range(data.draw(st.integers(*changes))):
        key = data.draw(st.sampled_from(sorted(obj)))
        if data.draw(st.booleans()):
            obj[key] = data.draw(values)
        else:
            del obj[key]
        if not obj:
            break
    return obj
