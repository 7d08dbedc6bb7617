"""The event journal: a bounded SQLite log of redacted events that another process can tail.

Writing (:class:`EventJournal`): ``append(event)`` puts the event on a bounded in-memory queue and
returns; a daemon writer thread drains the queue in batches (one short ``BEGIN IMMEDIATE``
transaction and one ``executemany`` per batch) and prunes the table to ``max_rows`` every few
batches. The queue drops its oldest event when full (counted), so a slow disk never blocks or grows
the caller. Writer errors (read-only folder, disk full, a path that is a folder) are counted in
:meth:`EventJournal.stats` and logged once at WARNING on the plain stdlib logger ``saga.journal``;
they never reach the code that emitted the event.

Reading (:class:`JournalReader`, also ``EventJournal.open_reader(path)``): a read-only connection
(``mode=ro``: it never creates the database) that runs each query as one short autocommit read, so
no read transaction is ever held open between calls and writers and WAL checkpoints are never held
back. Rows come back as :class:`JournalRow` ordered by ``rowid`` (ascending), which only grows
(``AUTOINCREMENT``): tailing is ``read_after(last_seen_rowid)``.

The schema is applied by the runner the token store uses too (:mod:`._sqlite`): named migrations
recorded in ``_migrations``, declared through sqlite-utils (indexes with ``create_index``) and
applied under one ``BEGIN IMMEDIATE``; sqlite-utils is imported only when a migration is pending.
Rows are written and read with plain :mod:`sqlite3`: the writer needs exactly one connection owned
by its thread, explicit ``BEGIN IMMEDIATE`` batches with ``executemany`` and a read-only URI
connection for readers, which sqlite-utils would only wrap. The habits are those of STYLE.md item
10: WAL switched on explicitly outside a transaction, a busy timeout, short write transactions.

:class:`Event` lives here (the record the journal stores) and is re-exported by
``saga_magic.core.events``, which builds events and redacts their context.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._files import create_private_file
from ._sqlite import Migration, apply_migrations

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["Event", "EventJournal", "JournalReader", "JournalRow", "JournalStats"]

_LOG = logging.getLogger("saga.journal")

_SELECT = "SELECT id, ts, level, event, user_id, op_id, pid, context FROM events"
_INSERT = (
    "INSERT INTO events (ts, level, event, user_id, op_id, pid, context)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _create_events(db: Database) -> None:
    # Plain SQL for the table: rowids must never be reused (they are the readers' cursor), and
    # sqlite-utils' public API has no AUTOINCREMENT.
    db.execute(
        "CREATE TABLE IF NOT EXISTS events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, level TEXT NOT NULL,"
        " event TEXT NOT NULL, user_id TEXT, op_id TEXT, pid INTEGER,"
        " context TEXT NOT NULL DEFAULT '{}')"
    )
    events = db.table("events")
    for column in ("ts", "event", "user_id"):
        events.create_index([column], index_name=f"events_{column}", if_not_exists=True)


_MIGRATIONS: tuple[Migration, ...] = (Migration("0001_create_events", _create_events),)
"""Named schema migrations, applied in order and recorded in ``_migrations``; append, never edit."""


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"event field {key!r} must be a string or null")


@dataclass(frozen=True, slots=True)
class Event:
    """One structured event, as delivered to logging, subscribers and the journal.

    Build events with :func:`saga_magic.core.events.log_with_context`, which redacts the context;
    treat ``context`` as read-only (subscribers share the same dict).
    """

    ts: float
    """Unix time of the emission (``time.time()``)."""
    level: str
    """Level name, e.g. ``"INFO"`` or ``"WARNING"``."""
    event: str
    """Stable snake_case event name, e.g. ``"token_refresh_retry"``."""
    user_id: str | None
    """User whose token or request this is about, when known."""
    op_id: str | None
    """One id per ``get_valid_token()`` / ``reason()`` call, shared by its retries."""
    pid: int
    """Process id of the emitter."""
    context: dict[str, Any] = field(default_factory=dict)
    """Redacted, JSON-safe details (``attempt``, ``wait_s``, ``status`` ...)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a plain dict (the context is copied, shallowly).

        Returns:
            ``{"ts", "level", "event", "user_id", "op_id", "pid", "context"}``.
        """
        return {
            "ts": self.ts,
            "level": self.level,
            "event": self.event,
            "user_id": self.user_id,
            "op_id": self.op_id,
            "pid": self.pid,
            "context": dict(self.context),
        }

    def to_json(self) -> str:
        """Return the event as one compact line of JSON.

        Returns:
            The JSON text of :meth:`to_dict` (non-JSON values, if any slipped in, become strings).
        """
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (or a JSONL export line, parsed).

        Args:
            data: A mapping with at least ``ts`` and ``event``; ``level`` defaults to ``"INFO"``,
                ``pid`` to 0, ``context`` to ``{}``, ``user_id`` / ``op_id`` to ``None``.

        Returns:
            The event.

        Raises:
            ValueError: a field is missing or has the wrong type.
        """
        ts = data.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise ValueError("event field 'ts' must be a number")
        name = data.get("event")
        if not isinstance(name, str) or not name:
            raise ValueError("event field 'event' must be a non-empty string")
        level = data.get("level", "INFO")
        if not isinstance(level, str):
            raise ValueError("event field 'level' must be a string")
        pid = data.get("pid", 0)
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise ValueError("event field 'pid' must be an integer")
        context = data.get("context") or {}
        if not isinstance(context, Mapping):
            raise ValueError("event field 'context' must be an object")
        return cls(
            ts=float(ts),
            level=level,
            event=name,
            user_id=_optional_str(data, "user_id"),
            op_id=_optional_str(data, "op_id"),
            pid=pid,
            context=dict(context),
        )

    @classmethod
    def from_json(cls, text: str) -> Event:
        """Rebuild an event from :meth:`to_json` output.

        Args:
            text: One JSON object.

        Returns:
            The event.

        Raises:
            ValueError: not JSON, not an object, or a field has the wrong type.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an event must be a JSON object")
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One journal row: its rowid (the tailing cursor) and the event."""

    rowid: int
    """Row id; grows monotonically and is never reused, so it is a safe cursor."""
    event: Event
    """The stored event."""


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters of one :class:`EventJournal` since it was created."""

    written: int
    """Events committed to the database."""
    dropped: int
    """Events dropped because the queue was full, or appended after ``close()``."""
    failed: int
    """Events lost to write errors."""
    errors: int
    """Write or open errors met by the writer thread."""
    queued: int
    """Events accepted but not yet written, failed or dropped."""


def _row(raw: tuple[Any, ...]) -> JournalRow:
    rowid, ts, level, name, user_id, op_id, pid, context = raw
    try:
        decoded = json.loads(context)
    except (TypeError, ValueError):
        decoded = None
    if not isinstance(decoded, dict):
        decoded = {"_undecodable": str(context)[:200]}
    event = Event(
        ts=float(ts),
        level=str(level),
        event=str(name),
        user_id=user_id,
        op_id=op_id,
        pid=int(pid or 0),
        context=decoded,
    )
    return JournalRow(rowid=int(rowid), event=event)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class JournalReader:
    """Read-only access to a journal, for the TUI or any other process tailing it.

    The reader never creates the database (it opens it with ``mode=ro``; SQLite may add the usual
    ``-wal`` / ``-shm`` side files next to an existing WAL journal). A missing journal, or one
    whose schema is not created yet, reads as empty: results appear once a writer creates it; a
    journal deleted and recreated is followed (rowids then restart). Each
    query is one short autocommit read: no transaction is held open between calls. Methods are
    thread-safe (one connection behind a lock).

    Args:
        path: The journal database file.
        busy_timeout: Seconds a query waits on a locked database before failing.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        """The journal file."""
        self._busy_ms = int(busy_timeout * 1000)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._closed = False

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exists(self) -> bool:
        """Tell whether the journal file exists.

        Returns:
            True when the database file is there.
        """
        return self.path.is_file()

    def close(self) -> None:
        """Close the connection; idempotent. Later queries raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"journal reader of {self.path} is closed")
            try:
                info = self.path.stat()
            except OSError:
                info = None
            identity = None if info is None else (info.st_dev, info.st_ino)
            if self._conn is not None and identity != self._identity:
                self._conn.close()  # the file was deleted or replaced: follow the new one
                self._conn = None
            if identity is None:
                return []
            if self._conn is None:
                uri = f"file:{quote(str(self.path.absolute()))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                self._conn, self._identity = conn, identity
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[JournalRow]:
        return [_row(raw) for raw in self._fetch(sql, params)]

    def read_after(self, rowid: int, *, limit: int = 1000) -> list[JournalRow]:
        """Return up to ``limit`` rows with a rowid above ``rowid``, oldest first (the tail).

        Args:
            rowid: The last rowid already seen (0 to start at the beginning).
            limit: Most rows to return.

        Returns:
            Rows ordered by rowid, ascending.

        Raises:
            sqlite3.Error: the file is not a readable journal (corrupt, locked past the timeout).
        """
        return self._rows(_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (rowid, limit))

    def read_before(self, rowid: int, *, limit: int = 1000) -> list[JournalRow]:
        """Return the ``limit`` rows just below ``rowid`` (scrolling backwards), oldest first.

        Args:
            rowid: Rows with a rowid below this one are returned.
            limit: Most rows to return.

        Returns:
            Rows ordered by rowid, ascending.

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        return self._rows(_SELECT + " WHERE id < ? ORDER BY id DESC LIMIT ?", (rowid, limit))[::-1]

    def read_last(self, n: int) -> list[JournalRow]:
        """Return the newest ``n`` rows, oldest first.

        Args:
            n: How many rows.

        Returns:
            Rows ordered by rowid, ascending.

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        return self._rows(_SELECT + " ORDER BY id DESC LIMIT ?", (n,))[::-1]

    def max_rowid(self) -> int:
        """Return the newest rowid, 0 when the journal is empty or missing.

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        found = self._fetch("SELECT MAX(id) FROM events", ())
        return int(found[0][0] or 0) if found else 0

    def min_rowid(self) -> int:
        """Return the oldest rowid still kept, 0 when the journal is empty or missing.

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        found = self._fetch("SELECT MIN(id) FROM events", ())
        return int(found[0][0] or 0) if found else 0

    def count(self) -> int:
        """Return how many rows the journal holds (0 when missing).

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        found = self._fetch("SELECT COUNT(*) FROM events", ())
        return int(found[0][0]) if found else 0

    def query(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 1000,
        levels: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
        user_id: str | None = None,
        text: str | None = None,
    ) -> list[JournalRow]:
        """Return filtered rows; every filter runs in SQL.

        With ``after``, the first ``limit`` matching rows above it (following the tail); without,
        the newest ``limit`` matching rows (below ``before`` when given: scrolling backwards).

        Args:
            after: Only rows with a rowid above this.
            before: Only rows with a rowid below this.
            limit: Most rows to return.
            levels: Only these level names (case-insensitive), e.g. ``{"WARNING", "ERROR"}``.
            events: Only these event names.
            user_id: Only this user's events.
            text: Case-insensitive substring of the event name, user, op id or context JSON.

        Returns:
            Rows ordered by rowid, ascending.

        Raises:
            sqlite3.Error: the file is not a readable journal.
        """
        where: list[str] = []
        params: list[Any] = []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        if levels is not None:
            names = sorted({level.upper() for level in levels})
            where.append(f"level IN ({', '.join('?' * len(names))})")
            params.extend(names)
        if events is not None:
            wanted = sorted(set(events))
            where.append(f"event IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if text:
            where.append(
                "(event LIKE ? ESCAPE '\\' OR user_id LIKE ? ESCAPE '\\'"
                " OR op_id LIKE ? ESCAPE '\\' OR context LIKE ? ESCAPE '\\')"
            )
            params.extend([_like(text)] * 4)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = "" if after is not None else " DESC"
        # Only fixed fragments and "?" placeholders are joined; every value is bound.
        sql = f"{_SELECT}{clause} ORDER BY id{order} LIMIT ?"
        rows = self._rows(sql, (*params, limit))
        return rows if after is not None else rows[::-1]


class EventJournal:
    """The process's writer to the SQLite journal (and a reader of it).

    Construction never fails on I/O: the writer thread opens (creating the folder 0700 and the file
    0600 when missing), switches WAL on and applies the migrations, counting any error. Install it
    as the process-wide sink with :func:`saga_magic.core.events.install_journal`.

    Args:
        path: The journal database file (``Settings.journal_path``).
        max_rows: Rows kept; older rows are pruned every ``prune_every`` batches.
        queue_size: Events held in memory at most; when full, the oldest is dropped (counted).
        batch_size: Most events written per transaction.
        prune_every: Batches between prunes (the first batch prunes too).
        busy_timeout: Seconds a write waits on another process's lock before failing.
        retry_interval: Seconds the writer waits after an error before reopening the database
            (events arriving meanwhile are counted as failed).
        monotonic: Clock for ``retry_interval`` (tests pass a fake).

    Raises:
        ValueError: a size or interval is not positive.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_rows: int = 200_000,
        queue_size: int = 10_000,
        batch_size: int = 500,
        prune_every: int = 50,
        busy_timeout: float = 5.0,
        retry_interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_rows, queue_size, batch_size, prune_every) < 1:
            raise ValueError("max_rows, queue_size, batch_size and prune_every must be >= 1")
        if busy_timeout < 0 or retry_interval < 0:
            raise ValueError("busy_timeout and retry_interval must be >= 0")
        self._options: dict[str, Any] = {
            "max_rows": max_rows,
            "queue_size": queue_size,
            "batch_size": batch_size,
            "prune_every": prune_every,
            "busy_timeout": busy_timeout,
            "retry_interval": retry_interval,
            "monotonic": monotonic,
        }
        self.path = Path(path)
        """The journal file."""
        self.max_rows = max_rows
        """Rows kept after pruning."""
        self._batch_size = batch_size
        self._prune_every = prune_every
        self._busy_ms = int(busy_timeout * 1000)
        self._retry_interval = retry_interval
        self._monotonic = monotonic
        self._queue: deque[Event] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition(threading.Lock())
        self._accepted = 0
        self._handled = 0
        self._written = 0
        self._dropped = 0
        self._failed = 0
        self._errors = 0
        self._warned = False
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._retry_at = -math.inf
        self._since_prune = prune_every
        self._reader = JournalReader(self.path, busy_timeout=busy_timeout)
        self._thread = threading.Thread(
            target=self._run, name=f"saga-journal-writer:{self.path.name}", daemon=True
        )
        self._thread.start()

    # -- writing -------------------------------------------------------------------------------

    def append(self, event: Event) -> None:
        """Queue ``event`` for writing and return at once (no I/O in the caller).

        Events appended by the writer thread itself (say, a logging handler forwarding the
        journal's own warning) are ignored, so journal trouble cannot feed on itself.

        Args:
            event: The (already redacted) event.
        """
        if threading.get_ident() == self._thread.ident:
            return
        with self._cond:
            self._accepted += 1
            if self._closing:
                self._dropped += 1
                self._handled += 1
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._dropped += 1
                self._handled += 1
            self._queue.append(event)
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event appended before this call is written (or counted as lost).

        Args:
            timeout: Most seconds to wait.

        Returns:
            True when everything was handled in time.
        """
        with self._cond:
            target = self._accepted
            return self._cond.wait_for(lambda: self._handled >= target, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer thread and close the connections; idempotent.

        Events appended afterwards are dropped (counted).

        Args:
            timeout: Most seconds to wait for the writer thread to finish.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._reader.close()

    def _fresh_copy(self) -> EventJournal:
        # For a forked child: same file and options, its own writer thread and connection.
        return EventJournal(self.path, **self._options)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full (or the journal closed)."""
        return self._dropped

    @property
    def write_errors(self) -> int:
        """Write or open errors met by the writer thread."""
        return self._errors

    def stats(self) -> JournalStats:
        """Return a snapshot of the journal's counters.

        Returns:
            Written, dropped, failed, errors and still-queued counts.
        """
        with self._cond:
            return JournalStats(
                written=self._written,
                dropped=self._dropped,
                failed=self._failed,
                errors=self._errors,
                queued=self._accepted - self._handled,
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    break
                count = min(len(self._queue), self._batch_size)
                batch = [self._queue.popleft() for _ in range(count)]
            written = self._write(batch)
            with self._cond:
                self._written += written
                self._failed += len(batch) - written
                self._handled += len(batch)
                self._cond.notify_all()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self) -> sqlite3.Connection:
        create_private_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA journal_mode = WAL")  # autocommit: outside any transaction
            conn.execute("PRAGMA synchronous = NORMAL")
            apply_migrations(conn, _MIGRATIONS, now=time.time())
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, batch: list[Event]) -> int:
        if self._conn is None and self._monotonic() < self._retry_at:
            return 0
        try:
            if self._conn is None:
                self._conn = self._open()
            rows = [
                (e.ts, e.level, e.event, e.user_id, e.op_id, e.pid, _dumps(e.context))
                for e in batch
            ]
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(_INSERT, rows)
            self._since_prune += 1
            if self._since_prune >= self._prune_every:
                self._since_prune = 0
                self._conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                    (self.max_rows,),
                )
        except Exception as exc:  # disk full, read-only, not a database, odd context: never raise
            self._on_error(exc)
            return 0
        return len(batch)

    def _on_error(self, exc: BaseException) -> None:
        with self._cond:
            self._errors += 1
        self._retry_at = self._monotonic() + self._retry_interval
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if not self._warned:
            self._warned = True
            _LOG.warning(
                "event journal %s: write failed (%s: %s); events are being lost, further "
                "errors are counted, not logged",
                self.path,
                type(exc).__name__,
                str(exc)[:200],
            )

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def open_reader(path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> JournalReader:
        """Open a read-only view of a journal written by any process (never creates it).

        Args:
            path: The journal database file.
            busy_timeout: Seconds a query waits on a locked database.

        Returns:
            A :class:`JournalReader`; close it when done.
        """
        return JournalReader(path, busy_timeout=busy_timeout)

    reader = open_reader
    """Alias of :meth:`open_reader`."""

    def read_after(self, rowid: int, *, limit: int = 1000) -> list[JournalRow]:
        """Same as :meth:`JournalReader.read_after` on this journal's file."""
        return self._reader.read_after(rowid, limit=limit)

    def read_before(self, rowid: int, *, limit: int = 1000) -> list[JournalRow]:
        """Same as :meth:`JournalReader.read_before` on this journal's file."""
        return self._reader.read_before(rowid, limit=limit)

    def read_last(self, n: int) -> list[JournalRow]:
        """Same as :meth:`JournalReader.read_last` on this journal's file."""
        return self._reader.read_last(n)

    def max_rowid(self) -> int:
        """Same as :meth:`JournalReader.max_rowid` on this journal's file."""
        return self._reader.max_rowid()

    def count(self) -> int:
        """Same as :meth:`JournalReader.count` on this journal's file."""
        return self._reader.count()

    def query(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 1000,
        levels: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
        user_id: str | None = None,
        text: str | None = None,
    ) -> list[JournalRow]:
        """Same as :meth:`JournalReader.query` on this journal's file."""
        return self._reader.query(
            after=after,
            before=before,
            limit=limit,
            levels=levels,
            events=events,
            user_id=user_id,
            text=text,
        )


def _dumps(context: Mapping[str, Any]) -> str:
    return json.dumps(context, separators=(",", ":"), ensure_ascii=False, default=str)
