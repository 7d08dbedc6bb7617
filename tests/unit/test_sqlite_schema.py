"""The migration runner and transactions shared by the token store and the journal."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from saga_magic.core import _sqlite
from saga_magic.core._sqlite import (
    Migration,
    applied_migrations,
    apply_migrations,
    transaction,
)
from saga_magic.core.journal import Event, EventJournal
from saga_magic.core.store import SQLiteEncryptedTokenStore


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _table(name: str) -> Migration:
    def create(db: Database) -> None:
        db.table(name).create({"id": int, "label": str}, pk="id", not_null={"label"})

    return Migration(f"create_{name}", create)


def test_pending_migrations_run_once_in_order_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with _connect(path) as conn:
        assert applied_migrations(conn) == set()
        assert apply_migrations(conn, [_table("a"), _table("b")], now=100.0) == (
            "create_a",
            "create_b",
        )
        assert apply_migrations(conn, [_table("a"), _table("b")], now=200.0) == ()
        assert apply_migrations(conn, [_table("a"), _table("b"), _table("c")], now=300.0) == (
            "create_c",
        )
        rows = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
        assert not conn.in_transaction
    assert rows == [("create_a", 100.0), ("create_b", 100.0), ("create_c", 300.0)]


def test_a_failing_migration_leaves_nothing_of_its_run(tmp_path: Path) -> None:
    def broken(db: Database) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("injected failure")

    with _connect(tmp_path / "db.sqlite") as conn:
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            apply_migrations(conn, [_table("a"), Migration("broken", broken)], now=1.0)
        assert not conn.in_transaction
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == set()  # not even _migrations or the first table


def test_a_migration_that_ends_the_transaction_is_refused(tmp_path: Path) -> None:
    # sqlite-utils 3 committed inside Table.create(); the runner must notice, not go on unguarded
    def commits(db: Database) -> None:
        db.conn.execute("COMMIT")

    with _connect(tmp_path / "db.sqlite") as conn:
        with pytest.raises(sqlite3.ProgrammingError, match="sqlite-utils >= 4"):
            apply_migrations(conn, [Migration("commits", commits)], now=1.0)
        assert not conn.in_transaction
        assert applied_migrations(conn) == set()


def test_pending_is_read_again_under_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process applied the migration between our first read and our BEGIN IMMEDIATE.
    path = tmp_path / "db.sqlite"
    runs: list[str] = []

    def create(db: Database) -> None:
        runs.append("ran")
        db.table("a").create({"id": int}, pk="id")

    migration = Migration("create_a", create)
    with _connect(path) as other:
        apply_migrations(other, [migration], now=1.0)
    real = _sqlite.applied_migrations
    reads: list[set[str]] = []

    def stale_first(conn: sqlite3.Connection) -> set[str]:
        reads.append(set() if not reads else real(conn))  # the first read is stale
        return reads[-1]

    monkeypatch.setattr(_sqlite, "applied_migrations", stale_first)
    with _connect(path) as conn:
        assert apply_migrations(conn, [migration], now=2.0) == ()
    assert runs == ["ran"]
    assert reads == [set(), {"create_a"}]


def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    with _connect(tmp_path / "db.sqlite") as conn:
        conn.execute("CREATE TABLE t (x)")
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")

        def fail_midway() -> None:
            with transaction(conn):
                conn.execute("INSERT INTO t VALUES (2)")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            fail_midway()
        with transaction(conn, write=False):
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert not conn.in_transaction


def test_store_and_journal_record_migrations_in_one_schema(tmp_path: Path) -> None:
    store_path, journal_path = tmp_path / "tokens.db", tmp_path / "journal.db"
    with SQLiteEncryptedTokenStore(
        store_path, encryption_key=SQLiteEncryptedTokenStore.generate_key()
    ) as store:
        asyncio.run(store.list_tokens())
    journal = EventJournal(journal_path)
    try:
        journal.append(Event(ts=1.0, level="INFO", event="probe", user_id=None, op_id=None, pid=1))
        assert journal.flush()
    finally:
        journal.close()

    def schema(path: Path) -> list[tuple[object, ...]]:
        with _connect(path) as conn:
            return conn.execute("PRAGMA table_info(_migrations)").fetchall()

    assert schema(store_path) == schema(journal_path)
    assert [row[1:4] for row in schema(store_path)] == [
        ("name", "TEXT", 0),
        ("applied_at", "REAL", 1),
    ]
