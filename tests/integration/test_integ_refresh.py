"""Refresh over loopback: expiry, rotation, the cache, strict rotation, opportunistic refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integ_helpers import USER, Clock, MakeAuth, MakeEngine, access_tokens, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import AuthenticationError
from saga_magic.core.events import Event
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox


async def test_expired_token_is_refreshed_rotated_and_saved(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    events: list[Event],
) -> None:
    old = await seed(sandbox, store, expires_at=clock() - 60)
    (before,) = await store.list_tokens()
    clock.advance(5)
    async with asyncio.timeout(5):
        token = await auth.get_valid_token(USER)
    assert sandbox.post_count("token") == 1
    assert token != old["access_token"]
    assert token in access_tokens(sandbox)
    saved = await store.get_token(USER)
    assert saved is not None
    assert saved["access_token"] == token
    assert saved["refresh_token"] != old["refresh_token"]  # rotated and saved with the AT
    assert saved["expires_at"] == pytest.approx(clock() + 3600)
    (after,) = await store.list_tokens()  # the old row was replaced, not duplicated
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at
    assert after.expires_at == pytest.approx(clock() + 3600)
    (request,) = sandbox.requests("token")
    assert isinstance(request.body, dict)
    assert request.body["grant_type"] == "refresh_token"
    assert "client_secret" not in request.body  # public client
    names = [e.event for e in events]
    assert names[:3] == ["token_refresh_start", "token_stored", "token_refresh_success"]
    assert len({e.op_id for e in events[:3]}) == 1


async def test_cache_hit_makes_no_post(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    events: list[Event],
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    async with asyncio.timeout(5):
        first = await auth.get_valid_token(USER)
        seen = len(events)
        again = [await auth.get_valid_token(USER) for _ in range(50)]
    assert again == [first] * 50
    assert sandbox.post_count("token") == 1
    assert auth.cache_hits == 50
    assert len(events) == seen  # hits are counted, not logged


async def test_fresh_saved_token_needs_no_post_and_is_cached(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    body = await seed(sandbox, store)
    async with asyncio.timeout(5):
        assert await auth.get_valid_token(USER) == body["access_token"]
        assert await auth.get_valid_token(USER) == body["access_token"]
    assert sandbox.post_count("token") == 0
    assert auth.cache_hits == 1


async def test_token_refreshed_again_after_its_lifetime(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    """A sandbox with 10-minute tokens and a 5-minute buffer: a refresh every 5 minutes."""
    with Sandbox(token_lifetime=600, clock=clock) as sb:
        auth = auth_factory(sb)
        await seed(sb, store)
        async with asyncio.timeout(5):
            first = await auth.get_valid_token(USER)
            clock.advance(200)
            assert await auth.get_valid_token(USER) == first  # 400 s left: still outside buffer
            clock.advance(650)  # expired now
            second = await auth.get_valid_token(USER)
            clock.advance(350)  # inside the buffer again
            third = await auth.get_valid_token(USER)
        assert len({first, second, third}) == 3
        assert sb.post_count("token") == 2


async def test_strict_rotation_works_with_single_flight(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    """Reuse detection on: every refresh must present the newest refresh token, saved by us."""
    sandbox.rt_reuse_strict(True)
    await seed(sandbox, store, expires_at=clock() - 1)
    async with asyncio.timeout(10):
        for round_ in range(1, 4):
            tokens = await asyncio.gather(*(auth.get_valid_token(USER) for _ in range(50)))
            assert len(set(tokens)) == 1
            assert sandbox.post_count("token") == round_
            clock.advance(3600)  # the next round starts expired
    assert [r.status for r in sandbox.requests("token")] == [200, 200, 200]
    infos = await store.list_tokens()
    assert not infos[0].relogin_required


async def test_strict_rotation_rejects_a_stale_refresh_token(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    """Contrast: presenting a superseded refresh token is refused (re-login), the row kept."""
    old = await seed(sandbox, store, expires_at=clock() - 1)
    async with asyncio.timeout(5):
        await auth.get_valid_token(USER)
    sandbox.rt_reuse_strict(True)
    await store.save_token(USER, {**old, "expires_at": clock() - 1})  # the stale RT comes back
    clock.advance(3600)  # the cached token expires: the stale row is read back
    with pytest.raises(AuthenticationError) as caught:
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    assert caught.value.code == "invalid_grant"
    (info,) = await store.list_tokens()
    assert info.relogin_required
    assert (await store.get_token(USER) or {}).get("refresh_token") == old["refresh_token"]


async def test_opportunistic_refresh_inside_the_buffer(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, events: list[Event]
) -> None:
    with Sandbox(token_lifetime=3600, clock=clock) as sb:
        auth = auth_factory(sb)
        body = await seed(sb, store, expires_at=clock() + 120)  # valid, but inside the buffer
        sb.script("token", ["token_5xx_json"])
        async with asyncio.timeout(5):
            kept = await auth.get_valid_token(USER)  # one attempt, no wait; the valid token
            assert kept == body["access_token"]
            assert sb.post_count("token") == 1
            assert clock.sleeps == []
            assert await auth.get_valid_token(USER) == kept  # quiet period: no new attempt
            assert sb.post_count("token") == 1
            clock.advance(31)
            fresh = await auth.get_valid_token(USER)
        assert fresh != kept
        assert sb.post_count("token") == 2
        start = next(e for e in events if e.event == "token_refresh_start")
        assert start.context["opportunistic"] is True
        assert start.context["max_attempts"] == 1


async def test_engine_refreshes_an_expired_token_before_the_chat_call(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    engine: CopilotReasoningEngine,
    clock: Clock,
) -> None:
    old = await seed(sandbox, store, expires_at=clock() - 1)
    async with asyncio.timeout(5):
        result = await engine.reason(AITask("after refresh"))
    assert result.response_text == "after refresh"
    assert sandbox.post_count("token") == 1
    (chat,) = sandbox.requests("chat")
    assert chat.status == 200
    saved = await store.get_token(USER)
    assert saved is not None
    assert saved["access_token"] != old["access_token"]


async def test_refresh_in_sets_an_earlier_refresh_time(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    with Sandbox(token_lifetime=7200, refresh_in=1800, clock=clock) as sb:
        auth = auth_factory(sb, buffer_seconds=60)
        await seed(sb, store, expires_at=clock() - 1)
        async with asyncio.timeout(5):
            first = await auth.get_valid_token(USER)
            clock.advance(1700)
            assert await auth.get_valid_token(USER) == first
            clock.advance(200)  # past refresh_in, long before expiry
            second = await auth.get_valid_token(USER)
        assert second != first
        assert sb.post_count("token") == 2


async def test_opaque_access_tokens_do_not_refresh_on_every_call(
    clock: Clock,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    engine_factory: MakeEngine,
) -> None:
    with Sandbox(token_lifetime=3600, opaque_tokens=True, clock=clock) as sb:
        auth = auth_factory(sb)
        engine = engine_factory(auth, sb)
        await seed(sb, store, expires_at=clock() - 1)
        async with asyncio.timeout(5):
            for _ in range(3):
                assert (await engine.reason(AITask("opaque"))).response_text == "opaque"
        assert sb.post_count("token") == 1
        saved = await store.get_token(USER)
        assert saved is not None
        assert saved["access_token"].count(".") == 0


async def test_each_chat_attempt_asks_for_a_token(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    engine: CopilotReasoningEngine,
    clock: Clock,
) -> None:
    """openai-python #1526: a retry after a long wait must not reuse a token gone stale."""
    await seed(sandbox, store, expires_at=clock() + 310)  # fresh for 10 s more (300 s buffer)
    sandbox.script("chat", ["503_json:retry_after=20"])
    async with asyncio.timeout(5):
        result = await engine.reason(AITask("retried later"))
    assert result.attempts == 2
    assert sandbox.post_count("token") == 1  # refreshed between the attempts
    first, second = sandbox.requests("chat")
    assert first.headers["authorization"] != second.headers["authorization"]


async def test_a_row_without_a_refresh_token_needs_a_login(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    body = sandbox.issue_tokens(scope="https://cognitiveservices.azure.com/.default")
    assert "refresh_token" not in body
    await store.save_token(USER, {**body, "expires_at": clock() - 1})
    with pytest.raises(AuthenticationError) as caught:
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    assert "login" in (caught.value.hint or "")
    assert sandbox.post_count("token") == 0


async def test_a_cancelled_refresh_releases_its_lease(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    sandbox.script("token", ["token_slow:0.4"])
    first = auth_factory()
    async with asyncio.timeout(5):
        task = asyncio.create_task(first.get_valid_token(USER))
        while sandbox.post_count("token") == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key, clock=clock) as other:
        async with asyncio.timeout(5):
            token = await auth_factory(st=other, lease_poll_interval=0.01).get_valid_token(USER)
    assert token
    # The abandoned refresh releases its lease as it unwinds (a few polls later at most), so the
    # other process does not wait for the lease's TTL (35 s here).
    assert sum(clock.sleeps) < 5.0
    assert sandbox.post_count("token") == 2
