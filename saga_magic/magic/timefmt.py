"""Durations and moments as short text: "1 h 12 min", "14:03:12", "2025-06-04 14:03".

Shared by the one-line errors (``retry after 24 h (at ...)``), ``%copilot status`` (expiry
countdowns) and ``%copilot log`` (event times).
"""

from __future__ import annotations

import math
import time

__all__ = ["clock_time", "format_duration", "moment"]


def format_duration(seconds: float, *, round_up: bool = False) -> str:
    """Render a duration as "43 s", "12 min", "1 h 12 min" or "2 d 3 h".

    Args:
        seconds: A duration (its absolute value is shown).
        round_up: Round up to the smallest unit shown (for "retry after": never too early);
            the default truncates minutes and rounds seconds.

    Returns:
        Short text.
    """
    total = math.ceil(abs(seconds)) if round_up else round(abs(seconds))
    if total < 60:
        return f"{total} s"
    if round_up:  # to the minute below 48 h, to the hour above (the units shown)
        unit = 60 if total < 48 * 3600 else 3600
        total = math.ceil(total / unit) * unit
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def clock_time(ts: float) -> str:
    """Render a unix time as local ``HH:MM:SS``.

    Args:
        ts: Unix time.

    Returns:
        The local wall-clock time.
    """
    return time.strftime("%H:%M:%S", time.localtime(ts))


def moment(ts: float, *, now: float) -> str:
    """Render a unix time as local ``HH:MM:SS`` today, or ``YYYY-MM-DD HH:MM`` another day.

    Args:
        ts: The moment.
        now: The current unix time (decides "today").

    Returns:
        Short local time, with the date when it is not today.
    """
    when, today = time.localtime(ts), time.localtime(now)
    if when[:3] == today[:3]:
        return time.strftime("%H:%M:%S", when)
    return time.strftime("%Y-%m-%d %H:%M", when)
