"""Export events to JSON Lines (one ``Event.to_json()`` per line)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from saga_magic.core.keys import ensure_private_dir

from .messages import LogEntry

__all__ = ["ExportCancelled", "default_export_path", "export_jsonl"]


class ExportCancelled(Exception):
    """The export was cancelled part way; the partial file was removed."""


def default_export_path(home: Path, now: float) -> Path:
    """Choose where an export goes: ``<home>/exports/events-YYYYmmdd-HHMMSS.jsonl``.

    ``home`` and ``exports`` are created with mode 0700 when missing (events are redacted but
    still private). Falls back to the current folder when they cannot be created.

    Args:
        home: The product's home folder (``Settings.home``).
        now: The current unix time (names the file).

    Returns:
        A path that does not exist yet.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = home / "exports"
    try:
        ensure_private_dir(home)  # first, so a missing home is not created 0755 as a parent
        ensure_private_dir(folder)
    except OSError:
        folder = Path.cwd()
    path = folder / f"events-{stamp}.jsonl"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"events-{stamp}-{counter}.jsonl"
    return path


def export_jsonl(
    entries: Iterable[LogEntry],
    path: Path,
    *,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Write events to a new JSONL file (mode 0600), created only when there is an event to write.

    Args:
        entries: The events, in the order to write them.
        path: A file that must not exist yet.
        cancelled: Checked before each event and at the end; when it returns True the export
            stops.

    Returns:
        How many events were written (0: no file was created).

    Raises:
        ExportCancelled: ``cancelled()`` turned True; the partial file was removed.
        OSError: the file exists or cannot be written (a partial file is removed).
    """
    handle: IO[str] | None = None
    count = 0
    try:
        for entry in entries:
            if cancelled():
                raise ExportCancelled(f"export to {path} cancelled after {count:,} events")
            if handle is None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                handle = os.fdopen(fd, "w", encoding="utf-8")
            handle.write(entry.event.to_json())
            handle.write("\n")
            count += 1
        if cancelled():  # the source may end early when cancelled: this file is not whole
            raise ExportCancelled(f"export to {path} cancelled after {count:,} events")
        if handle is not None:
            handle.close()
    except BaseException:
        if handle is not None:
            handle.close()
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return count
