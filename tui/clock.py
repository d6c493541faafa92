"""Wall-clock times as a person reads them (local time zone)."""

from __future__ import annotations

import math
import time


def clock(t: float) -> str:
    """13:49:17"""
    return time.strftime("%H:%M:%S", time.localtime(t))


def finish_time(now: float, seconds: float) -> str:
    """When something `seconds` from `now` ends: 'today 17:42', 'Tue 25 Nov 09:10',
    '3 Mar 2027' (no minutes a year out), or 'never' beyond what a date can say."""
    if not math.isfinite(seconds) or seconds > 1000 * 365.25 * 86400:
        return "never"
    end = time.localtime(now + seconds)
    today = time.localtime(now)
    if (end.tm_year, end.tm_yday) == (today.tm_year, today.tm_yday):
        return time.strftime("today %H:%M", end)
    if seconds < 180 * 86400:
        return time.strftime("%a %d %b %H:%M", end)
    return time.strftime("%d %b %Y", end)
