"""Encrypted SQLite token store, shared safely between threads, tasks and processes.

One row per user in ``tokens``: the whole token set as Fernet-encrypted JSON, next to clear
metadata (expiry, scopes, times, version, re-login flag, refresh cool-down) that the TUI reads
without the key (:meth:`SQLiteEncryptedTokenStore.read_token_infos`). ``leases`` holds the
cross-process refresh leases, ``meta`` the key-check row and the version counter, ``_migrations``
the names of the applied schema migrations. Where the key comes from and how key files are kept:
:mod:`.keys`.

**Threading model.** sqlite3 blocks, so every database call runs on one worker thread owned by
the store (a single-thread executor) with one connection opened lazily *in that thread*; the
connection never crosses threads (``check_same_thread`` stays on) and calls are serialised in
submission order. :meth:`~SQLiteEncryptedTokenStore.close` closes the connection on the worker
and joins it. Other processes coordinate through SQLite itself: WAL (switched on outside any
transaction), a busy timeout so writers wait instead of failing with "database is locked", and
``BEGIN IMMEDIATE`` for every write, so a transaction never has to upgrade a read lock.

**One database, one key.** When the database is created, a known value encrypted with the key
is written to ``meta``. Every operation that encrypts or decrypts first checks that value in the
same transaction, so a wrong key is refused before anything is read or written, and a key
rotated by another process is noticed before a row could be written with the old one (a store
whose key came from the key file then re-reads it and follows the rotation, see :mod:`.keys`).

**What needs the key, and what does not (by design).** Only :meth:`get_token`,
:meth:`save_token` and :meth:`rotate_key` use the key. Everything else touches clear metadata
only and works without it: :meth:`delete_token` (so a user who lost the key can still log out and
sign in again), :meth:`list_tokens` / :meth:`read_token_infos`, and the coordination writes
:meth:`set_cooldown`, :meth:`set_relogin_required`, :meth:`try_acquire_lease` and
:meth:`release_lease` (and the read :meth:`lease_holder`), so processes coordinate refreshes
whatever key each one holds.

**Old ciphertext does not linger.** Connections run with ``PRAGMA secure_delete=ON`` (freed
content is zeroed), and :meth:`rotate_key` ends with ``VACUUM`` and
``PRAGMA wal_checkpoint(TRUNCATE)``, so no page encrypted with the old key survives in the
database file, its free pages or the WAL.

**Schema.** Tables are declared with sqlite-utils (``Table.create``, ``add_column``) in named
migrations run by :func:`._sqlite.apply_migrations`, the runner the event journal uses too; every
read and write of rows is plain sqlite3 in explicit transactions, because sqlite-utils' write
helpers commit on their own terms. sqlite-utils is imported only when a migration is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar, get_args

from cryptography.fernet import Fernet, InvalidToken

from ._files import check_private_file, create_private_file
from ._sqlite import Migration, apply_migrations, transaction
from .config import Settings
from .errors import InputValidationError, TokenStorageError
from .keys import KEY_FILE_NAME, KeyRing, parse_key, resolve_key
from .protocols import CooldownKind, RefreshCooldown
from .types import TokenInfo

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["MAX_USER_ID_LENGTH", "MIGRATIONS", "SQLiteEncryptedTokenStore"]

T = TypeVar("T")

MAX_USER_ID_LENGTH = 256
_COOLDOWN_KINDS: frozenset[str] = frozenset(get_args(CooldownKind))
_MAX_COOLDOWN_MESSAGE = 500
_MAX_COOLDOWN_CODE = 200


def _create_tokens(db: Database) -> None:
    db.table("tokens").create(
        {
            "user_id": str,
            "encrypted_data": bytes,
            "expires_at": float,
            "scopes": str,
            "created_at": float,
            "updated_at": float,
            "version": int,
            "relogin_required": int,
            "cooldown_until": float,
            "cooldown_kind": str,
            "cooldown_message": str,
            "cooldown_retry_after": float,
        },
        pk="user_id",
        not_null={"encrypted_data", "created_at", "updated_at", "version", "relogin_required"},
        defaults={"relogin_required": 0},
    )


def _create_leases(db: Database) -> None:
    db.table("leases").create(
        {"user_id": str, "owner": str, "expires_at": float},
        pk="user_id",
        not_null={"owner", "expires_at"},
    )


def _create_meta(db: Database) -> None:
    db.table("meta").create({"key": str, "value": bytes}, pk="key")  # value: ints and blobs
    db.execute("INSERT INTO meta (key, value) VALUES ('version_seq', 0)")


def _add_cooldown_details(db: Database) -> None:
    tokens = db.table("tokens")
    tokens.add_column("cooldown_status", int)
    tokens.add_column("cooldown_code", str)


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_tokens", _create_tokens),
    Migration("0002_leases", _create_leases),
    Migration("0003_meta", _create_meta),
    Migration("0004_cooldown_status_code", _add_cooldown_details),
)
"""Named schema migrations, applied in order, each recorded in ``_migrations``; append only."""

_INFO_SQL = (
    "SELECT user_id, expires_at, created_at, updated_at, scopes, relogin_required,"
    " cooldown_until FROM tokens ORDER BY user_id"
)
_UPSERT_SQL = """
INSERT INTO tokens (user_id, encrypted_data, expires_at, scopes, created_at, updated_at, version)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    encrypted_data = excluded.encrypted_data, expires_at = excluded.expires_at,
    scopes = excluded.scopes, updated_at = excluded.updated_at, version = excluded.version,
    relogin_required = 0, cooldown_until = NULL, cooldown_kind = NULL,
    cooldown_message = NULL, cooldown_retry_after = NULL, cooldown_status = NULL,
    cooldown_code = NULL
