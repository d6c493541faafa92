"""Reading training steps out of a log's text lines (pure: no I/O).

For runs scalemon did not start there are no step records, only what the
training script prints. This module understands:

- nanochat's per-step line, base training (with the `/N` horizon) and
  mid-training / SFT (without it), old (`mfu:`) and new (`bf16_mfu:`, `epoch:`,
  `eta:`) alike, and forks that add `| key: value` fields:
  `step 00120/05000 (2.40%) | loss: 5.123456 | lrm: 1.00 | dt: 350.12ms | tok/sec: 46,795 | ...`
- nanochat's evaluation lines: `Step 00250 | Validation bpb: 0.812345` (also
  `CORE metric:`, `ChatCORE:` and any other `name: number` fields);
- a generic fallback: any line with a step (or iter) number, a loss and a time
  per step with its unit, e.g. `iter 100: loss 4.2345, time 350.12ms` or
  scalemon's own `step 1/200 | loss 9.0109 | dt 0.33s | tok/s 3119`.

`parse_line` returns a `StepLine`, an `EvalLine` or None; it never raises.
`LogParser` adds the counts a view shows (lines read, steps, unreadable lines).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"

# nanochat: the step (and horizon) before the first "|", then "key: value" fields.
_HEAD = re.compile(r"\bstep (\d+)(?:/(\d+))?(?: \((\d+(?:\.\d+)?)%\))?\s*$", re.IGNORECASE)
_EVAL_HEAD = re.compile(r"^\s*step (\d+)\s*$", re.IGNORECASE)
_VALUE = re.compile(rf"^({_NUMBER})\s*(ms|s|m|%)?$", re.IGNORECASE)

# The generic fallback: three things somewhere in the line.
_GEN_STEP = re.compile(r"\b(?:step|iter(?:ation)?)\b\s*[:=#]?\s*(\d+)(?:\s*/\s*(\d+))?",
                       re.IGNORECASE)
_GEN_LOSS = re.compile(rf"\b(?:train[_ ])?loss\b\s*[:=]?\s*({_NUMBER})(?![\w.])", re.IGNORECASE)
_GEN_TIME = re.compile(
    rf"(?<![\w/])(?<!total )(dt|step[_ ]?time|iter(?:ation)?[_ ]?time|time(?:/step|/iter)?)"
    rf"(_ms|\(ms\))?\s*[:=]?\s*({_NUMBER})\s*(ms|s|sec|secs)?(?![\w.])", re.IGNORECASE)
_GEN_TOK_S = re.compile(r"\b(?:tok(?:ens)?/s(?:ec)?|tok(?:ens)?_per_sec(?:ond)?)\s*[:=]?\s*"
                        r"(\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_MENTIONS_STEP = re.compile(r"\b(?:step|iter(?:ation)?)\b\s*[:=#]?\s*\d", re.IGNORECASE)
_TRACEBACK = "Traceback (most recent call last)"
MAX_STEP = 10**12  # a bigger "step" is some other number (and would not fit a step table)


@dataclass(frozen=True, slots=True)
class StepLine:
    """One training step as the script printed it (times in seconds)."""

    step: int
    dt: float  # seconds this step took
    loss: float | None
    horizon: int | None = None  # N of `step S/N`
    tok_s: float | None = None
    mfu: float | None = None  # model FLOPs utilisation in percent, as printed
    form: str = "nanochat"  # nanochat | nanochat-sft (no /N) | generic
    eta_s: float | None = None  # the script's own time-to-go, in seconds (`eta: 3.2m`)


@dataclass(frozen=True, slots=True)
class EvalLine:
    """An evaluation at a step: `Step 00250 | Validation bpb: 0.812345`."""

    step: int
    metrics: tuple[tuple[str, float], ...]  # (name as printed, value)

    def text(self) -> str:
        return f"step {self.step}: " + ", ".join(f"{name} {value:.6g}"
                                                  for name, value in self.metrics)


def _value(text: str) -> tuple[float, str] | None:
    """(number, unit) of a field value like `350.12ms`, `46,795`, `0.64m`, `12.3%`."""
    text = text.strip().replace(",", "")
    try:
        return float(text), ""  # the common case, at a fraction of the regex's cost
    except ValueError:
        pass
    match = _VALUE.match(text)
    if not match:
        return None
    return float(match.group(1)), (match.group(2) or "").lower()


def _fields(parts: list[str]) -> dict[str, str]:
    """`key: value` parts into a dict (lower-case keys); parts without a colon are skipped."""
    out = {}
    for part in parts:
        key, colon, value = part.partition(":")
        if colon:
            out[key.strip().lower()] = value.strip()
    return out


def _number(fields: dict[str, str], *keys: str) -> float | None:
    for key in keys:
        parsed = _value(fields[key]) if key in fields else None
        if parsed is not None:
            return parsed[0]
    return None


def _seconds(value: float, unit: str) -> float:
    return {"ms": value / 1000, "m": value * 60}.get(unit, value)


def _duration(text: str | None) -> float | None:
    """`3.2m`, `40s`, `350ms` as seconds; a bare number is minutes, as nanochat prints it."""
    parsed = _value(text) if text else None
    if parsed is None or not 0 <= parsed[0] < math.inf:
        return None
    value, unit = parsed
    return _seconds(value, unit or "m") if unit != "%" else None


def _usable(step: int, dt: float) -> bool:
    return step <= MAX_STEP and 0 <= dt < math.inf


def _nanochat(line: str) -> StepLine | EvalLine | None:
    parts = line.split("|")
    head = _HEAD.search(parts[0]) if len(parts) > 1 else None
    if head is None:
        return None
    fields = _fields(parts[1:])
    dt = _value(fields.get("dt", ""))
    step = int(head.group(1))
    if "loss" in fields and dt is not None and _usable(step, _seconds(*dt)):
        horizon = int(head.group(2)) if head.group(2) else None
        return StepLine(
            step=step,
            dt=_seconds(*dt),
            loss=_number(fields, "loss"),
            horizon=horizon if horizon and horizon <= MAX_STEP else None,
            tok_s=_number(fields, "tok/sec", "tok/s"),
            mfu=_number(fields, "bf16_mfu", "mfu"),
            form="nanochat" if horizon else "nanochat-sft",
            eta_s=_duration(fields.get("eta")),
        )
    return _evaluation(parts)


def _evaluation(parts: list[str]) -> EvalLine | None:
    """`Step 00250 | Validation bpb: 0.812345`: only `name: number` fields after the step."""
    head = _EVAL_HEAD.match(parts[0])
    names = [part.partition(":")[0].strip() for part in parts[1:]]
    values = [_value(part.partition(":")[2]) if ":" in part else None for part in parts[1:]]
    numbers = [v[0] for v in values if v is not None and not v[1]]
    if head is None or len(numbers) != len(values):  # a field without a number, or with a unit
        return None
    return EvalLine(step=int(head.group(1)),
                    metrics=tuple(zip(names, numbers, strict=True)))


def _generic(line: str) -> StepLine | None:
    step, loss, time = _GEN_STEP.search(line), _GEN_LOSS.search(line), _GEN_TIME.search(line)
    if not (step and loss and time):
        return None
    key, ms_hint, value, unit = time.groups()
    unit = (unit or "").lower()
    if not unit and not ms_hint and key.lower() != "dt":
        return None  # "time 12" could be anything: a unit or the name `dt` says it is a step time
    seconds = float(value) / 1000 if unit == "ms" or (ms_hint and not unit) else float(value)
    if not _usable(int(step.group(1)), seconds):
        return None
    tok_s = _GEN_TOK_S.search(line)
    horizon = int(step.group(2)) if step.group(2) else None
    return StepLine(
        step=int(step.group(1)),
        dt=seconds,
        loss=float(loss.group(1)),
        horizon=horizon if horizon and horizon <= MAX_STEP else None,
        tok_s=float(tok_s.group(1).replace(",", "")) if tok_s else None,
        form="generic",
    )


def parse_line(line: str) -> StepLine | EvalLine | None:
    """The step or evaluation a log line reports, or None for any other line."""
    try:
        return _nanochat(line) or _generic(line)
    except (ValueError, OverflowError):  # a number too odd for float/int: just not a step
        return None


def mentions_step(line: str) -> bool:
    """Whether a line looks like it reports a step (so failing to read it is worth counting)."""
    return bool(_MENTIONS_STEP.search(line))


class LogParser:
    """Parses lines one by one and counts what it saw; never raises.

    `unreadable` counts lines that mention a step but could not be read (a
    changed log format shows up here); other text (config dumps, warnings) is
    only counted in `lines`. `traceback` is True when a Python traceback
    appeared after the last step line (the script is dying or died).
    """

    def __init__(self) -> None:
        self.lines = 0
        self.steps = 0
        self.evals = 0
        self.unreadable = 0
        self.last_unreadable: str | None = None
        self.traceback = False

    def feed(self, line: str) -> StepLine | EvalLine | None:
        self.lines += 1
        parsed = parse_line(line)
        if isinstance(parsed, StepLine):
            self.steps += 1
            self.traceback = False
        elif isinstance(parsed, EvalLine):
            self.evals += 1
        elif _TRACEBACK in line:
            self.traceback = True
        elif mentions_step(line):
            self.unreadable += 1
            self.last_unreadable = line.strip()[:200]
        return parsed


_PRINTED_FLOPS = re.compile(rf"Estimated FLOPs per token:\s*({_NUMBER})", re.IGNORECASE)


def printed_flops_per_token(lines: list[str]) -> float | None:
    """What the script says its model costs a token (nanochat prints `Estimated FLOPs per
    token: 3.145800e+07` at its start), to read beside scalemon's own count."""
    for line in lines:
        found = _PRINTED_FLOPS.search(line)
        if found:
            value = float(found.group(1))
            return value if math.isfinite(value) and value > 0 else None
    return None
