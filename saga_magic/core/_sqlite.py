"""SQLite habits shared by the token store and the event journal: transactions and migrations.

Both databases are opened with ``isolation_level=None`` (the driver never starts a transaction on
its own) and every write runs in an explicit, short ``BEGIN IMMEDIATE`` transaction
(:func:`transaction`): the write lock is taken up front, so a transaction never has to upgrade a
read lock, and another process waits (busy timeout) instead of failing mid-way.

**Named migrations.** Each database records the schema changes applied to it in one table,
``_migrations`` (``name`` TEXT primary key, ``applied_at`` REAL unix time). A :class:`Migration`
is a name plus a function that changes the schema through a ``sqlite_utils.Database`` wrapping
the caller's own connection (``db.table(name).create(...)``, ``create_index``, ``add_column``).
:func:`apply_migrations` first reads ``_migrations`` with a plain query; only when something is
pending does it take the write lock, read the list again (another process may have just applied
it) and run what is still pending, recording each name, in that one transaction. sqlite-utils'
helpers nest inside it as savepoints, so a failed migration leaves nothing behind.

Why not sqlite-utils' own ``Migrations`` class: it decides what is pending before it takes any lock
and applies each migration in a deferred ``BEGIN``, so two processes creating a database at the
same moment can both try to create the same table; and it records into ``_sqlite_migrations``
with another schema. sqlite-utils is imported only when a migration is pending (about 100 ms, its
CLI and plugin dependencies), so opening an up-to-date database costs two small queries.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["MIGRATIONS_TABLE", "Migration", "applied_migrations", "apply_migrations", "transaction"]

MIGRATIONS_TABLE = "_migrations"
"""Table recording the names of the applied migrations."""
_SELECT_APPLIED = "SELECT name FROM _migrations"
_RECORD_APPLIED = "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)"


class Migration(NamedTuple):
    """One named schema change; append new ones, never rename or edit an applied one."""

    name: str
    """Unique name that also sorts in order, e.g. ``"0004_cooldown_details"``."""
    apply: Callable[[Database], None]
    """The change, run inside the runner's write transaction."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """Run the block in one transaction: committed at the end, rolled back on any error.

    Args:
        conn: A connection opened with ``isolation_level=None``.
        write: ``BEGIN IMMEDIATE`` (take the write lock now) when true, else a plain ``BEGIN``.

    Yields:
        Nothing; the block's statements run in the transaction.

    Raises:
        sqlite3.Error: the transaction could not be started or committed.
    """
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def applied_migrations(conn: sqlite3.Connection) -> set[str]:
    """Return the names recorded in ``_migrations`` (empty when the table does not exist).

    Args:
        conn: The database connection.

    Returns:
        The applied migrations' names.

    Raises:
        sqlite3.Error: the database cannot be read.
    """
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    if found is None:
        return set()
    return {name for (name,) in conn.execute(_SELECT_APPLIED)}


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, now: float
) -> tuple[str, ...]:
    """Apply the pending ``migrations``, in order, in one ``BEGIN IMMEDIATE`` transaction.

    Safe to call from several processes at once: the pending list is re-read under the write
    lock, so each migration runs exactly once.

    Args:
        conn: A connection opened with ``isolation_level=None``, outside any transaction.
        migrations: Every migration of this database, in order.
        now: Unix time recorded as ``applied_at``.

    Returns:
        The names applied by this call (empty when the schema was up to date).

    Raises:
        sqlite3.Error: a migration failed; nothing of this call was kept. A migration that
            ended the transaction itself is refused with ``sqlite3.ProgrammingError``.
    """
    if not _pending(conn, migrations):
        return ()
    from sqlite_utils import Database  # deferred: only a database that needs a change pays it

    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    with transaction(conn):
        db.table(MIGRATIONS_TABLE).create(
            {"name": str, "applied_at": float},
            pk="name",
            not_null={"applied_at"},
            if_not_exists=True,
        )
        pending = _pending(conn, migrations)
        for migration in pending:
            migration.apply(db)
            if not conn.in_transaction:  # sqlite-utils < 4 commits inside Table.create()
                raise sqlite3.ProgrammingError(
                    f"migration {migration.name} ended the runner's transaction "
                    "(sqlite-utils >= 4 is required)"
                )
            conn.execute(_RECORD_APPLIED, (migration.name, now))
    return tuple(migration.name for migration in pending)


def _pending(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[Migration]:
    applied = applied_migrations(conn)
    return [migration for migration in migrations if migration.name not in applied]
