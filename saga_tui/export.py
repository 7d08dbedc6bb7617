"""Export events to JSON Lines (one ``Event.to_json()`` per line)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from .messages import LogEntry

__all__ = ["default_export_path", "export_jsonl"]


def default_export_path(home: Path, now: float) -> Path:
    """Choose where an export goes: ``<home>/exports/events-YYYYmmdd-HHMMSS.jsonl``.

    Falls back to the current folder when ``home`` cannot be created.

    Args:
        home: The product's home folder (``Settings.home``).
        now: The current unix time (names the file).

    Returns:
        A path that does not exist yet.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = home / "exports"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        folder = Path.cwd()
    path = folder / f"events-{stamp}.jsonl"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"events-{stamp}-{counter}.jsonl"
    return path


def export_jsonl(entries: Iterable[LogEntry], path: Path) -> int:
    """Write events to a new JSONL file (mode 0600: events are redacted but still private).

    Args:
        entries: The events, in the order to write them.
        path: A file that must not exist yet.

    Returns:
        How many events were written.

    Raises:
        OSError: the file exists or cannot be written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(entry.event.to_json())
            handle.write("\n")
            count += 1
    return count
