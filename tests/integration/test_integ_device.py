"""Device-code login end to end over loopback: start, approve, poll, save, chat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from integ_helpers import USER, Clock, MakeAuth, MakeEngine

from saga_magic.core.auth import DevicePoll, EntraIDAuthManager
from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    TokenPersistenceError,
)
from saga_magic.core.events import Event, subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox


async def test_login_approve_complete_then_chat(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
    clock: Clock,
) -> None:
    events: list[Event] = []
    subscribe(events.append)
    async with asyncio.timeout(10):
        login = await auth.start_device_login(USER)
        assert login.verification_uri == f"{sandbox.base_url}/devicelogin"
        assert login.user_code in login.message
        assert login.interval == 5
        assert login.expires_at == pytest.approx(clock() + 900)
        (device_code,) = sandbox.state.device_flows
        assert device_code not in repr(login)
        assert device_code not in str(login)
        polls: list[DevicePoll] = []

        def on_poll(poll: DevicePoll) -> None:
            polls.append(poll)
            if len(polls) == 2:  # the user approves while we are polling
                sandbox.approve_device_code(login.user_code)

        info = await auth.complete_device_login(login, on_poll=on_poll)
        assert [p.status for p in polls] == ["authorization_pending"] * 2
        assert clock.sleeps == [5.0, 5.0, 5.0]  # interval honoured before each poll
        assert info.user_id == USER
        assert "offline_access" in info.scopes
        saved = await store.get_token(USER)
        assert saved is not None
        assert saved["refresh_token"]
        assert (await auth.token_infos())[0].user_id == USER
        posts = sandbox.post_count("token")
        result = await engine_factory(auth).reason(AITask("signed in"))
    assert result.response_text == "signed in"
    assert sandbox.post_count("token") == posts  # the login's token is cached: no refresh
    names = [e.event for e in events]
    assert "device_code_issued" in names
    assert names.count("device_code_poll") == 2
    assert "login_complete" in names


async def test_login_replaces_a_relogin_flagged_token(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    body = sandbox.issue_tokens()
    await store.save_token(USER, {**body, "expires_at": clock() - 1})
    sandbox.revoke_user()
    with pytest.raises(AuthenticationError):
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    assert (await store.list_tokens())[0].relogin_required
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        sandbox.approve_device_code(login.user_code)
        await auth.complete_device_login(login)
        (info,) = await store.list_tokens()
        assert not info.relogin_required
        assert info.cooldown_until is None
        token = await auth.get_valid_token(USER)  # the re-login cleared the cool-down
    assert token != body["access_token"]


async def test_auto_approve_demo_mode(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.auto_approve = True
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        await auth.complete_device_login(login)
    assert clock.sleeps == [5.0]
    assert await store.get_token(USER) is not None


async def test_declined(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        sandbox.decline_device_code(login.user_code)
        with pytest.raises(AuthenticationError) as caught:
            await auth.complete_device_login(login)
    assert caught.value.code == "authorization_declined"
    assert "declined" in caught.value.message
    assert await store.get_token(USER) is None


async def test_expired_by_entra(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        sandbox.expire_device_code(login.user_code)
        with pytest.raises(AuthenticationError) as caught:
            await auth.complete_device_login(login)
    assert caught.value.code == "expired_token"
    assert await store.get_token(USER) is None


async def test_expired_locally_while_pending(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    with Sandbox(device_code_lifetime=12, clock=clock) as sb:
        auth = auth_factory(sb)
        async with asyncio.timeout(5):
            login = await auth.start_device_login(USER)
            with pytest.raises(AuthenticationError) as caught:
                await auth.complete_device_login(login)
        assert caught.value.code == "expired_token"
        assert sum(clock.sleeps) == pytest.approx(12)  # never slept past the expiry
        assert sb.post_count("token") == 2  # polls at +5 and +10, then the code died


async def test_device_expire_early(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    sandbox.script("devicecode", ["device_expire_early:7"])
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        with pytest.raises(AuthenticationError) as caught:
            await auth.complete_device_login(login)
    assert caught.value.code == "expired_token"
    assert [r.status for r in sandbox.requests("token")] == [400, 400]


async def test_bad_verification_code(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    sandbox.script("token", ["device_bad_code"])
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        with pytest.raises(AuthenticationError) as caught:
            await auth.complete_device_login(login)
    assert caught.value.code == "bad_verification_code"


async def test_slow_down_is_honoured(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("token", ["device_slow_down", "device_slow_down"])
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        polls: list[DevicePoll] = []

        def on_poll(poll: DevicePoll) -> None:
            polls.append(poll)
            if len(polls) == 2:
                sandbox.approve_device_code(login.user_code)

        await auth.complete_device_login(login, on_poll=on_poll)
    assert [p.status for p in polls] == ["slow_down", "slow_down"]
    assert clock.sleeps == [5.0, 10.0, 15.0]  # interval += 5 s per slow_down
    assert await store.get_token(USER) is not None


async def test_slow_down_from_enforced_interval_never_triggers(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    """A server that enforces ``interval`` never has to say slow_down to us."""
    with Sandbox(enforce_poll_interval=True, clock=clock) as sb:
        auth = auth_factory(sb)
        async with asyncio.timeout(5):
            login = await auth.start_device_login(USER)
            polls: list[DevicePoll] = []

            def on_poll(poll: DevicePoll) -> None:
                polls.append(poll)
                if len(polls) == 3:
                    sb.approve_device_code(login.user_code)

            await auth.complete_device_login(login, on_poll=on_poll)
        assert {p.status for p in polls} == {"authorization_pending"}


async def test_throttled_and_failing_polls_keep_polling(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("token", ["token_429:12", "token_5xx_html", "token_reset"])
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        polls: list[DevicePoll] = []

        def on_poll(poll: DevicePoll) -> None:
            polls.append(poll)
            if len(polls) == 3:
                sandbox.approve_device_code(login.user_code)

        await auth.complete_device_login(login, on_poll=on_poll)
    assert [p.status for p in polls] == ["throttled", "transient", "transient"]
    assert clock.sleeps[1] >= 12  # the server's wait is honoured
    assert await store.get_token(USER) is not None


async def test_start_is_retried_on_transient_faults(
    sandbox: Sandbox, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("devicecode", ["token_5xx_empty", "token_429:3"])
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
    assert login.user_code
    assert clock.sleeps == [1.0, 3.0]
    assert sandbox.post_count("devicecode") == 3


async def test_cancellation_saves_nothing(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    events: list[Event] = []
    subscribe(events.append)
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        polled = asyncio.Event()
        task = asyncio.create_task(
            auth.complete_device_login(login, on_poll=lambda _poll: polled.set())
        )
        await polled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        posts = sandbox.post_count("token")
        sandbox.approve_device_code(login.user_code)  # too late: nobody polls any more
        await asyncio.sleep(0.05)
    assert sandbox.post_count("token") == posts
    assert await store.get_token(USER) is None
    assert await store.list_tokens() == []
    (failed,) = [e for e in events if e.event == "login_failed"]
    assert failed.context["code"] == "cancelled"
    with pytest.raises(AuthenticationError):
        await auth.get_valid_token(USER)


async def test_login_whose_save_fails_keeps_nothing(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_key: str,
    auth_factory: MakeAuth,
) -> None:
    class FailingStore(SQLiteEncryptedTokenStore):
        async def save_token(self, user_id: str, token: object) -> None:
            from saga_magic.core.errors import TokenStorageError

            raise TokenStorageError("disk full")

    failing = FailingStore(store.db_path, encryption_key=store_key)
    try:
        auth = auth_factory(st=failing)
        async with asyncio.timeout(5):
            login = await auth.start_device_login(USER)
            sandbox.approve_device_code(login.user_code)
            with pytest.raises(TokenPersistenceError):
                await auth.complete_device_login(login)
            with pytest.raises(AuthenticationError) as caught:
                await auth.get_valid_token(USER)  # nothing cached in memory either
        assert not isinstance(caught.value, TokenPersistenceError)
        assert await store.list_tokens() == []
    finally:
        failing.close()


async def test_logout_forgets_the_token(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    sandbox.auto_approve = True
    async with asyncio.timeout(5):
        await auth.complete_device_login(await auth.start_device_login(USER))
        assert await auth.get_valid_token(USER)
        assert await auth.logout(USER) is True
        assert await auth.logout(USER) is False
        with pytest.raises(AuthenticationError):
            await auth.get_valid_token(USER)  # not even from memory
    assert await store.list_tokens() == []


async def test_unknown_client_id_is_a_configuration_error(
    sandbox: Sandbox, auth_factory: MakeAuth
) -> None:
    auth = auth_factory(client_id="00000000-0000-0000-0000-0000000000ff")
    with pytest.raises(ConfigurationError) as caught:
        async with asyncio.timeout(5):
            await auth.start_device_login(USER)
    assert caught.value.code == "unauthorized_client"
    assert sandbox.post_count("devicecode") == 1


async def test_a_redeemed_code_cannot_be_used_twice(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    sandbox.auto_approve = True
    async with asyncio.timeout(5):
        login = await auth.start_device_login(USER)
        await auth.complete_device_login(login)
        with pytest.raises(AuthenticationError) as caught:
            await auth.complete_device_login(login)
    assert caught.value.code == "invalid_grant"
    assert await store.get_token(USER) is not None  # the first login's token is kept


async def test_a_login_in_another_process_ends_the_relogin_cool_down_here(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth: EntraIDAuthManager,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    body = sandbox.issue_tokens()
    await store.save_token(USER, {**body, "expires_at": clock() - 1})
    sandbox.script("token", ["rt_revoked"])
    with pytest.raises(AuthenticationError):
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key, clock=clock) as other:
        elsewhere = auth_factory(st=other)  # e.g. the TUI, signing in
        sandbox.auto_approve = True
        async with asyncio.timeout(5):
            await elsewhere.complete_device_login(await elsewhere.start_device_login(USER))
            fresh = await elsewhere.get_valid_token(USER)
    posts = sandbox.post_count("token")
    async with asyncio.timeout(5):
        assert await auth.get_valid_token(USER) == fresh  # read from the store, no POST
    assert sandbox.post_count("token") == posts
