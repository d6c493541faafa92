"""The one versioned record schema: the records step probes write and every reader reads.

One record is one compact JSON object on one line (docs/internals.md, "Records").
`scalemon.core.codec` turns records into lines and back, checking every field by the rules in
`scalemon.core.record_rules`. Keys a reader does not know are ignored, so newer writers stay
readable; a key whose field has a default may be left out.

Records are frozen msgspec Structs: made by the million, they cost a third of a dataclass to
build and nothing to the garbage collector (gc=False: they hold no cycles). The field types
carry their bounds (`Count`, `Seconds`), by which msgspec decodes a step record straight into
its class; `record_rules` holds the same rules in Python for every other line.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from scalemon.core.structs import Meta, Struct

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 65536
END_REASONS = ("finished", "stopped", "error")

JSONScalar = None | bool | int | float | str
INT_END = 2**63  # counts stay below: readers keep steps and counts in signed 64-bit arrays
Count = Annotated[int, Meta(ge=0, le=INT_END - 1)]
Seconds = Annotated[float, Meta(ge=0.0)]  # and finite: JSON without NaN tokens has no inf


class _Record(Struct, frozen=True, kw_only=True, gc=False, tag_field="kind"):
    """What every record has besides its rank and time: the schema version and its kind (the
    class's `kind`, which msgspec reads as the tag and checks wherever a line names it)."""

    v: Literal[1] = 1  # SCHEMA_VERSION


class StartRecord(_Record, tag="start", frozen=True, kw_only=True):
    kind: ClassVar[str] = "start"
    rank: int
    t: float
    pid: int
    host: str
    world: int
    local_rank: int
    meta: dict[str, JSONScalar] = {}  # msgspec gives each record its own


class SyncTiming(Struct, frozen=True, kw_only=True, gc=False):
    """Gradient sync of one step, from the DDP comm hook (seconds, bytes, unix time)."""

    exposed: Seconds
    comm: Seconds
    overlap: Seconds
    bytes: Count
    buckets: Count
    last_ready: float


class CollectiveTiming(Struct, frozen=True, kw_only=True, gc=False):
    """The torch.distributed collectives a script called itself in one step (not DDP's):
    how many, their tensors' bytes, how long the host blocked on them (a synchronous call, or
    the wait() on an async one) and when the first was launched (unix time)."""

    count: Count
    bytes: Count
    blocked: Seconds
    first_launch: float


class StepRecord(_Record, tag="step", frozen=True, kw_only=True):
    kind: ClassVar[str] = "step"
    rank: Count
    t: float
    step: Count
    dt: Seconds
    phases: dict[str, Seconds] = {}  # msgspec gives each record its own
    tokens: Count = 0
    loss: float | None = None  # NaN and inf too: a NaN loss must be seen
    lr: float | None = None
    micro_steps: Annotated[int, Meta(ge=1, le=INT_END - 1)] = 1
    sync: SyncTiming | None = None
    nosync_backward: Seconds | None = None
    synced_backward: Seconds | None = None
    drops: Count = 0
    lost: Count = 0
    collectives: CollectiveTiming | None = None  # the script's own collectives (injected)
    # a fingerprint of the step's first batch of token ids (distinct data per rank), when the
    # probe could take it without waiting on a device
    data: Count | None = None


class MetaRecord(_Record, tag="meta", frozen=True, kw_only=True):
    """What a rank learned after its start record: the model found in a script it was
    injected into (vocab, parameters), its process group. Merged into the start's meta."""

    kind: ClassVar[str] = "meta"
    rank: int
    t: float
    meta: dict[str, JSONScalar] = {}  # msgspec gives each record its own


class CheckpointRecord(_Record, tag="checkpoint", frozen=True, kw_only=True):
    kind: ClassVar[str] = "checkpoint"
    rank: int
    t: float
    step: int
    path: str
    seconds: float
    error: str | None = None  # why it was not written (disk full ...); optional key


class EndRecord(_Record, tag="end", frozen=True, kw_only=True):
    kind: ClassVar[str] = "end"
    rank: int
    t: float
    reason: str
    step: int | None = None
    message: str | None = None


Record = StartRecord | StepRecord | MetaRecord | CheckpointRecord | EndRecord

