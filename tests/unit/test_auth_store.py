"""The auth manager on the real SQLiteEncryptedTokenStore (two store objects = two processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import Entra, build, device_ok, oauth_error, secret, token_ok

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import AuthenticationError, RequestTimeoutError
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import TokenStatus

Pair = tuple[EntraIDAuthManager, Entra, SQLiteEncryptedTokenStore]


@pytest.fixture
async def open_manager(fake_clock: Any, tmp_path: Path) -> AsyncIterator[Callable[[], Pair]]:
    key = SQLiteEncryptedTokenStore.generate_key()
    cleanup: list[Any] = []

    def factory() -> Pair:
        store = SQLiteEncryptedTokenStore(
            tmp_path / "tokens.db", encryption_key=key, clock=fake_clock
        )
        manager, entra, client = build(store, fake_clock)
        cleanup.append((manager, client, store))
        return manager, entra, store

    yield factory
    for manager, client, store in cleanup:
        await manager.close()
        await client.aclose()
        store.close()


async def seed(store: SQLiteEncryptedTokenStore, clock: Any, expires_in: float) -> dict[str, Any]:
    row = {
        "access_token": secret("at"),
        "refresh_token": secret("rt"),
        "expires_at": clock() + expires_in,
        "scope": "https://cognitiveservices.azure.com/.default",
    }
    await store.save_token("alice", row)
    return row


async def test_refresh_saves_to_the_real_store(open_manager: Any, fake_clock: Any) -> None:
    manager, entra, store = open_manager()
    await seed(store, fake_clock, -1)
    new_at, new_rt = secret("at"), secret("rt")
    entra.reply(token_ok(new_at, new_rt, expires_in=4000))
    assert await manager.get_valid_token("alice") == new_at
    saved = await store.get_token("alice")
    assert saved is not None
    assert (saved["access_token"], saved["refresh_token"]) == (new_at, new_rt)
    (info,) = await manager.token_infos()
    assert info.expires_at == fake_clock() + 4000
    assert info.status(now=fake_clock()) is TokenStatus.VALID


async def test_relogin_flag_and_cooldown_are_shared_between_processes(
    open_manager: Any, fake_clock: Any
) -> None:
    first, first_entra, store = open_manager()
    second, second_entra, _ = open_manager()
    row = await seed(store, fake_clock, -1)
    first_entra.reply(oauth_error(400, "invalid_grant", (50173,)))
    with pytest.raises(AuthenticationError):
        await first.get_valid_token("alice")
    with pytest.raises(AuthenticationError, match="recent token refresh failed"):
        await second.get_valid_token("alice")
    assert (first_entra.posts, second_entra.posts) == (1, 0)
    (info,) = await second.token_infos()
    assert info.relogin_required
    assert info.status(now=fake_clock()) is TokenStatus.RELOGIN
    kept = await store.get_token("alice")
    assert kept is not None
    assert kept["refresh_token"] == row["refresh_token"]  # never deleted

    # A device login in the second process clears the flag and the cool-down for everyone.
    second_entra.reply(device_ok(), token_ok())
    login = await second.start_device_login("alice")
    await second.complete_device_login(login)
    (info,) = await first.token_infos()
    assert not info.relogin_required
    first._cache.clear()
    assert await first.get_valid_token("alice")
    assert first_entra.posts == 1


async def test_a_timeout_cooldown_crosses_processes_with_its_class_and_status(
    open_manager: Any, fake_clock: Any
) -> None:
    first, first_entra, store = open_manager()
    second, second_entra, _ = open_manager()
    await seed(store, fake_clock, -1)
    first_entra.reply(*[httpx.Response(504, text="Gateway Timeout")] * 6)
    with pytest.raises(RequestTimeoutError):
        await first.get_valid_token("alice")
    with pytest.raises(RequestTimeoutError) as caught:
        await second.get_valid_token("alice")
    assert (caught.value.code, caught.value.status) == ("cooldown", 504)
    assert second_entra.posts == 0


async def test_waiter_takes_the_token_saved_by_the_lease_holder(
    open_manager: Any, fake_clock: Any
) -> None:
    manager, entra, store = open_manager()
    _, _, other_store = open_manager()
    await seed(store, fake_clock, -1)
    now = fake_clock()
    assert await other_store.try_acquire_lease("alice", owner="other-1", ttl=60, now=now)
    fresh = secret("at")

    async def holder_finishes(seconds: float) -> None:
        await fake_clock.sleep(seconds)
        await other_store.save_token(
            "alice",
            {"access_token": fresh, "refresh_token": secret("rt"), "expires_in": 3600},
        )
        await other_store.release_lease("alice", owner="other-1")

    manager._refresher._sleep = holder_finishes
    assert await manager.get_valid_token("alice") == fresh
    assert entra.posts == 0


async def test_logout_on_the_real_store(open_manager: Any, fake_clock: Any) -> None:
    manager, _, store = open_manager()
    await seed(store, fake_clock, 3600)
    assert await manager.get_valid_token("alice")
    assert await manager.logout("alice") is True
    assert await store.get_token("alice") is None
    assert await manager.token_infos() == []
