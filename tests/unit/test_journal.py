"""The SQLite event journal: writer thread, pruning, flush/close, errors, and read-only readers."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga_magic.core import events
from saga_magic.core.journal import Event, EventJournal, JournalReader, JournalRow


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    events.reset_for_tests()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[EventJournal]:
    j = EventJournal(tmp_path / "home" / "journal.db")
    yield j
    j.close()


def ev(
    name: str = "copilot_request_start",
    *,
    level: str = "INFO",
    user: str | None = "alice",
    **ctx: Any,
) -> Event:
    return Event(
        ts=1_700_000_000.0, level=level, event=name, user_id=user, op_id="op1", pid=1, context=ctx
    )


def names(rows: list[JournalRow]) -> list[str]:
    return [row.event.event for row in rows]


class Gate:
    """Holds the writer thread before each batch until released."""

    def __init__(self, journal: EventJournal) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        original = journal._write

        def gated(batch: list[Event]) -> int:
            self.entered.set()
            assert self.open.wait(10)
            return original(batch)

        journal._write = gated  # type: ignore[method-assign]


# -- writing and reading ---------------------------------------------------------------------------


def test_write_then_read_back(journal: EventJournal) -> None:
    for i in range(5):
        journal.append(ev(f"e{i}", i=i))
    assert journal.flush()
    assert journal.count() == 5
    assert journal.max_rowid() == 5
    rows = journal.read_after(0)
    assert [row.rowid for row in rows] == [1, 2, 3, 4, 5]
    assert rows[0].event == ev("e0", i=0)
    assert names(journal.read_after(3)) == ["e3", "e4"]
    assert names(journal.read_after(0, limit=2)) == ["e0", "e1"]
    assert names(journal.read_before(4, limit=2)) == ["e1", "e2"]
    assert names(journal.read_before(4)) == ["e0", "e1", "e2"]
    assert names(journal.read_last(2)) == ["e3", "e4"]
    assert journal.stats().written == 5
    assert journal.stats().queued == 0


def test_query_pushes_filters_into_sql(journal: EventJournal) -> None:
    journal.append(ev("token_refresh_start", user="alice"))
    journal.append(ev("token_refresh_retry", level="WARNING", user="alice", reason="http 429"))
    journal.append(ev("copilot_error", level="ERROR", user="bob", note="100% broken_thing"))
    journal.append(ev("copilot_request_complete", user=None))
    assert journal.flush()
    assert names(journal.query()) == [
        "token_refresh_start",
        "token_refresh_retry",
        "copilot_error",
        "copilot_request_complete",
    ]
    assert names(journal.query(levels=["warning", "ERROR"])) == [
        "token_refresh_retry",
        "copilot_error",
    ]
    assert names(journal.query(events=["copilot_error", "nope"])) == ["copilot_error"]
    assert names(journal.query(user_id="alice")) == ["token_refresh_start", "token_refresh_retry"]
    assert names(journal.query(text="HTTP 429")) == ["token_refresh_retry"]
    assert names(journal.query(text="100%")) == ["copilot_error"]
    assert names(journal.query(text="n_t")) == ["copilot_error"]  # "_" is literal, not a wildcard
    assert names(journal.query(text="op1")) == names(journal.query())
    assert names(journal.query(text="refresh")) == ["token_refresh_start", "token_refresh_retry"]
    assert names(journal.query(after=1, limit=2)) == ["token_refresh_retry", "copilot_error"]
    assert names(journal.query(before=4, limit=2)) == ["token_refresh_retry", "copilot_error"]
    assert names(journal.query(after=1, before=3)) == ["token_refresh_retry"]
    assert names(journal.query(limit=1)) == ["copilot_request_complete"]
    assert journal.query(levels=[]) == []
    assert names(journal.query(text="")) == names(journal.query())


def test_prune_keeps_the_newest_rows(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db", max_rows=10, prune_every=1, batch_size=5)
    try:
        for i in range(25):
            journal.append(ev(f"e{i}"))
            if i % 5 == 4:
                assert journal.flush()
        assert journal.count() == 10
        reader = journal.open_reader(journal.path)
        with reader:
            assert reader.min_rowid() == 16
            assert reader.max_rowid() == 25
        # rowids are never reused after a prune: tailing cursors stay valid
        journal.append(ev("after"))
        assert journal.flush()
        assert journal.read_last(1)[0].rowid == 26
    finally:
        journal.close()


def test_prune_runs_every_n_batches(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db", max_rows=1, prune_every=3)
    try:
        for i in range(4):
            journal.append(ev(f"e{i}"))
            assert journal.flush()
        # batch 1 pruned (first batch), batches 2-3 did not, batch 4 did
        assert names(journal.read_after(0)) == ["e3"]
        journal.append(ev("e4"))
        assert journal.flush()
        assert names(journal.read_after(0)) == ["e3", "e4"]
    finally:
        journal.close()


def test_flush_returns_false_when_the_writer_is_held(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db")
    gate = Gate(journal)
    try:
        journal.append(ev())
        assert journal.flush(timeout=0.01) is False
        assert journal.stats().queued == 1
        gate.open.set()
        assert journal.flush() is True
    finally:
        gate.open.set()
        journal.close()


def test_flush_waits_on_a_database_locked_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = EventJournal(path, busy_timeout=10.0)
    try:
        journal.append(ev("first"))
        assert journal.flush()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            journal.append(ev("second"))
            assert journal.flush(timeout=0.05) is False
            other.execute("COMMIT")
        finally:
            other.close()
        assert journal.flush()
        assert names(journal.read_after(0)) == ["first", "second"]
    finally:
        journal.close()


def test_queue_overflow_drops_oldest_and_counts(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db", queue_size=10)
    gate = Gate(journal)
    try:
        journal.append(ev("held"))
        assert gate.entered.wait(5)  # the writer took "held" and waits at the gate
        for i in range(15):
            journal.append(ev(f"e{i}"))
        assert journal.dropped == 5
        gate.open.set()
        assert journal.flush()
        assert names(journal.read_after(0)) == ["held"] + [f"e{i}" for i in range(5, 15)]
        stats = journal.stats()
        assert (stats.written, stats.dropped, stats.queued) == (11, 5, 0)
    finally:
        gate.open.set()
        journal.close()


def test_close_is_idempotent_and_later_appends_are_dropped(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db")
    journal.append(ev("kept"))
    journal.close()
    journal.close()
    assert journal.closed
    journal.append(ev("late"))
    assert journal.dropped == 1
    assert journal.flush(timeout=0.01)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        journal.read_after(0)
    with JournalReader(journal.path) as reader:
        assert names(reader.read_after(0)) == ["kept"]


def test_constructor_validates_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_rows"):
        EventJournal(tmp_path / "j.db", max_rows=0)
    with pytest.raises(ValueError, match="retry_interval"):
        EventJournal(tmp_path / "j.db", retry_interval=-1)
    assert not (tmp_path / "j.db").exists()


# -- schema, files, permissions --------------------------------------------------------------------


def test_wal_and_migration_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    for _ in range(2):
        journal = EventJournal(path)
        journal.append(ev())
        assert journal.flush()
        journal.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == [
            "0001_create_events"
        ]
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(events)")}
        assert {"events_ts", "events_event", "events_user_id"} <= indexes
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)
    finally:
        conn.close()


def test_new_folder_is_0700_and_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.db"
    journal = EventJournal(path)
    try:
        journal.append(ev())
        assert journal.flush()
    finally:
        journal.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_folder_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    journal = EventJournal(folder / "journal.db")
    try:
        journal.append(ev())
        assert journal.flush()
    finally:
        journal.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "journal.db").stat().st_mode) == 0o600


# -- writer errors ---------------------------------------------------------------------------------


def test_writer_error_is_counted_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.db"
    path.mkdir()  # a folder where the file should be: every open fails
    journal = EventJournal(path, retry_interval=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="saga.journal"):
            for i in range(3):
                events.install_journal(journal)
                events.log_with_context(logging.getLogger("saga.t"), logging.INFO, "x", i=i)
                assert journal.flush()
        stats = journal.stats()
        assert stats.errors == 3
        assert stats.failed == 3
        assert stats.written == 0
        assert journal.write_errors == 3
        warnings = [r for r in caplog.records if r.name == "saga.journal"]
        assert len(warnings) == 1
        assert "write failed" in warnings[0].getMessage()
    finally:
        journal.close()


def test_writer_recovers_after_retry_interval(tmp_path: Path) -> None:
    now = [100.0]
    path = tmp_path / "journal.db"
    path.mkdir()
    journal = EventJournal(path, retry_interval=30.0, monotonic=lambda: now[0])
    try:
        journal.append(ev("lost"))
        assert journal.flush()
        path.rmdir()
        journal.append(ev("skipped"))  # still inside the retry interval: not even tried
        assert journal.flush()
        assert journal.stats().errors == 1
        assert journal.stats().failed == 2
        now[0] += 31
        journal.append(ev("kept"))
        assert journal.flush()
        assert names(journal.read_after(0)) == ["kept"]
    finally:
        journal.close()


def test_not_a_database_is_a_counted_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not sqlite" * 100)
    journal = EventJournal(path)
    try:
        journal.append(ev())
        assert journal.flush()
        assert journal.stats().errors == 1
    finally:
        journal.close()


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


def test_unserialisable_context_is_a_counted_error(journal: EventJournal) -> None:
    journal.append(ev("bad", thing=Hostile()))
    journal.append(ev("good"))
    assert journal.flush()
    stats = journal.stats()
    assert stats.errors >= 1
    assert stats.failed >= 1


def test_appends_from_the_writer_thread_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.db"
    path.mkdir()
    journal = EventJournal(path)

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            journal.append(ev("journal_warning"))

    handler = Forward()
    logger = logging.getLogger("saga.journal")
    logger.addHandler(handler)
    try:
        journal.append(ev())
        assert journal.flush()
        stats = journal.stats()
        assert (stats.failed, stats.queued, stats.dropped) == (1, 0, 0)
    finally:
        logger.removeHandler(handler)
        journal.close()


# -- readers ---------------------------------------------------------------------------------------


def test_reader_on_missing_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "journal.db"
    reader = EventJournal.reader(path)
    try:
        assert not reader.exists()
        assert reader.read_after(0) == []
        assert reader.read_last(5) == []
        assert reader.max_rowid() == 0
        assert reader.min_rowid() == 0
        assert reader.count() == 0
        assert reader.query(text="x") == []
    finally:
        reader.close()
    assert not path.parent.exists()


def test_reader_on_empty_or_foreign_databases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with JournalReader(empty) as reader:
        assert reader.exists()
        assert reader.read_after(0) == []
        assert reader.max_rowid() == 0
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with (
        JournalReader(foreign) as reader,
        pytest.raises(sqlite3.OperationalError, match="no such column"),
    ):
        reader.read_after(0)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with JournalReader(garbage) as reader, pytest.raises(sqlite3.DatabaseError):
        reader.count()


def test_reader_decodes_a_corrupt_context_defensively(journal: EventJournal) -> None:
    journal.append(ev())
    assert journal.flush()
    conn = sqlite3.connect(journal.path)
    conn.execute(
        "INSERT INTO events (ts, level, event, pid, context) VALUES (1, 'INFO', 'raw', NULL, '[1]')"
    )
    conn.execute(
        "INSERT INTO events (ts, level, event, pid, context)"
        " VALUES (1, 'INFO', 'raw2', 3, 'not json')"
    )
    conn.commit()
    conn.close()
    rows = journal.read_after(1)
    assert rows[0].event.context == {"_undecodable": "[1]"}
    assert rows[0].event.pid == 0
    assert rows[1].event.context == {"_undecodable": "not json"}


def test_reader_follows_rows_written_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    writer = EventJournal(path)
    reader = JournalReader(path)
    try:
        assert reader.read_after(0) == []  # not created yet (or schema not there): empty
        writer.append(ev("a"))
        assert writer.flush()
        assert names(reader.read_after(0)) == ["a"]
        other = EventJournal(path)  # a second writer, as another process would be
        other.append(ev("b"))
        assert other.flush()
        other.close()
        assert names(reader.read_after(1)) == ["b"]
    finally:
        reader.close()
        writer.close()


def test_reader_follows_a_recreated_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first = EventJournal(path)
    first.append(ev("old"))
    assert first.flush()
    first.close()
    reader = JournalReader(path)
    try:
        assert names(reader.read_after(0)) == ["old"]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        assert reader.read_after(0) == []
        second = EventJournal(path)
        second.append(ev("new"))
        assert second.flush()
        second.close()
        assert names(reader.read_after(0)) == ["new"]
    finally:
        reader.close()


def test_reader_never_holds_a_transaction_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = EventJournal(path, batch_size=10)
    reader = JournalReader(path)
    checkpointer = sqlite3.connect(path, isolation_level=None)
    try:
        seen = 0
        for i in range(20):
            journal.append(ev(f"e{i}"))
            assert journal.flush()
            rows = reader.read_after(seen)
            seen = rows[-1].rowid
            reader.read_last(1)
            reader.query(text="e")
            # A read snapshot left open would make a TRUNCATE checkpoint report busy.
            busy, _, _ = checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
        assert seen == 20
    finally:
        checkpointer.close()
        reader.close()
        journal.close()


def test_reader_loops_while_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = EventJournal(path, batch_size=7)
    reader = JournalReader(path)
    seen: list[int] = []
    errors: list[BaseException] = []

    def tail() -> None:
        last = 0
        deadline = time.monotonic() + 20
        try:
            while last < 300 and time.monotonic() < deadline:
                for row in reader.read_after(last, limit=50):
                    seen.append(row.rowid)
                    last = row.rowid
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    thread = threading.Thread(target=tail)
    thread.start()
    try:
        for i in range(300):
            journal.append(ev(f"e{i}"))
        assert journal.flush()
    finally:
        thread.join(30)
        reader.close()
        journal.close()
    assert errors == []
    assert seen == list(range(1, 301))


def test_reader_methods_are_thread_safe(journal: EventJournal) -> None:
    for i in range(50):
        journal.append(ev(f"e{i}"))
    assert journal.flush()
    reader = JournalReader(journal.path)
    results: list[int] = []

    def work() -> None:
        for _ in range(20):
            results.append(len(reader.read_after(0)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader.close()
    reader.close()
    assert results == [50] * 80


CHILD = """
import sys
from saga_magic.core.journal import Event, EventJournal
j = EventJournal(sys.argv[1])
for i in range(20):
    j.append(Event(ts=1.0, level="INFO", event=f"child{i}", user_id=None, op_id=None, pid=0))
assert j.flush()
j.close()
"""


@pytest.mark.slow
def test_reader_sees_a_journal_written_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], check=True, timeout=60, env=dict(os.environ)
    )
    with EventJournal.open_reader(path) as reader:
        assert reader.count() == 20
        assert names(reader.read_last(1)) == ["child19"]
