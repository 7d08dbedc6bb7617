"""Small, pure formatting helpers for times and durations shown on screen."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "format_ago", "format_clock_time", "format_countdown", "format_duration"]

Clock = Callable[[], float]
"""A function returning the current unix time (``time.time`` or a test double)."""


def format_duration(seconds: float) -> str:
    """Format a non-negative duration compactly: ``42s``, ``3m 05s``, ``1h 02m``, ``2d 03h``.

    Args:
        seconds: The duration; negative values are treated as their absolute value.

    Returns:
        The text.
    """
    total = int(abs(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def format_countdown(target: float | None, now: float) -> str:
    """Describe the time left until ``target``.

    Args:
        target: Unix time of the deadline, or ``None`` when unknown.
        now: The current unix time.

    Returns:
        ``"in 3m 05s"``, ``"expired 12s ago"`` or ``"unknown"``.
    """
    if target is None:
        return "unknown"
    left = target - now
    if left > 0:
        return f"in {format_duration(left)}"
    return f"expired {format_duration(left)} ago"


def format_ago(then: float | None, now: float) -> str:
    """Describe how long ago ``then`` was.

    Args:
        then: A past unix time, or ``None``.
        now: The current unix time.

    Returns:
        ``"just now"``, ``"5s ago"``, ``"2m 10s ago"`` or ``"never"``.
    """
    if then is None:
        return "never"
    elapsed = now - then
    if elapsed < 1:
        return "just now"
    return f"{format_duration(elapsed)} ago"


def format_clock_time(ts: float, *, millis: bool = False) -> str:
    """Format a unix time as local wall-clock time.

    Args:
        ts: The unix time.
        millis: Append milliseconds.

    Returns:
        ``"HH:MM:SS"`` or ``"HH:MM:SS.mmm"``.
    """
    text = time.strftime("%H:%M:%S", time.localtime(ts))
    if millis:
        text += f".{int((ts % 1) * 1000):03d}"
    return text
