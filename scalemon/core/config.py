"""Typed forms of a run dir's JSON files: config.json (`RunConfig`), status.json (`RunStatus`).

Each has one parser, which checks every field it reads and says what is wrong in one phrase
(`ConfigProblem`), and one `to_dict` for the writer, so readers and writers share a schema
(docs/internals.md, "config.json"). A field may be missing (hand-made configs, scripts' runs),
which reads as None; it is never of another kind, so readers can trust it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

CONFIG_SCHEMA = 1


class ConfigProblem(ValueError):
    """What is wrong with a config's fields, as one phrase ("model.depth is 0, not ...")."""


def _whole(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


_TEXT = (lambda v: isinstance(v, str), "a string")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_LIST = (lambda v: isinstance(v, list), "a list")
_COUNT = (_whole(1), "a whole number >= 1")
_INDEX = (_whole(0), "a whole number >= 0")
_NUMBER = (_finite, "a finite number >= 0")
# The config.json fields scalemon reads, each with its check and what it must be.
FIELDS = {
    "name": _TEXT, "created": _NUMBER, "command": _TEXT, "hosts": _LIST, "pids": _OBJECT,
    "model.depth": _COUNT, "model.vocab": _COUNT, "model.seq_len": _COUNT,
    "model.aspect_ratio": _COUNT, "model.head_dim": _COUNT,
    "train.device": _TEXT, "train.backend": _TEXT, "train.device_batch": _COUNT,
    "train.accum": _COUNT, "train.tokens_per_step": _COUNT, "train.lr": _NUMBER,
    "train.warmup_steps": _INDEX, "train.seed": (_whole(-(2**63)), "a whole number"),
    "train.checkpoint_every": _INDEX,
    "launch.nproc_per_node": _COUNT, "launch.nnodes": _COUNT, "launch.node_rank": _INDEX,
    "launch.master_addr": _TEXT, "launch.master_port": _COUNT, "launch.world_size": _COUNT,
    "launch.threads_per_rank": _COUNT, "launch.python": _TEXT, "launch.cwd": _TEXT,
    "relay.port": _COUNT, "relay.secret": _TEXT,
}
# Null means "unknown" or "none" only for these; elsewhere a reader would trip on it.
NULLABLE = {
    "script": _LIST, "relay": _OBJECT, "train.steps": _COUNT, "train.data": _TEXT,
    "launch.link_bit_s": _NUMBER,
}
# What `scalemon run --resume` relaunches from: every field `scalemon run` writes.
LAUNCH_FIELDS = ("train.device", "train.backend", "train.device_batch",
                 "train.accum", "train.lr", "train.warmup_steps", "train.seed",
                 "launch.nproc_per_node", "launch.nnodes", "launch.node_rank",
                 "launch.master_addr", "launch.master_port", "launch.world_size",
                 "launch.threads_per_rank")
TRAINER_FIELDS = ("train.steps", "model.depth", "model.vocab", "model.seq_len",
                  "model.aspect_ratio", "model.head_dim")


def _field(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    """(present, value) of a dotted field of a config's JSON."""
    section, _, key = dotted.rpartition(".")
    holder = data.get(section) if section else data
    if not isinstance(holder, dict) or key not in holder:
        return False, None
    return True, holder[key]


def config_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with a config's fields (one phrase), or None."""
    for table, nullable in ((FIELDS, False), (NULLABLE, True)):
        for dotted, (valid, kind) in table.items():
            present, value = _field(data, dotted)
            if present and not (valid(value) or (nullable and value is None)):
                return f"{dotted} is {json.dumps(value)[:40]}, not {kind}"
    for role, pid in (data.get("pids") or {}).items():
        if pid is not None and not _whole(1)(pid):
            return f"pids.{role} is {json.dumps(pid)[:40]}, not a pid"
    return None


@dataclass(frozen=True)
class ModelConfig:
    depth: int | None = None
    vocab: int | None = None
    seq_len: int | None = None
    aspect_ratio: int | None = None
    head_dim: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    device: str | None = None
    backend: str | None = None
    device_batch: int | None = None
    accum: int | None = None
    tokens_per_step: int | None = None  # device_batch x seq_len x world_size x accum
    steps: int | None = None  # the horizon; None: unknown (a script's own)
    lr: float | None = None
    warmup_steps: int | None = None
    seed: int | None = None
    checkpoint_every: int | None = None
    data: str | None = None  # None: synthetic; else a token shard file or a dir of them


@dataclass(frozen=True)
class LaunchConfig:
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0  # the node this run dir is on
    master_addr: str | None = None
    master_port: int | None = None
    world_size: int | None = None
    threads_per_rank: int | None = None
    link_bit_s: float | None = None  # --link, for the sync model; None: the NIC's speed
    python: str | None = None  # the ranks' interpreter; None: scalemon's own
    cwd: str | None = None  # where a script's run starts (its module is found from there)

    def node_of(self, rank: int) -> int:
        """The node a global rank runs on: torchrun numbers ranks node by node."""
        return rank // self.nproc_per_node if self.nproc_per_node else 0

    def ranks_of(self, node: int) -> range:
        per_node = self.nproc_per_node or 1
        return range(node * per_node, (node + 1) * per_node)


@dataclass(frozen=True)
class RelayConfig:
    port: int
    secret: str  # 64 hex digits, shared by the run's nodes


def _section(cls: type, data: Any) -> Any:
    data = data if isinstance(data, dict) else {}
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known and v is not None})


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json. `command` is "train" (scalemon's trainer) or "script"."""

    name: str = ""
    created: float = 0.0
    command: str | None = None
    script: tuple[str, ...] | None = None  # the script and its arguments, for "script"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    relay: RelayConfig | None = None  # nnodes > 1: where node 0 takes the other nodes' records
    hosts: tuple[str, ...] = ()
    pids: Mapping[str, int] = field(default_factory=dict)  # supervisor, launcher

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """The config a parsed config.json holds; ConfigProblem says what is wrong with it
        ("config.json lacks 'model'", "config.json: model.depth is 0, not ...")."""
        if data.get("schema") != CONFIG_SCHEMA:
            raise ConfigProblem(f"config.json has no schema {CONFIG_SCHEMA}")
        for section in ("model", "train", "launch"):
            if not isinstance(data.get(section), dict):
                raise ConfigProblem(f"config.json lacks '{section}'")
        problem = config_problem(data)
        if problem:
            raise ConfigProblem(f"config.json: {problem}")
        relay = data.get("relay")
        return cls(
            name=data.get("name") or "", created=float(data.get("created") or 0.0),
            command=data.get("command"),
            script=tuple(data["script"]) if data.get("script") is not None else None,
            model=_section(ModelConfig, data["model"]), train=_section(TrainConfig, data["train"]),
            launch=_section(LaunchConfig, data["launch"]),
            relay=RelayConfig(relay["port"], relay["secret"]) if relay else None,
            hosts=tuple(data.get("hosts") or ()),
            pids={role: pid for role, pid in (data.get("pids") or {}).items() if pid is not None})

    def to_dict(self) -> dict[str, Any]:
        """config.json's content. An unknown field is left out, not written as null, unless
        null is its "unknown" (NULLABLE): what is written reads back (`from_dict`)."""
        data: dict[str, Any] = {
            "schema": CONFIG_SCHEMA, "name": self.name, "created": self.created,
            "command": self.command,
            "script": list(self.script) if self.script is not None else None,
            "model": asdict(self.model), "train": asdict(self.train),
            "launch": asdict(self.launch),
            "relay": asdict(self.relay) if self.relay else None,
            "hosts": list(self.hosts), "pids": dict(self.pids)}
        for section in ("model", "train", "launch"):
            data[section] = {key: value for key, value in data[section].items()
                             if value is not None or f"{section}.{key}" in NULLABLE}
        return {key: value for key, value in data.items()
                if value is not None or key in NULLABLE}

    def with_pids(self, **pids: int) -> RunConfig:
        return replace(self, pids={**self.pids, **pids})

    def relaunch_problem(self) -> str | None:
        """What this config lacks to be launched again (one phrase), or None."""
        if self.command not in ("train", "script"):
            return "it has no command" if self.command is None else \
                f"command {self.command!r} is unknown"
        data = self.to_dict()
        needed = LAUNCH_FIELDS + (("script",) if self.command == "script" else TRAINER_FIELDS)
        if self.launch.nnodes > 1:
            needed += ("relay.port", "relay.secret")
        for dotted in needed:
            present, value = _field(data, dotted)
            if not present or value is None:
                return f"it has no {dotted}"
        return None


class RunPhase(StrEnum):
    """Where a run is; the last three it never leaves."""

    STARTING = "starting"
    TRAINING = "training"
    STALLED = "stalled"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in ENDED


ENDED = frozenset({RunPhase.FINISHED, RunPhase.STOPPED, RunPhase.FAILED})
STOPPED_ON_REQUEST = "stopped on request"  # the supervisor's reason after a stop request


@dataclass(frozen=True)
class RunStatus:
    """status.json: how the launcher ended, written by the supervisor once it has."""

    exit_code: int | None  # None: unknown (the file is corrupt, or the supervisor was killed)
    reason: str = ""
    ended: float | None = None  # unix time

    @classmethod
    def from_dict(cls, data: Any) -> RunStatus:
        """A status.json's content; one that is there but broken still says the run ended."""
        corrupt = cls(exit_code=None, reason="status.json corrupt")
        if not isinstance(data, dict):
            return corrupt
        code, ended, reason = data.get("exit_code"), data.get("ended"), data.get("reason", "")
        if not (code is None or _whole(-(2**31))(code)) or not (ended is None or _finite(ended)):
            return corrupt
        if not isinstance(reason, str):
            return corrupt
        return cls(exit_code=code, reason=reason, ended=ended)

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "ended": self.ended, "reason": self.reason}

    def end_phase(self, rank_ends: set[str | None] | frozenset[str | None] = frozenset()
                  ) -> RunPhase:
        """How the run ended: failed unless the launcher exited 0; stopped when asked to stop
        (the supervisor says so) or when a rank says it stopped; else finished."""
        if self.exit_code != 0:
            return RunPhase.FAILED
        if self.reason == STOPPED_ON_REQUEST or "stopped" in rank_ends:
            return RunPhase.STOPPED
        return RunPhase.FINISHED


