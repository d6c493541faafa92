"""The one versioned record schema: the records step probes write and every reader reads.

One record is one compact JSON object on one line (docs/internals.md, "Records").
`scalemon.core.codec` turns records into lines and back, checking every field by the rules in
`scalemon.core.record_rules`. Keys a reader does not know are ignored, so newer writers stay
readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 65536
END_REASONS = ("finished", "stopped", "error")

JSONScalar = None | bool | int | float | str


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
class CollectiveTiming:
    """The torch.distributed collectives a script called itself in one step (not DDP's):
    how many, their tensors' bytes, how long the host blocked on them (a synchronous call, or
    the wait() on an async one) and when the first was launched (unix time)."""

    count: int
    bytes: int
    blocked: float
    first_launch: float


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
    collectives: CollectiveTiming | None = None  # optional key: the script's own collectives
    # optional key: a fingerprint of the step's first batch of token ids (distinct data per
    # rank), when the probe could take it without waiting on a device
    data: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaRecord:
    """What a rank learned after its start record: the model found in a script it was
    injected into (vocab, parameters), its process group. Merged into the start's meta."""

    kind: ClassVar[str] = "meta"
    rank: int
    t: float
    meta: dict[str, JSONScalar] = field(default_factory=dict)


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


Record = StartRecord | StepRecord | MetaRecord | CheckpointRecord | EndRecord

