"""Entra ID faults (PROTOCOLS 4.1) through the auth manager, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from integ_helpers import USER, Clock, MakeAuth, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.events import Event, subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox


async def _refresh_expired(
    sb: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> str:
    await seed(sb, store, expires_at=clock() - 1)
    async with asyncio.timeout(10):
        return await auth.get_valid_token(USER)


async def _assert_row_kept(store: SQLiteEncryptedTokenStore, *, relogin: bool) -> None:
    saved = await store.get_token(USER)
    assert saved is not None
    assert saved["refresh_token"]  # never deleted on invalid_grant
    (info,) = await store.list_tokens()
    assert info.relogin_required is relogin


# -- re-login -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "aadsts"),
    [("rt_revoked", 50173), ("rt_inactive", 700082), ("mfa_required", 50076)],
)
async def test_relogin_faults(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    fault: str,
    aadsts: int,
) -> None:
    sandbox.script("token", [fault])
    with pytest.raises(AuthenticationError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    error = caught.value
    assert type(error) is AuthenticationError
    assert error.status == 400
    assert error.code == "invalid_grant"
    assert error.error_codes == (aadsts,)
    assert error.request_id
    assert error.correlation_id
    assert error.attempts == 1
    assert error.hint
    assert sandbox.post_count("token") == 1  # no retry
    assert clock.sleeps == []
    await _assert_row_kept(store, relogin=True)


@pytest.mark.parametrize(
    ("hook", "aadsts"),
    [
        (Sandbox.revoke_user, 50173),
        (Sandbox.age_refresh_tokens, 700082),
        (Sandbox.require_mfa, 50076),
    ],
)
async def test_relogin_admin_hooks(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    hook: Callable[[Sandbox], object],
    aadsts: int,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    hook(sandbox)
    with pytest.raises(AuthenticationError) as caught:
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    assert caught.value.error_codes == (aadsts,)
    await _assert_row_kept(store, relogin=True)


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "aadsts"), [("secret_bad", 7000215), ("secret_expired", 7000222)]
)
async def test_client_secret_faults_are_configuration_errors(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    fault: str,
    aadsts: int,
) -> None:
    sandbox.script("token", [fault])
    with pytest.raises(ConfigurationError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.status == 401
    assert caught.value.code == "invalid_client"
    assert caught.value.error_codes == (aadsts,)
    assert "AZURE_CLIENT_SECRET" in (caught.value.hint or "")
    assert sandbox.post_count("token") == 1
    await _assert_row_kept(store, relogin=False)


async def test_confidential_client_sends_its_secret_and_sees_expiry(
    clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    secret = "sandbox-client-secret-0123456789abcdef"
    with Sandbox(token_lifetime=3600, client_secret=secret, clock=clock) as sb:
        auth = auth_factory(sb)
        await _refresh_expired(sb, store, auth, clock)
        (request,) = sb.requests("token")
        assert isinstance(request.body, dict)
        assert request.body["client_secret"] != secret  # the sandbox logs a fingerprint only
        assert request.status == 200
        sb.expire_client_secret()
        clock.advance(3600)
        with pytest.raises(ConfigurationError) as caught:
            async with asyncio.timeout(5):
                await auth.get_valid_token(USER)
        assert caught.value.error_codes == (7000222,)


async def test_public_client_sending_a_secret_is_a_configuration_error(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    auth = auth_factory(client_secret="not-registered-secret-0123456789")
    with pytest.raises(ConfigurationError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.error_codes == (700025,)


async def test_wrong_tenant_is_a_configuration_error(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    auth = auth_factory(tenant_id="fabrikam.onmicrosoft.com")
    with pytest.raises(ConfigurationError):
        await _refresh_expired(sandbox, store, auth, clock)
    assert sandbox.post_count("token") == 1


# -- throttling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "server_wait"),
    [("token_429:7", 7.0), ("token_429_date:5", 5.0), ("token_429_garbage", None)],
)
async def test_429_is_retried_honouring_the_server_wait(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    fault: str,
    server_wait: float | None,
) -> None:
    events: list[Event] = []
    subscribe(events.append)
    sandbox.script("token", [fault, "ok"])
    token = await _refresh_expired(sandbox, store, auth, clock)
    assert token
    assert sandbox.post_count("token") == 2
    (wait,) = clock.sleeps
    if server_wait is None:
        assert wait == 1.0  # garbage Retry-After: our own schedule
    else:
        assert wait >= server_wait  # never shortened
    (retry,) = [e for e in events if e.event == "token_refresh_retry"]
    assert retry.context["attempt"] == 1
    assert retry.context["max_attempts"] == 6
    assert retry.context["reason"] == "429"
    assert retry.context["wait_s"] == pytest.approx(wait)
    assert retry.context["next_attempt_at"] == pytest.approx(clock())  # absolute: start + wait
    await _assert_row_kept(store, relogin=False)


async def test_429_exhausted_is_a_rate_limit_error(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("token", ["token_429:3"] * 6)
    with pytest.raises(RateLimitError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.attempts == 6
    assert caught.value.retry_after == 3
    assert clock.sleeps == [3.0, 3.0, 4.0, 8.0, 16.0]
    assert sandbox.post_count("token") == 6
    await _assert_row_kept(store, relogin=False)


async def test_429_past_the_deadline_fails_fast(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("token", ["token_429:500"])
    with pytest.raises(RateLimitError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.retry_after == 500
    assert clock.sleeps == []
    assert sandbox.post_count("token") == 1


async def test_loop_detection_is_throttling_not_relogin(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    sandbox.script("token", ["loop_detect:0", "ok"])
    assert await _refresh_expired(sandbox, store, auth, clock)
    assert [r.status for r in sandbox.requests("token")] == [400, 200]
    assert clock.sleeps == [1.0]
    await _assert_row_kept(store, relogin=False)


async def test_persistent_loop_detection_ends_as_rate_limit(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    sandbox.loop_detect(0)
    auth = auth_factory(max_retries=2)
    with pytest.raises(RateLimitError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.code == "invalid_grant"
    assert caught.value.error_codes == (50196,)
    assert sandbox.post_count("token") == 3
    await _assert_row_kept(store, relogin=False)


# -- transient ------------------------------------------------------------------------------------

TRANSIENT_FAULTS = [
    "token_5xx_json",
    "token_5xx_json:500",
    "token_5xx_json:502",
    "token_5xx_html",
    "token_5xx_html:502",
    "token_5xx_empty",
    "token_truncated",
    "token_reset",
    "reset_mid_body",
]


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
async def test_transient_faults_are_retried(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    clock: Clock,
    fault: str,
) -> None:
    sandbox.script("token", [fault, fault, "ok"])
    assert await _refresh_expired(sandbox, store, auth, clock)
    assert sandbox.post_count("token") == 3
    assert clock.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
async def test_transient_faults_exhausted(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    clock: Clock,
    fault: str,
) -> None:
    sandbox.script("token", [fault] * 3)
    auth = auth_factory(max_retries=2)
    with pytest.raises(TransientError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    error = caught.value
    assert type(error) is TransientError  # not throttling, not a timeout
    assert error.attempts == 3
    assert sandbox.post_count("token") == 3
    if fault == "token_reset":
        assert error.code == "connection"
    await _assert_row_kept(store, relogin=False)


async def test_504_exhausted_is_a_timeout(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    sandbox.script("token", ["token_5xx_json:504"] * 2)
    auth = auth_factory(max_retries=1)
    with pytest.raises(RequestTimeoutError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert caught.value.status == 504


async def test_slow_token_endpoint_past_the_client_timeout(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    sandbox.script("token", ["token_slow:0.6", "token_slow:0.6"])
    auth = auth_factory(max_retries=1, timeout=0.15)
    with pytest.raises(RequestTimeoutError) as caught:
        await _refresh_expired(sandbox, store, auth, clock)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.code == "timeout"
    assert caught.value.attempts == 2
    assert sandbox.post_count("token") == 2


async def test_slow_token_endpoint_then_success(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    sandbox.script("token", ["token_slow:1.0"])
    auth = auth_factory(timeout=0.4)
    assert await _refresh_expired(sandbox, store, auth, clock)
    assert sandbox.post_count("token") == 2


async def test_429_http_date_follows_the_sandbox_clock(
    fake_clock: Clock, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth
) -> None:
    """Regression: the HTTP date is written with the sandbox's clock, not the wall clock."""
    fake_clock.now = 1_700_000_000.0  # a sandbox and a client that agree on a time not "now"
    with Sandbox(token_lifetime=3600, clock=fake_clock) as sb:
        sb.script("token", ["token_429_date:5", "ok"])
        auth = auth_factory(sb)
        assert await _refresh_expired(sb, store, auth, fake_clock)
    (wait,) = fake_clock.sleeps
    assert wait >= 5.0, f"the server asked for 5 s but the HTTP date read as {wait} s"
