"""Human units: parse link speeds and references, format counts, bytes and durations.

Pure functions shared by every view, so a number prints the same everywhere.
"""

from __future__ import annotations

import math
import re

_LINK_RE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)([a-z/]*)\s*", re.IGNORECASE)
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BINARY_PREFIX = {"k": 2.0**10, "m": 2.0**20, "g": 2.0**30, "t": 2.0**40}
_BIT_UNITS = {"", "b", "bit", "bits", "bit/s", "b/s", "bps", "be"}  # 'be' as in GbE
_BYTE_UNITS = {"B", "B/s", "Bps", "byte", "bytes", "byte/s"}


def parse_link(text: str) -> float:
    """A link speed in bits per second: '1gbit', '2.5GbE', '100mbps', '10G', '125MB/s'.

    Upper-case 'B' means bytes, anything else bits (as network people write it).
    """
    match = _LINK_RE.fullmatch(text)
    hint = "try 1gbit, 2.5gbe, 100mbit or 125MB/s"
    if not match:
        raise ValueError(f"cannot parse link speed {text!r} ({hint})")
    value = float(match.group(1))
    prefix, binary, unit = match.group(2).lower(), match.group(3), match.group(4)
    if unit in _BYTE_UNITS:
        scale = _BINARY_PREFIX[prefix] if binary and prefix else _PREFIX[prefix]
        bits = value * scale * 8
    elif unit.lower() in _BIT_UNITS and not binary:
        bits = value * _PREFIX[prefix]
    else:
        raise ValueError(f"cannot parse link speed {text!r} ({hint})")
    if bits <= 0:
        raise ValueError(f"link speed must be positive, got {text!r}")
    return bits


def parse_reference(text: str) -> tuple[float, int]:
    """'115@4' -> (115.0 tok/s, depth 4): a throughput measured at a depth."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*@\s*d?([0-9]+)\s*", text)
    if not match:
        raise ValueError(f"--ref-tok-s needs TOK_S@DEPTH, for example 115@4, got {text!r}")
    tok_s, depth = float(match.group(1)), int(match.group(2))
    if tok_s <= 0 or depth < 1:
        raise ValueError(f"--ref-tok-s needs a positive speed and depth, got {text!r}")
    return tok_s, depth


def format_count(n: float, digits: int = 3) -> str:
    """36700160 -> '36.7M', 1.113e9 -> '1.11B' (three significant digits)."""
    if n is None or not math.isfinite(n):
        return "N/A"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{_significant(n / scale, digits)}{suffix}"
    return _significant(n, digits)


def format_params(n: int) -> str:
    """Parameter counts with one decimal, as model cards print them: 36.7M, 185.6M, 1.2B."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return format_count(n)


def _significant(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def format_bytes(n: float) -> str:
    """Decimal units, as link speeds and datasheets use: 742 MB, 2.24 GB."""
    if n is None or not math.isfinite(n):
        return "N/A"
    for scale, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= scale:
            return f"{_significant(n / scale, 3)} {suffix}"
    return f"{int(n)} B"


def format_rate(bits_per_s: float) -> str:
    if bits_per_s is None or not math.isfinite(bits_per_s):
        return "N/A"
    for scale, suffix in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bits_per_s >= scale:
            return f"{bits_per_s / scale:.3g} {suffix}"
    return f"{bits_per_s:.0f} bit/s"


def format_duration(seconds: float) -> str:
    """Seconds in the unit a person would say: '850 ms', '42 s', '48 min', '3.4 h', '26 years'."""
    if seconds is None or not math.isfinite(seconds):
        return "N/A"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if 0 < seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if hours < 48:
        return f"{hours:.1f} h"
    days = hours / 24
    if days < 365:
        return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"
    years = seconds / (365.25 * 24 * 3600)
    return f"{years:.1f} years" if years < 10 else f"{years:,.0f} years"


def format_percent(share: float, decimals: int = 0) -> str:
    if share is None or not math.isfinite(share):
        return "N/A"
    return f"{share * 100:.{decimals}f}%"


def format_money(amount: float) -> str:
    if amount is None or not math.isfinite(amount):
        return "N/A"
    if amount >= 1e6:
        return f"${amount / 1e6:.1f}M"
    if amount >= 1000:
        return f"${amount:,.0f}"
    return f"${amount:.2f}"