"""

_LEASE_SQL = """
INSERT INTO leases (user_id, owner, expires_at) VALUES (?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
"""


def _check_user_id(user_id: str) -> str:
    if (
        not isinstance(user_id, str)
        or not user_id.strip()
        or len(user_id) > MAX_USER_ID_LENGTH
        or "\x00" in user_id
    ):
        raise InputValidationError(
            f"user_id must be a non-empty string of at most {MAX_USER_ID_LENGTH} characters"
        )
    return user_id


def _number(value: object, name: str) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float | str):
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
            if math.isfinite(number):
                return number
    raise InputValidationError(f"{name} must be a finite number of seconds")


def _cooldown_values(cooldown: RefreshCooldown) -> tuple[Any, ...]:
    """Validate ``cooldown``; return the values of the six cool-down columns."""
    if cooldown.error_kind not in _COOLDOWN_KINDS:
        raise InputValidationError(f"unknown cool-down kind {cooldown.error_kind!r}")
    status = cooldown.status
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise InputValidationError("cooldown.status must be an HTTP status code (int) or None")
    return (
        _number(cooldown.until, "cooldown.until"),
        cooldown.error_kind,
        str(cooldown.message)[:_MAX_COOLDOWN_MESSAGE],
        None
        if cooldown.retry_after is None
        else _number(cooldown.retry_after, "cooldown.retry_after"),
        status,
        None if cooldown.code is None else str(cooldown.code)[:_MAX_COOLDOWN_CODE],
    )


def _info(row: tuple[Any, ...]) -> TokenInfo:
    user_id, expires_at, created_at, updated_at, scopes, relogin, cooldown_until = row
    return TokenInfo(
        user_id=user_id,
        expires_at=expires_at,
        created_at=created_at,
        updated_at=updated_at,
        scopes=tuple((scopes or "").split()),
        relogin_required=bool(relogin),
        cooldown_until=cooldown_until,
    )


def _purge_old_pages(conn: sqlite3.Connection) -> None:
    """Rewrite the database and empty its WAL (after a rotation: drop the old ciphertext).

    Raises:
        sqlite3.Error: the rewrite failed, or the WAL could not be emptied because another
            connection was still reading an older snapshot after the busy timeout.
    """
    conn.execute("VACUUM")
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError("the WAL is still in use by another connection")


def _describe(exc: BaseException) -> str:
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {detail}"


class SQLiteEncryptedTokenStore:
    """Fernet-encrypted token sets in SQLite; implements IEncryptedStore and IRefreshCoordinator.

    Args:
        db_path: Database file; ``Settings.token_store_path`` by default. Created with mode
            0600 (its folder 0700) when missing.
        encryption_key: Fernet key (str or bytes). Default: ``ARC_SAGA_TOKEN_ENCRYPTION_KEY``,
            else the key file.
        key_path: Key file used when neither of those is set; ``$ARC_SAGA_HOME/.token_key`` by
            default, created with a fresh key and mode 0600 when missing.
        busy_timeout: Seconds a write waits for another process's transaction.
        clock: Unix time source for ``expires_in``, ``created_at`` and ``updated_at``.
        settings: Settings to take defaults from; read with ``Settings.from_env()`` when needed.

    Raises:
        TokenStorageError: the key is malformed, or the key file has loose permissions or
            cannot be read or created (the message names the key's source). A key that does
            not match the database is refused at first use.
        InputValidationError: ``busy_timeout`` is negative.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        encryption_key: str | bytes | None = None,
        key_path: str | os.PathLike[str] | None = None,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        settings: Settings | None = None,
    ) -> None:
        if not busy_timeout >= 0:
            raise InputValidationError("busy_timeout must be >= 0 seconds")
        env_key: str | None = None
        key_file: Path | None = None
        if db_path is None or encryption_key is None:
            settings = settings if settings is not None else Settings.from_env()
            db_path = settings.token_store_path if db_path is None else db_path
            env_key = settings.encryption_key
            key_file = Path(key_path) if key_path is not None else settings.home / KEY_FILE_NAME
        self._db_path = Path(db_path)
        self._keys = KeyRing(resolve_key(encryption_key, env_key=env_key, key_file=key_file))
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saga-token-store")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # orders close() against calls being submitted
        self._closed = False

    # ----------------------------------------------------------------- public, key-free

    @property
    def db_path(self) -> Path:
        """The database file."""
        return self._db_path

    @property
    def key_source(self) -> str:
        """Where the key came from ("encryption_key argument", "ARC_SAGA_...", "key file ...")."""
        return self._keys.source

    @staticmethod
    def generate_key() -> str:
        """Return a fresh random Fernet key (url-safe base64 text).

        Returns:
            The key, suitable for ``ARC_SAGA_TOKEN_ENCRYPTION_KEY``.
        """
        return Fernet.generate_key().decode("ascii")

    @staticmethod
    def read_token_infos(
        db_path: str | os.PathLike[str], *, busy_timeout: float = 2.0
    ) -> list[TokenInfo]:
        """Read the clear metadata of every stored token, without the key (for the TUI).

        Opens the database read-only (``mode=ro``), in the calling thread, and closes it.

        Args:
            db_path: The database file.
            busy_timeout: Seconds to wait for a lock.

        Returns:
            One :class:`TokenInfo` per user, sorted by user id; ``[]`` when the file or the
            table does not exist.

        Raises:
            TokenStorageError: the file exists but cannot be read as a token store.
        """
        path = Path(db_path)
        if not path.exists():
            return []
        try:
            uri = path.resolve().as_uri() + "?mode=ro"
            with contextlib.closing(
                sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
            ) as conn:
                found = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tokens'"
                ).fetchone()
                return [_info(row) for row in conn.execute(_INFO_SQL)] if found else []
        except (sqlite3.Error, OSError) as exc:
            raise TokenStorageError(
                f"cannot read the token store {path}: {_describe(exc)}",
                hint=f"check that {path} is an arc-saga token store you can read",
            ) from exc

    async def list_tokens(self) -> list[TokenInfo]:
        """List the clear metadata of every stored token; nothing is decrypted.

        Returns:
            One :class:`TokenInfo` per user, sorted by user id.

        Raises:
            TokenStorageError: the database cannot be opened or read.
        """
        return await self._call(
            "list tokens", lambda conn: [_info(row) for row in conn.execute(_INFO_SQL)]
        )

    async def delete_token(self, user_id: str) -> bool:
        """Delete ``user_id``'s token (works without the right key, so a lost key can log out).

        Args:
            user_id: Whose token.

        Returns:
            True when a row was deleted.

        Raises:
            InputValidationError: ``user_id`` is invalid.
            TokenStorageError: the database cannot be written.
        """
        _check_user_id(user_id)

        def delete(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            return cursor.rowcount > 0

        return await self._call("delete token", delete)

    # ----------------------------------------------------------------- public, keyed

    async def get_token(self, user_id: str) -> dict[str, Any] | None:
        """Return ``user_id``'s decrypted token set, or ``None`` when there is none.

        Args:
            user_id: Whose token.

        Returns:
            The dict as saved, with ``expires_at`` (unix seconds, or ``None`` if unknown).

        Raises:
            InputValidationError: ``user_id`` is invalid.
            TokenStorageError: the key does not match the database, this user's row is corrupt,
                or the database cannot be read.
        """
        _check_user_id(user_id)

        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            with transaction(conn, write=False):
                self._verify_key(conn)
                row = conn.execute(
                    "SELECT encrypted_data FROM tokens WHERE user_id = ?", (user_id,)
                ).fetchone()
            if row is None:
                return None
            try:
                data = json.loads(self._keys.decrypt(row[0]))
            except (InvalidToken, TypeError, ValueError):
                data = None
            if not isinstance(data, dict):
                raise TokenStorageError(
                    f"the stored token of user {user_id!r} in {self._db_path} is corrupt "
                    "and cannot be decrypted",
                    hint="delete it (%copilot logout) and sign in again",
                )
            return data

        return await self._call("read token", read)

    async def save_token(self, user_id: str, token: Mapping[str, Any]) -> None:
        """Encrypt and save ``user_id``'s token set in one transaction.

        The whole mapping is kept (extra fields survive); ``expires_at`` is taken as given, or
        computed as now + ``expires_in``, and also stored in clear. The save bumps the version,
        clears the re-login flag and any cool-down; ``created_at`` is set on the first save.

        Args:
            user_id: Whose token (non-empty, at most 256 characters).
            token: The token endpoint's answer: ``access_token`` (required), ``refresh_token``,
                ``expires_at`` or ``expires_in``, ``scope``, ...

        Raises:
            InputValidationError: bad ``user_id`` or token; nothing was written.
            TokenStorageError: the key does not match the database, or the write failed;
                the previous row is intact.
        """
        _check_user_id(user_id)
        plain, expires_at, scope = self._prepare(user_id, token)

        def write(conn: sqlite3.Connection) -> None:
            now = self._clock()
            with transaction(conn):
                self._verify_key(conn)
                blob = self._keys.encrypt(plain)
                conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version_seq'")
                (version,) = conn.execute(
                    "SELECT value FROM meta WHERE key = 'version_seq'"
                ).fetchone()
                conn.execute(_UPSERT_SQL, (user_id, blob, expires_at, scope, now, now, version))

        await self._call("save token", write)

    async def rotate_key(self, new_key: str | bytes) -> None:
        """Re-encrypt every row and the key check with ``new_key``, in one transaction.

        Afterwards this store uses ``new_key`` and the old key is refused. When the key came
        from a key file, the file is rewritten too, crash-safely (see :mod:`.keys`: the new key
        is staged in ``<key file>.next`` before the commit and moved into place after it). A key
        from the argument or the environment is not persisted: store ``new_key`` first.

        After the commit the database is rewritten (``VACUUM``) and its WAL emptied
        (``wal_checkpoint(TRUNCATE)``), so no data encrypted with the old key stays on disk.

        Args:
            new_key: The new Fernet key.

        Raises:
            TokenStorageError: ``new_key`` is malformed, the current key does not match, a row
                is corrupt, or the write failed (nothing changed); or the database was
                re-encrypted but the key file could not be updated (the message says where
                the new key is), or pages written with the old key could not be purged yet
                (another connection kept reading; the message says to rotate again).
        """
        fresh_key = parse_key(new_key, source="new_key argument")
        await self._call("rotate key", lambda conn: self._rotate(conn, fresh_key))

    # ----------------------------------------------------------------- IRefreshCoordinator

    async def try_acquire_lease(self, user_id: str, *, owner: str, ttl: float, now: float) -> bool:
        """Take ``user_id``'s refresh lease unless another owner holds a live one.

        Args:
            user_id: Whose refresh.
            owner: Unique id of the caller (process + task).
            ttl: Seconds the lease lasts.
            now: Current unix time, from the caller's clock.

        Returns:
            True when ``owner`` now holds the lease (taken, renewed, or taken over from an
            owner whose lease expired at or before ``now``).

        Raises:
            InputValidationError: bad ``user_id`` or a ``ttl`` that is not positive.
            TokenStorageError: the database cannot be written.
        """
        _check_user_id(user_id)
        if not ttl > 0:
            raise InputValidationError("ttl must be > 0 seconds")

        def acquire(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                row = conn.execute(
                    "SELECT owner, expires_at FROM leases WHERE user_id = ?", (user_id,)
                ).fetchone()
                if row is not None and row[0] != owner and row[1] > now:
                    return False
                conn.execute(_LEASE_SQL, (user_id, owner, now + ttl))
                return True

        return await self._call("acquire lease", acquire)

    async def release_lease(self, user_id: str, *, owner: str) -> None:
        """Release ``user_id``'s lease if ``owner`` holds it; otherwise do nothing.

        Args:
            user_id: Whose refresh.
            owner: The caller's owner id.

        Raises:
            InputValidationError: bad ``user_id``.
            TokenStorageError: the database cannot be written.
        """
        _check_user_id(user_id)
        await self._call(
            "release lease",
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE user_id = ? AND owner = ?", (user_id, owner)
            ),
        )

    async def lease_holder(self, user_id: str, *, now: float) -> str | None:
        """Return who holds ``user_id``'s live refresh lease at ``now``; a plain read, no lock.

        Waiters poll this and call :meth:`try_acquire_lease` (a write) only when the lease looks
        free, so waiting never queues behind other processes' writes.

        Args:
            user_id: Whose refresh.
            now: Current unix time, from the caller's clock.

        Returns:
            The owner, or ``None`` when there is no lease or it expired at or before ``now``.

        Raises:
            InputValidationError: bad ``user_id``.
            TokenStorageError: the database cannot be read.
        """
        row = await self._fetch_one(
            "read lease", "SELECT owner, expires_at FROM leases WHERE user_id = ?", user_id
        )
        return None if row is None or row[1] <= now else str(row[0])

    async def token_version(self, user_id: str) -> int | None:
        """Return the version of ``user_id``'s token; it changes on every save.

        Versions come from one store-wide counter, so a deleted and re-created row never
        repeats an earlier number.

        Args:
            user_id: Whose token.

        Returns:
            The version, or ``None`` when there is no row.

        Raises:
            InputValidationError: bad ``user_id``.
            TokenStorageError: the database cannot be read.
        """
        row = await self._fetch_one(
            "read token version", "SELECT version FROM tokens WHERE user_id = ?", user_id
        )
        return None if row is None else int(row[0])

    async def get_cooldown(self, user_id: str, *, now: float) -> RefreshCooldown | None:
        """Return the refresh cool-down in force for ``user_id`` at ``now``, if any.

        Args:
            user_id: Whose refresh.
            now: Current unix time, from the caller's clock.

        Returns:
            The cool-down, or ``None`` when there is none or it ended at or before ``now``.

        Raises:
            InputValidationError: bad ``user_id``.
            TokenStorageError: the database cannot be read.
        """
        row = await self._fetch_one(
            "read cool-down",
            "SELECT cooldown_until, cooldown_kind, cooldown_message, cooldown_retry_after,"
            " cooldown_status, cooldown_code FROM tokens WHERE user_id = ?",
            user_id,
        )
        if row is None or row[0] is None or row[0] <= now:
            return None
        until, kind, message, retry_after, status, code = row
        return RefreshCooldown(
            until=until,
            error_kind=kind if kind in _COOLDOWN_KINDS else "transient",
            message=message or "",
            retry_after=retry_after,
            status=status,
            code=code,
        )

    async def set_cooldown(self, user_id: str, cooldown: RefreshCooldown | None) -> None:
        """Record (or clear, with ``None``) a refresh cool-down; no-op when there is no row.

        The next :meth:`save_token` clears it too.

        Args:
            user_id: Whose refresh.
            cooldown: The cool-down (any kind of :data:`~.protocols.CooldownKind`); its message
                is kept up to 500 characters, its code up to 200.

        Raises:
            InputValidationError: bad ``user_id`` or cool-down fields.
            TokenStorageError: the database cannot be written.
        """
        _check_user_id(user_id)
        values = (None,) * 6 if cooldown is None else _cooldown_values(cooldown)
        await self._call(
            "set cool-down",
            lambda conn: conn.execute(
                "UPDATE tokens SET cooldown_until = ?, cooldown_kind = ?, cooldown_message = ?,"
                " cooldown_retry_after = ?, cooldown_status = ?, cooldown_code = ?"
                " WHERE user_id = ?",
                (*values, user_id),
            ),
        )

    async def set_relogin_required(self, user_id: str, required: bool) -> None:
        """Flag (or clear) that ``user_id`` must sign in again; the row and its tokens are kept.

        Args:
            user_id: Whose token.
            required: The flag's new value.

        Raises:
            InputValidationError: bad ``user_id``.
            TokenStorageError: the database cannot be written.
        """
        _check_user_id(user_id)
        await self._call(
            "set re-login flag",
            lambda conn: conn.execute(
                "UPDATE tokens SET relogin_required = ? WHERE user_id = ?",
                (int(bool(required)), user_id),
            ),
        )

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Finish queued calls, close the connection and stop the worker thread (idempotent).

        Blocks until the worker is done (a queued write may wait up to ``busy_timeout``); from
        async code use :meth:`aclose`. Safe to call from several threads at once.
        """
        closing = None
        with self._lock:
            if not self._closed:
                self._closed = True
                closing = self._executor.submit(self._close_connection)
        self._executor.shutdown(wait=True)
        if closing is not None:
            closing.result()

    async def aclose(self) -> None:
        """Close like :meth:`close`, waiting in a thread so the event loop keeps running."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- internals

    def _prepare(self, user_id: str, token: Mapping[str, Any]) -> tuple[bytes, float | None, Any]:
        """Validate ``token``; return its JSON, its absolute expiry and its scope."""
        if not isinstance(token, Mapping):
            raise InputValidationError("token must be a mapping (the token endpoint's answer)")
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise InputValidationError("token['access_token'] must be a non-empty string")
        refresh = token.get("refresh_token")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise InputValidationError("token['refresh_token'] must be a non-empty string")
        scope = token.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InputValidationError("token['scope'] must be a space-separated string")
        expires_at: float | None = None
        if token.get("expires_at") is not None:
            expires_at = _number(token["expires_at"], "token['expires_at']")
        elif token.get("expires_in") is not None:
            expires_at = self._clock() + _number(token["expires_in"], "token['expires_in']")
        payload = {**token, "expires_at": expires_at}
        try:
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            plain = text.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InputValidationError(
                f"the token of user {user_id!r} cannot be stored as JSON ({type(exc).__name__})"
            ) from None
        return plain, expires_at, scope

    async def _call(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise TokenStorageError(
                    f"the token store {self._db_path} is closed", hint="open a new store"
                )
            future = loop.run_in_executor(self._executor, self._in_worker, operation, fn)
        return await future

    async def _fetch_one(self, operation: str, sql: str, user_id: str) -> Any:
        _check_user_id(user_id)
        return await self._call(operation, lambda conn: conn.execute(sql, (user_id,)).fetchone())

    def _in_worker(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the worker's connection (opened on first use); translate errors."""
        try:
            if self._conn is None:
                self._conn = self._open()
            return fn(self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise TokenStorageError(
                f"token store {self._db_path}: {operation} failed ({_describe(exc)})",
                hint=f"check that {self._db_path} is a token store on a writable disk",
            ) from exc

    def _open(self) -> sqlite3.Connection:
        create_private_file(self._db_path)
        check_private_file(self._db_path, os.stat(self._db_path), what="token store")
        conn = sqlite3.connect(self._db_path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left behind
            conn.execute("PRAGMA journal_mode=WAL")  # outside any transaction, on purpose
            apply_migrations(conn, MIGRATIONS, now=self._clock())
            self._seed_key_check(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _seed_key_check(self, conn: sqlite3.Connection) -> None:
        """Write the key check of a new, empty database (the first key to open it wins)."""
        with transaction(conn):
            has_check = conn.execute("SELECT 1 FROM meta WHERE key = 'key_check'").fetchone()
            has_rows = conn.execute("SELECT 1 FROM tokens LIMIT 1").fetchone()
            if has_check is None and has_rows is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('key_check', ?)",
                    (self._keys.new_check(),),
                )

    def _verify_key(self, conn: sqlite3.Connection) -> None:
        """Check the key against the key-check row (inside the caller's transaction)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        self._keys.verify(None if row is None else row[0], store=self._db_path)

    def _rotate(self, conn: sqlite3.Connection, fresh_key: bytes) -> None:
        with transaction(conn):
            self._verify_key(conn)
            rotator = self._keys.rotator(fresh_key)
            updates = []
            for user_id, blob in conn.execute("SELECT user_id, encrypted_data FROM tokens"):
                try:
                    updates.append((rotator.rotate(blob), user_id))
                except (InvalidToken, TypeError):
                    raise TokenStorageError(
                        f"cannot rotate the key: the stored token of user {user_id!r} is "
                        "corrupt; nothing was changed",
                        hint=f"delete that user's token ({user_id!r}) and rotate again",
                    ) from None
            check = self._keys.stage(fresh_key)
            conn.executemany("UPDATE tokens SET encrypted_data = ? WHERE user_id = ?", updates)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'key_check'", (check,))
        purge_error: sqlite3.Error | None = None
        try:
            _purge_old_pages(conn)
        except sqlite3.Error as exc:
            purge_error = exc
        self._keys.switch(fresh_key, check)  # always, even when the purge failed
        if purge_error is not None:
            raise TokenStorageError(
                f"the token store {self._db_path} now uses the new key, but pages written with "
                f"the old key could not be purged yet ({_describe(purge_error)})",
                hint="rotate again (the same new key will do) when no other process is using "
                "the token store",
            ) from purge_error

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
