"""Where events come from: the SQLite journal (any process) or the in-process event bus.

Both feed the app the same way: one :class:`~saga_tui.messages.EventsBatch` per poll or flush,
never one message per event (STYLE.md item 12).

* :class:`JournalTail` follows the journal by rowid with short reads through the core's
  :class:`~saga_magic.core.journal.JournalReader` (no read transaction is ever held open). The app
  runs :meth:`JournalTail.run` in a thread worker; every read there, the first (the backlog)
  included, is retried until it works, so a journal that is missing, locked or corrupt at start
  is picked up once it is fixed. History pages and exports use readers of their own, so a long
  scan never delays the tail.
* :class:`BusSource` subscribes to :func:`saga_magic.core.events.subscribe`. Callbacks arrive on
  whatever thread emitted the event (often the app's own event loop thread, when the app runs a
  prompt), so the callback only appends to a lock-protected buffer; the app drains it on a timer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from saga_magic.core.events import JournalReader

from .messages import LogEntry

if TYPE_CHECKING:
    from saga_magic.core.events import Event

    from .filters import EventFilter

__all__ = ["BusSource", "JournalTail", "iter_matching", "read_history"]

Subscribe = Callable[[Callable[["Event"], None]], Callable[[], None]]
"""The shape of ``saga_magic.core.events.subscribe``."""


class JournalTail:
    """Follow a journal file by rowid.

    Args:
        path: The journal database.
        batch_limit: Most rows read per poll.
    """

    def __init__(self, path: Path, *, batch_limit: int = 5000) -> None:
        self.path = path
        self.reader = JournalReader(path)
        """The tail's own read-only reader."""
        self.batch_limit = batch_limit
        self.last_rowid = 0
        """The newest rowid already delivered."""
        self._stop = threading.Event()

    def exists(self) -> bool:
        """Tell whether the journal file is there yet.

        Returns:
            True when it exists.
        """
        return self.reader.exists()

    def backlog(self, count: int) -> list[LogEntry]:
        """Read the newest ``count`` events (the first paint) and start tailing after them.

        Args:
            count: How many events.

        Returns:
            Entries, oldest first.
        """
        rows = self.reader.read_last(count)
        if rows:
            self.last_rowid = rows[-1].rowid
        return [LogEntry(row.rowid, row.event) for row in rows]

    def poll(self) -> list[LogEntry]:
        """Read what was appended since the last poll (at most ``batch_limit`` rows).

        A journal that was deleted and recreated (rowids restarting) is followed from its start.

        Returns:
            New entries, oldest first (empty when nothing new).
        """
        rows = self.reader.read_after(self.last_rowid, limit=self.batch_limit)
        if not rows and self.last_rowid and self.reader.max_rowid() < self.last_rowid:
            self.last_rowid = 0
            rows = self.reader.read_after(0, limit=self.batch_limit)
        if rows:
            self.last_rowid = rows[-1].rowid
        return [LogEntry(row.rowid, row.event) for row in rows]

    def run(
        self,
        deliver: Callable[[list[LogEntry]], None],
        status: Callable[[str, str], None],
        *,
        backlog: int = 0,
        interval: float = 0.1,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Poll until :meth:`stop` (or ``cancelled()``), delivering one batch per non-empty poll.

        The first successful read of an existing journal delivers its newest ``backlog`` events
        (the first paint); later reads deliver what was appended. A full batch is followed by
        another read at once (catching up); otherwise the loop waits ``interval`` seconds. Read
        errors are reported through ``status`` and retried, the backlog's too.

        Args:
            deliver: Called with each non-empty batch (from this thread).
            status: Called with ``(state, detail)`` when the source's health changes:
                ``live``, ``waiting`` (no journal file yet) or ``error`` (every failed read).
            backlog: Events to show from an existing journal before following it.
            interval: Seconds between polls when idle.
            cancelled: Returns True when the worker running this loop was cancelled.
        """
        last_state = ""
        primed = backlog <= 0
        while not self._stop.is_set() and not cancelled():
            detail = ""
            try:
                if not primed and self.exists():
                    batch = self.backlog(backlog)
                    primed = True
                else:
                    batch = self.poll()
                state = "live" if self.exists() else "waiting"
            except Exception as exc:  # corrupt or locked journal: report, keep trying
                batch, state, detail = [], "error", f"{type(exc).__name__}: {exc}"[:200]
            if state != last_state or state == "error":
                status(state, detail)
                last_state = state
            if batch:
                deliver(batch)
            if len(batch) < self.batch_limit:
                self._stop.wait(interval)

    def stop(self) -> None:
        """Make :meth:`run` return after its current read."""
        self._stop.set()

    def close(self) -> None:
        """Stop and close the reader."""
        self.stop()
        self.reader.close()


class BusSource:
    """Collect events from the in-process bus; the app drains them in batches.

    Args:
        subscribe: The bus's subscribe function (``saga_magic.core.events.subscribe``).
        limit: Most events buffered between drains (older ones are dropped and counted).
    """

    def __init__(
        self,
        subscribe: Callable[[Callable[[Event], None]], Callable[[], None]],
        *,
        limit: int = 50_000,
    ) -> None:
        self._subscribe = subscribe
        self._lock = threading.Lock()
        self._buffer: deque[Event] = deque(maxlen=limit)
        self._unsubscribe: Callable[[], None] | None = None
        self.dropped = 0
        """Events lost because the buffer was full between two drains."""

    def start(self) -> None:
        """Subscribe to the bus (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = self._subscribe(self._on_event)

    def stop(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(event)

    def drain(self) -> list[LogEntry]:
        """Take everything buffered so far.

        Returns:
            Entries (without rowids), oldest first.
        """
        with self._lock:
            events = list(self._buffer)
            self._buffer.clear()
        return [LogEntry(None, event) for event in events]


def read_history(
    reader: JournalReader, *, before: int | None, event_filter: EventFilter, limit: int
) -> tuple[list[LogEntry], int | None, bool]:
    """Read one page of older matching events (the filter runs in SQL).

    A ``key=value`` text filter is narrowed in SQL and confirmed here, so a page may hold
    fewer than ``limit`` entries without history being exhausted: continue from ``next_before``.

    Args:
        reader: The journal reader.
        before: Only rows below this rowid (``None``: the newest rows).
        event_filter: The filter to apply.
        limit: Page size.

    Returns:
        The entries (oldest first), the rowid to read before next time, and whether nothing
        older matches.
    """
    rows = reader.query(before=before, limit=limit, **event_filter.query_kwargs())
    recheck = event_filter.needs_recheck
    entries = [
        LogEntry(row.rowid, row.event)
        for row in rows
        if not recheck or event_filter.matches(row.event)
    ]
    next_before = rows[0].rowid if rows else before
    return entries, next_before, len(rows) < limit


def iter_matching(
    reader: JournalReader,
    event_filter: EventFilter,
    *,
    page: int = 5000,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[LogEntry]:
    """Yield every matching event in the journal, oldest first, one short read per page.

    Args:
        reader: The journal reader.
        event_filter: The filter to apply.
        page: Rows per read.
        cancelled: Checked before each read; when it returns True the iteration ends.

    Yields:
        Matching entries.
    """
    after = 0
    kwargs = event_filter.query_kwargs()
    while not cancelled():
        rows = reader.query(after=after, limit=page, **kwargs)
        for row in rows:
            if not event_filter.needs_recheck or event_filter.matches(row.event):
                yield LogEntry(row.rowid, row.event)
        if len(rows) < page:
            return
        after = rows[-1].rowid
