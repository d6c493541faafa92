"""The N/A value: what a probe reports for a reading the hardware does not give.

`NA` is a float NaN, so arithmetic and comparisons behave like NaN (and a
derived value such as ``NA / total * 100`` stays `NA`), but it prints and
formats as ``N/A`` whatever the format spec, it is falsy, and it pickles and
copies to the same singleton, so ``is_na(x)`` (an identity check) survives a
trip through pickle or a queue. A real reading of 0 is never replaced by NA,
and NA is never replaced by 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, SupportsIndex, overload

__all__ = ["NA", "NAType", "Explained", "as_float", "is_na", "ratio"]

# [[fill]align] ... [width] of the format mini-language; the rest (sign, zero
# padding, precision, type) means nothing for a missing value.
_SPEC = re.compile(r"^(?:(?P<fill>.)?(?P<align>[<>=^]))?[-+ ]?z?#?0?(?P<width>\d*)")


class NAType(float):
    """The type of `NA`; use the `NA` singleton, never construct another."""

    __slots__ = ()
    _instance: NAType | None = None

    def __new__(cls) -> NAType:
        if cls._instance is None:
            cls._instance = super().__new__(cls, "nan")
        return cls._instance

    def __repr__(self) -> str:
        return "N/A"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        m = _SPEC.match(spec)
        assert m is not None  # every part of the pattern is optional, so it always matches
        align = m["align"] or ">"  # a number column is right-aligned
        if align == "=":
            align = ">"
        return format("N/A", f"{m['fill'] or ''}{align}{m['width']}")

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NA"  # unpickles as the module global, so identity survives

    def __copy__(self) -> NAType:
        return self

    def __deepcopy__(self, memo: dict) -> NAType:
        return self

    # float's signature, so NA stays a float to the checker; at run time round(NA) is NA.
    @overload
    def __round__(self, ndigits: None = None, /) -> int: ...
    @overload
    def __round__(self, ndigits: SupportsIndex, /) -> float: ...
    def __round__(self, ndigits: SupportsIndex | None = None) -> Any:
        return self


def _stay_na(op: str) -> Callable[..., Any]:
    base = getattr(float, op)

    def method(self: float, *args: Any) -> Any:
        result = base(self, *args)
        if isinstance(result, float) and math.isnan(result):
            return NA
        return result  # NotImplemented, or a real number (1 ** NA is 1.0)

    method.__name__ = op
    return method


_ARITHMETIC = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
    "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__",
    "__mod__", "__rmod__", "__pow__", "__rpow__", "__neg__", "__pos__", "__abs__",
)  # fmt: skip
for _op in _ARITHMETIC:
    setattr(NAType, _op, _stay_na(_op))

NA = NAType()


def is_na(value: Any) -> bool:
    """True only for the `NA` singleton (a plain NaN is a reading, e.g. a NaN loss)."""
    return value is NA


def as_float(value: Any) -> float:
    """`value` as a float, or `NA` for None, NaN, a non-number or a string like 'N/A'."""
    if value is None or isinstance(value, bool):
        return NA
    try:
        result = float(value)
    except (TypeError, ValueError):
        return NA
    return NA if math.isnan(result) else result


def ratio(part: float, whole: float) -> float:
    """part / whole, or `NA` when either is NA or whole is 0."""
    if is_na(part) or is_na(whole) or not whole:
        return NA
    return part / whole


class Explained:
    """Mixin for snapshots: `reasons` pairs each N/A field with why it is N/A."""

    __slots__ = ()
    reasons: tuple[tuple[str, str], ...]

    def reason(self, field: str) -> str | None:
        """Why `field` is N/A, or None when it has a reading."""
        for name, why in self.reasons:
            if name == field:
                return why
        return None