def _of(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None
        ) -> Any:
    """data[key] when it is of `kind` (never a bool for a number), else `default`."""
    value = data.get(key)
    if isinstance(value, bool) and kind is not bool:
        return default
    return value if isinstance(value, kind) else default


@dataclass(frozen=True)
class NodeLinkStatus:
    """How node 0's relay sees one other node."""

    connected: bool = False
    since: float | None = None  # when `connected` last changed (unix time)
    peer: str | None = None
    records: int = 0
    last_record: float | None = None
    done: bool = False  # said bye: its ranks have ended and everything was sent


@dataclass(frozen=True)
class RelayServerStatus:
    """relay.json on node 0: where it listens and each other node's link."""

    listen: str | None
    error: str | None = None  # why it is not listening
    refused: int = 0
    bad: int = 0
    nodes: Mapping[int, NodeLinkStatus] = field(default_factory=dict)
    updated: float | None = None  # when the relay wrote it (unix time)
    role: str = "server"

    def to_dict(self) -> dict[str, Any]:
        return {"role": "server", "listen": self.listen, "error": self.error,
                "refused": self.refused, "bad": self.bad,
                "nodes": {str(node): asdict(link) for node, link in self.nodes.items()},
                "updated": self.updated}


@dataclass(frozen=True)
class RelayClientStatus:
    """relay.json on the other nodes: their link to node 0."""

    node_rank: int
    server: str
    connected: bool = False
    since: float | None = None
    sent: int = 0
    error: str | None = None
    delivered: bool = False  # everything up to the end was sent and node 0 confirmed it
    updated: float | None = None
    role: str = "client"

    def to_dict(self) -> dict[str, Any]:
        return {"role": "client", "node_rank": self.node_rank, "server": self.server,
                "connected": self.connected, "since": self.since, "sent": self.sent,
                "error": self.error, "delivered": self.delivered, "updated": self.updated}


