"""Fail-closed persistence over loopback: a refreshed token that cannot be saved is not used."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from integ_helpers import USER, Clock, MakeAuth, MakeEngine, access_tokens, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import (
    AuthenticationError,
    TokenPersistenceError,
    TokenStorageError,
)
from saga_magic.core.events import Event, subscribe
from saga_magic.core.refresh import PERSIST_COOLDOWN
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox


@contextlib.contextmanager
def _writes_refused(db_path: Path) -> Iterator[None]:
    """Make the real database refuse every write to the tokens table (as a full disk would)."""
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for action in ("INSERT", "UPDATE"):
            conn.execute(
                f"CREATE TRIGGER refuse_{action.lower()} BEFORE {action} ON tokens "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            conn.execute("DROP TRIGGER refuse_insert")
            conn.execute("DROP TRIGGER refuse_update")


async def test_unsaved_refresh_fails_closed(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth: EntraIDAuthManager,
    clock: Clock,
) -> None:
    events: list[Event] = []
    subscribe(events.append)
    old = await seed(sandbox, store, expires_at=clock() - 1)
    (before,) = await store.list_tokens()
    issued_before = access_tokens(sandbox)
    with _writes_refused(store_path):
        with pytest.raises(TokenPersistenceError) as caught:
            async with asyncio.timeout(5):
                await auth.get_valid_token(USER)
        error = caught.value
        assert isinstance(error, AuthenticationError)
        assert isinstance(error, TokenStorageError)
        assert isinstance(error.__cause__, TokenStorageError)
        unsaved = access_tokens(sandbox) - issued_before
        assert len(unsaved) == 1  # Entra did issue a token...
        (lost,) = unsaved
        # ...which is not in memory: the next call does not return it; for a few seconds it
        # fails fast (no new token minted and discarded), then it tries again.
        with pytest.raises(TokenPersistenceError) as again:
            async with asyncio.timeout(5):
                await auth.get_valid_token(USER)
        assert again.value.code == "cooldown"
        assert sandbox.post_count("token") == 1
        clock.advance(PERSIST_COOLDOWN)
        with pytest.raises(TokenPersistenceError) as third:
            async with asyncio.timeout(5):
                await auth.get_valid_token(USER)
        assert third.value.code != "cooldown"
        assert sandbox.post_count("token") == 2
    # The old row is intact and still decrypts, also for a store opened afresh.
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key) as fresh:
        saved = await fresh.get_token(USER)
    assert saved is not None
    assert saved["access_token"] == old["access_token"]
    assert saved["refresh_token"] == old["refresh_token"]
    (after,) = await store.list_tokens()
    assert after.updated_at == before.updated_at
    assert "token_persistence_failed" in [e.event for e in events]
    # Writes work again: the next call refreshes, saves and returns a new token.
    clock.advance(PERSIST_COOLDOWN)
    async with asyncio.timeout(5):
        token = await auth.get_valid_token(USER)
    assert token != lost
    assert token not in (old["access_token"],)
    assert (await store.get_token(USER) or {}).get("access_token") == token


class _RefusingStore(SQLiteEncryptedTokenStore):
    """A store whose save_token raises, everything else real."""

    refuse = True

    async def save_token(self, user_id: str, token: Mapping[str, Any]) -> None:
        if self.refuse:
            raise TokenStorageError("token store: save token failed (disk I/O error)")
        await super().save_token(user_id, token)


async def test_forced_refresh_after_a_401_fails_closed(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth_factory: MakeAuth,
    engine_factory: MakeEngine,
) -> None:
    old = await seed(sandbox, store)
    with _RefusingStore(store_path, encryption_key=store_key) as refusing:
        auth = auth_factory(st=refusing)
        engine = engine_factory(auth)
        sandbox.script("chat", ["auth_gateway_401"])
        with pytest.raises(TokenPersistenceError):
            async with asyncio.timeout(5):
                await engine.reason(AITask("needs a new token"))
        assert sandbox.post_count("token") == 1
        assert sandbox.post_count("chat") == 1  # the unsaved token was never sent
        saved = await refusing.get_token(USER)
        assert saved is not None
        assert saved["refresh_token"] == old["refresh_token"]
        # Nothing unsaved lingers in memory: the stored (old) token is served again.
        async with asyncio.timeout(5):
            assert await auth.get_valid_token(USER) == old["access_token"]
        refusing.refuse = False
        async with asyncio.timeout(5):
            result = await engine.reason(AITask("saved now"))
        assert result.response_text == "saved now"


async def test_a_broken_store_read_is_a_storage_error(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    wrong_key = SQLiteEncryptedTokenStore.generate_key()
    with SQLiteEncryptedTokenStore(store_path, encryption_key=wrong_key) as wrong:
        auth = auth_factory(st=wrong)
        with pytest.raises(TokenStorageError) as caught:
            async with asyncio.timeout(5):
                await auth.get_valid_token(USER)
    assert not isinstance(caught.value, AuthenticationError)
    assert sandbox.post_count("token") == 0  # nothing was sent with an unreadable store
    saved = await store.get_token(USER)  # and the right key still reads the row
    assert saved is not None


async def test_a_key_rotated_by_another_process_is_noticed(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    """One process rotates the key; another, still on the old key, refuses to read or write."""
    old = await seed(sandbox, store, expires_at=clock() - 1)
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key) as behind:
        stale = auth_factory(st=behind)
        assert await behind.get_token(USER) is not None  # opened while the old key was right
        new_key = SQLiteEncryptedTokenStore.generate_key()
        await store.rotate_key(new_key)  # "another process" (its own connection) rotates
        with pytest.raises(TokenStorageError) as caught:
            async with asyncio.timeout(5):
                await stale.get_valid_token(USER)
        assert not isinstance(caught.value, AuthenticationError)
        assert sandbox.post_count("token") == 0  # nothing sent, nothing written
    async with asyncio.timeout(5):
        token = await auth_factory().get_valid_token(USER)  # the rotated store carries on
    assert token != old["access_token"]
    assert sandbox.post_count("token") == 1
    with SQLiteEncryptedTokenStore(store_path, encryption_key=new_key) as fresh:
        assert (await fresh.get_token(USER) or {}).get("access_token") == token