RelayStatus = RelayServerStatus | RelayClientStatus
_NUMBER_TYPES = (int, float)


def relay_status_from_dict(data: Any) -> RelayStatus | None:
    """The relay's state from relay.json (fields of the wrong kind read as unknown)."""
    if not isinstance(data, dict):
        return None
    if data.get("role") == "server":
        nodes = {}
        for key, link in (_of(data, "nodes", dict) or {}).items():
            if isinstance(key, str) and key.isdigit() and isinstance(link, dict):
                nodes[int(key)] = NodeLinkStatus(
                    connected=_of(link, "connected", bool, False),
                    since=_of(link, "since", _NUMBER_TYPES), peer=_of(link, "peer", str),
                    records=_of(link, "records", int, 0),
                    last_record=_of(link, "last_record", _NUMBER_TYPES),
                    done=_of(link, "done", bool, False))
        return RelayServerStatus(listen=_of(data, "listen", str), error=_of(data, "error", str),
                                 refused=_of(data, "refused", int, 0),
                                 bad=_of(data, "bad", int, 0), nodes=nodes,
                                 updated=_of(data, "updated", _NUMBER_TYPES))
    if data.get("role") == "client":
        return RelayClientStatus(
            node_rank=_of(data, "node_rank", int, 0), server=_of(data, "server", str, "?"),
            connected=_of(data, "connected", bool, False),
            since=_of(data, "since", _NUMBER_TYPES), sent=_of(data, "sent", int, 0),
            error=_of(data, "error", str), delivered=_of(data, "delivered", bool, False),
            updated=_of(data, "updated", _NUMBER_TYPES))
    return None
