"""EntraIDAuthManager: cache, expiry, refresh flow, retries, classification, persistence, setup."""

from __future__ import annotations

import email.utils
import math
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from auth_helpers import (
    CLIENT_ID,
    CORRELATION_ID,
    TENANT,
    TOKEN_URL,
    TRACE_ID,
    Entra,
    FakeStore,
    Harness,
    PlainStore,
    assert_clean_chain,
    b64,
    html,
    make_jwt,
    oauth_error,
    secret,
    token_ok,
)

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.config import Settings
from saga_magic.core.entra import TokenGrant
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TokenPersistenceError,
    TokenStorageError,
    TransientError,
)
from saga_magic.core.events import Event
from saga_magic.core.protocols import RefreshCooldown
from saga_magic.core.refresh import (
    AUTH_COOLDOWN,
    PERSIST_COOLDOWN,
    TokenState,
    _cooldown_for,
    cooldown_error,
)

Make = Callable[..., Harness]
EXP_NAN = "a." + b64(b'{"exp": NaN}') + ".c"
NOT_UTF8 = f"a.{b64(bytes([0xFF, 0xFE]))}.c"


def names(events: list[Event]) -> list[str]:
    return [event.event for event in events]


# -- cache and expiry ---------------------------------------------------------------------------


async def test_valid_token_is_served_without_http_and_then_from_memory(
    h: Harness, events: list[Event]
) -> None:
    row = h.seed(expires_in=3600)
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    reads = h.store.reads
    for _ in range(5):
        assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 0
    assert h.store.reads == reads  # cache hits: no store read
    assert h.manager.cache_hits == 5
    assert events == []  # hits are counted, not logged


async def test_successful_refresh_flow(h: Harness, events: list[Event]) -> None:
    old = h.seed(expires_in=-10)
    new_at, new_rt = secret("at"), secret("rt")
    h.entra.reply(token_ok(new_at, new_rt, expires_in=4000))
    sent_at = h.clock()

    assert await h.manager.get_valid_token("alice") == new_at

    (request,) = h.entra.requests
    assert str(request.url) == TOKEN_URL
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["return-client-request-id"] == "true"
    uuid.UUID(request.headers["client-request-id"])
    assert h.entra.forms[0] == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "refresh_token": old["refresh_token"],
        "scope": "https://cognitiveservices.azure.com/.default offline_access",
    }
    saved = h.store.rows["alice"]
    assert saved["access_token"] == new_at
    assert saved["refresh_token"] == new_rt
    assert saved["expires_at"] == sent_at + 4000
    assert "expires_in" not in saved
    assert len(h.store.saves) == 1
    assert h.store.leases == {}  # released
    assert names(events) == ["token_refresh_start", "token_stored", "token_refresh_success"]
    assert len({event.op_id for event in events}) == 1
    assert {event.user_id for event in events} == {"alice"}
    assert events[0].context["reason"] == "expired"
    assert events[2].context["attempts"] == 1
    # The new token is cached: no further HTTP, no store read.
    reads = h.store.reads
    assert await h.manager.get_valid_token("alice") == new_at
    assert (h.entra.posts, h.store.reads, h.manager.cache_hits) == (1, reads, 1)


async def test_client_secret_is_sent_only_when_configured(make: Make) -> None:
    confidential = make(client_secret="s3cret-value-for-the-app-0001")
    confidential.seed(expires_in=-1)
    confidential.entra.reply(token_ok())
    await confidential.manager.get_valid_token("alice")
    assert confidential.entra.forms[0]["client_secret"] == "s3cret-value-for-the-app-0001"

    public = make(client_secret="")
    public.seed(expires_in=-1)
    public.entra.reply(token_ok())
    await public.manager.get_valid_token("alice")
    assert "client_secret" not in public.entra.forms[0]


async def test_scopes_string_and_authority_host_shape_the_request(make: Make) -> None:
    h = make(scopes="api://x/.default offline_access", authority_host="http://127.0.0.1:9/")
    h.seed(expires_in=-1)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert str(h.entra.requests[0].url) == f"http://127.0.0.1:9/{TENANT}/oauth2/v2.0/token"
    assert h.entra.forms[0]["scope"] == "api://x/.default offline_access"


async def test_jwt_exp_earlier_than_expires_at_wins(h: Harness) -> None:
    # expires_at says 1 h, the JWT says 100 s: inside the 300 s buffer -> refresh.
    h.seed(access_token=make_jwt(exp=h.clock() + 100), expires_in=3600)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_expires_at_earlier_than_jwt_exp_wins(h: Harness) -> None:
    h.seed(access_token=make_jwt(exp=h.clock() + 7200), expires_in=100)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_jwt_exp_alone_is_enough(h: Harness) -> None:
    token = make_jwt(exp=h.clock() + 3600)
    h.seed(access_token=token, expires_in=None)
    assert await h.manager.get_valid_token("alice") == token
    assert h.entra.posts == 0


async def test_opaque_token_with_expires_at_is_not_refreshed_every_call(h: Harness) -> None:
    row = h.seed(access_token="opaque-" + "x" * 40, expires_in=3600)
    for _ in range(3):
        assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 0


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("onlyonepart-abcdefghijklmnop", id="one-part"),
        pytest.param("eyJhbGciOiJub25lIn0.eyJleHAiOjF9", id="two-parts"),
        pytest.param("a.!!!not-base64!!!.c", id="bad-base64"),
        pytest.param(f"a.{b64(b'not json at all')}.c", id="non-json"),
        pytest.param(f"a.{b64(b'[1, 2]')}.c", id="json-not-object"),
        pytest.param(make_jwt(sub="x"), id="exp-missing"),
        pytest.param(make_jwt(exp="1700000000"), id="exp-string"),
        pytest.param(make_jwt(exp=True), id="exp-bool"),
        pytest.param(EXP_NAN, id="exp-nan"),
        pytest.param(NOT_UTF8, id="not-utf8"),
    ],
)
async def test_malformed_jwt_never_crashes(h: Harness, token: str) -> None:
    h.seed(access_token=token, expires_in=3600)
    assert await h.manager.get_valid_token("alice") == token  # expires_at alone decides
    assert h.entra.posts == 0
    # Without expires_at, a malformed JWT means expired: refresh.
    h.seed(access_token=token, expires_in=None)
    h.manager._cache.clear()
    h.entra.reply(token_ok())
    assert await h.manager.get_valid_token("alice") != token
    assert h.entra.posts == 1


@pytest.mark.parametrize("expires_at", [None, "soon", True, math.nan, math.inf])
async def test_unusable_stored_expiry_means_expired(h: Harness, expires_at: Any) -> None:
    h.seed(expires_in=None, expires_at=expires_at)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_refresh_in_is_honoured(h: Harness) -> None:
    h.seed(expires_in=-1)
    new_at = secret("at")
    start = h.clock()
    h.entra.reply(token_ok(new_at, expires_in=86400, refresh_in=600), token_ok())
    await h.manager.get_valid_token("alice")
    assert h.store.rows["alice"]["refresh_at"] == start + 600
    h.clock.advance(599)
    assert await h.manager.get_valid_token("alice") == new_at
    assert h.entra.posts == 1
    h.clock.advance(2)
    assert await h.manager.get_valid_token("alice") != new_at  # refreshed at refresh_in
    assert h.entra.posts == 2


async def test_missing_expires_in_assumes_an_hour(h: Harness) -> None:
    h.seed(expires_in=-1)
    start = h.clock()
    h.entra.reply(token_ok(expires_in=None))
    await h.manager.get_valid_token("alice")
    assert h.store.rows["alice"]["expires_at"] == start + 3600


async def test_buffer_seconds_decides_when_to_refresh(make: Make) -> None:
    h = make(buffer_seconds=60)
    row = h.seed(expires_in=100)
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    h.clock.advance(41)  # 59 s left: inside the buffer
    h.entra.reply(token_ok())
    assert await h.manager.get_valid_token("alice") != row["access_token"]


# -- retries ------------------------------------------------------------------------------------


async def test_rate_limit_backs_off_never_shorter_than_the_server_wait(
    h: Harness, events: list[Event]
) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(
        oauth_error(429, "temporarily_unavailable", headers={"Retry-After": "3"}),
        httpx.Response(429),
        token_ok(),
    )
    start = h.clock()
    await h.manager.get_valid_token("alice")
    assert h.clock.sleeps == [3.0, 2.0]  # max(1, 3), then the schedule's 2
    retries = [event for event in events if event.event == "token_refresh_retry"]
    assert [e.context["attempt"] for e in retries] == [1, 2]
    assert {e.context["max_attempts"] for e in retries} == {6}
    assert [e.context["wait_s"] for e in retries] == [3.0, 2.0]
    assert retries[0].context["next_attempt_at"] == start + 3.0
    assert retries[0].context["reason"] == "429"
    assert retries[0].context["retry_after"] == 3.0
    assert events[-1].context["attempts"] == 3


async def test_rate_limit_with_http_date_retry_after(h: Harness) -> None:
    h.seed(expires_in=-1)
    when = email.utils.formatdate(h.clock() + 10, usegmt=True)
    h.entra.reply(httpx.Response(429, headers={"Retry-After": when}), token_ok())
    await h.manager.get_valid_token("alice")
    assert h.clock.sleeps == [10.0]


async def test_rate_limit_exhausts_six_attempts(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(*[httpx.Response(429) for _ in range(6)])
    with pytest.raises(RateLimitError) as caught:
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 6
    assert h.clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert caught.value.attempts == 6
    assert caught.value.status == 429


async def test_server_wait_beyond_the_deadline_fails_fast(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(429, "temporarily_unavailable", headers={"Retry-After": "86400"}))
    with pytest.raises(RateLimitError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.retry_after == 86400
    assert "quota" in str(caught.value)
    assert (h.entra.posts, h.clock.sleeps) == (1, [])
    # The cool-down makes the next caller fail the same way, without a POST.
    with pytest.raises(RateLimitError) as again:
        await h.manager.get_valid_token("alice")
    assert again.value.code == "cooldown"
    assert again.value.retry_after == pytest.approx(86400)
    assert h.entra.posts == 1


async def test_backoff_base_scales_the_schedule(make: Make) -> None:
    h = make(backoff_base=0.5, max_retries=2)
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503), httpx.Response(503), httpx.Response(503))
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    assert h.clock.sleeps == [0.5, 1.0]
    assert caught.value.attempts == 3


async def test_loop_detection_50196_is_throttling_and_retried(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (50196,)), token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 2
    assert h.store.relogin["alice"] is False


async def test_500_is_retried_then_transient(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(*[oauth_error(500, "temporarily_unavailable", (50033,)) for _ in range(6)])
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    assert type(caught.value) is TransientError
    assert (caught.value.status, caught.value.code) == (500, "temporarily_unavailable")
    assert caught.value.attempts == 6
    assert h.entra.posts == 6


async def test_html_500_is_transient_and_retried(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(html(500), html(502, ""), token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 3


async def test_network_errors_are_retried(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed"),
        token_ok(),
    )
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 4


async def test_network_error_exhausts_to_transient(make: Make) -> None:
    h = make(max_retries=1)
    h.seed(expires_in=-1)
    h.entra.reply(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeoutError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.code == "timeout"
    assert caught.value.attempts == 2


async def test_no_httpx_error_reaches_the_caller_through_the_chain(make: Make) -> None:
    # /tmp/r2.py at the manager level: every error we raise, walked through
    # __cause__ / __context__, holds no httpx exception (request body: RT + client secret).
    client_secret = secret("cs")
    h = make(max_retries=2, client_secret=client_secret)
    row = h.seed(expires_in=-1)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def decoding(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("bad gzip", request=request)

    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    h.entra.reply(refused, decoding, read_timeout)
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    assert_clean_chain(caught.value, row["refresh_token"], client_secret)
    assert h.entra.posts == 3


def test_token_state_repr_hides_the_token() -> None:
    token = secret("at")
    state = TokenState(token, 1.0, 0.5)
    assert token not in repr(state)
    assert (state.access_token, state.expires_at, state.refresh_at) == (token, 1.0, 0.5)


def test_cooldown_errors_name_the_leaders_code() -> None:
    cooldown = RefreshCooldown(
        until=110.0, error_kind="permission", message="denied", status=403, code="access_denied"
    )
    error = cooldown_error(cooldown, 100.0)
    assert type(error) is PermissionDeniedError
    assert (error.code, error.status) == ("cooldown", 403)
    assert "access_denied: denied" in error.message
    same = RefreshCooldown(until=110.0, error_kind="transient", message="HTTP 503 x", code="x")
    assert cooldown_error(same, 100.0).message == "a recent token refresh failed: HTTP 503 x"


def test_cooldown_kinds_keep_the_error_class() -> None:
    permission = _cooldown_for(PermissionDeniedError("no", status=403), 0.0)
    assert (permission.error_kind, permission.status, permission.until) == (
        "permission",
        403,
        AUTH_COOLDOWN,
    )
    timeout = _cooldown_for(RequestTimeoutError("slow", code="timeout", retry_after=9.0), 0.0)
    assert (timeout.error_kind, timeout.code, timeout.retry_after) == ("timeout", "timeout", 9.0)
    assert timeout.until == 9.0


async def test_refresh_token_is_reread_before_every_attempt(h: Harness) -> None:
    h.seed(expires_in=-1)
    rotated = secret("rt")

    def rotate_then_fail(request: httpx.Request) -> httpx.Response:
        h.store.rows["alice"]["refresh_token"] = rotated  # another process rotated it
        return httpx.Response(503)

    h.entra.reply(rotate_then_fail, token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.forms[1]["refresh_token"] == rotated


async def test_missing_new_refresh_token_keeps_the_old_one(h: Harness) -> None:
    old = h.seed(expires_in=-1)
    h.entra.reply(token_ok(omit_refresh=True))
    await h.manager.get_valid_token("alice")
    assert h.store.rows["alice"]["refresh_token"] == old["refresh_token"]


async def test_lease_is_renewed_across_backoff_waits(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503), token_ok())
    await h.manager.get_valid_token("alice")
    acquires = [entry for entry in h.store.lease_log if entry[0] == "acquire"]
    assert len({owner for _, owner, _ in acquires}) == 1
    assert acquires[1][2] == pytest.approx(1.0 + acquires[0][2])  # wait + hold


# -- permanent failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        (700082, {}),
        (50173, {}),
        (50076, {"suberror": "basic_action", "claims": '{"access_token":{"capolids":{}}}'}),
    ],
)
async def test_invalid_grant_needs_relogin_without_retry(
    h: Harness, events: list[Event], code: int, extra: dict[str, Any]
) -> None:
    row = h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (code,), text="Token revoked.", **extra))
    with pytest.raises(AuthenticationError) as caught:
        await h.manager.get_valid_token("alice")
    error = caught.value
    assert (error.status, error.code, error.error_codes) == (400, "invalid_grant", (code,))
    assert error.request_id == TRACE_ID
    assert error.correlation_id == CORRELATION_ID
    assert error.attempts == 1
    assert "login" in (error.hint or "")
    assert f"AADSTS{code}" in str(error)
    if "suberror" in extra:
        assert "basic_action" in str(error)
    assert (h.entra.posts, h.clock.sleeps) == (1, [])
    assert h.store.rows["alice"]["refresh_token"] == row["refresh_token"]  # never deleted
    assert h.store.relogin["alice"] is True
    assert h.store.cooldowns["alice"].error_kind == "authentication"
    failed = [e for e in events if e.event == "token_refresh_failed_auth"]
    assert failed
    assert failed[0].level == "ERROR"
    assert failed[0].context["relogin_required"] is True
    # Every later call fails the same way without a POST, until a save clears the cool-down.
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


@pytest.mark.parametrize("error", ["interaction_required", "consent_required"])
async def test_interaction_errors_need_relogin(h: Harness, error: str) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, error, (65001,)))
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")


@pytest.mark.parametrize(
    ("status", "error", "code", "hint"),
    [
        (401, "invalid_client", 7000222, "AZURE_CLIENT_SECRET"),
        (401, "invalid_client", 700025, "public client"),
        (400, "unauthorized_client", 700016, "AZURE_CLIENT_ID"),
        (400, "invalid_scope", 70011, "ARC_SAGA_SCOPES"),
        (400, "invalid_request", 900144, "app registration"),
        (400, "unsupported_grant_type", 70003, "app registration"),
        (400, "something_new", 99999, "app registration"),
    ],
)
async def test_configuration_errors_are_not_retried(
    h: Harness, events: list[Event], status: int, error: str, code: int, hint: str
) -> None:
    row = h.seed(expires_in=-1)
    h.entra.reply(oauth_error(status, error, (code,)))
    with pytest.raises(ConfigurationError) as caught:
        await h.manager.get_valid_token("alice")
    assert (caught.value.status, caught.value.code) == (status, error)
    assert hint in (caught.value.hint or "")
    assert h.entra.posts == 1
    assert h.store.relogin["alice"] is False
    assert h.store.rows["alice"] == row
    assert h.store.cooldowns["alice"].error_kind == "configuration"
    assert "token_refresh_failed" in names(events)


async def test_no_stored_token_needs_login(h: Harness, events: list[Event]) -> None:
    with pytest.raises(AuthenticationError, match="no token is stored") as caught:
        await h.manager.get_valid_token("nobody")
    assert "login" in (caught.value.hint or "")
    assert h.entra.posts == 0
    assert names(events) == ["token_refresh_failed_auth"]


async def test_stored_token_without_refresh_token_needs_login(h: Harness) -> None:
    h.store.put("alice", access_token=secret("at"), expires_at=h.clock() - 1)
    with pytest.raises(AuthenticationError, match="no refresh token"):
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 0
    assert h.store.relogin.get("alice") is False  # not Entra's verdict: no flag


async def test_stored_refresh_token_without_access_token_is_refreshed(
    h: Harness, events: list[Event]
) -> None:
    h.store.put("alice", refresh_token=secret("rt"))
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert events[0].context["reason"] == "missing"


# -- storage ------------------------------------------------------------------------------------


async def test_storage_error_on_read(h: Harness) -> None:
    h.store.fail_get = TokenStorageError("wrong key")
    with pytest.raises(TokenStorageError, match="wrong key"):
        await h.manager.get_valid_token("alice")
    h.store.fail_get = OSError("disk on fire")
    with pytest.raises(TokenStorageError, match="could not read") as caught:
        await h.manager.get_valid_token("alice")
    assert isinstance(caught.value.__cause__, OSError)
    assert h.entra.posts == 0


async def test_persistence_failure_fails_closed(h: Harness, events: list[Event]) -> None:
    old = h.seed(expires_in=-1)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    h.store.fail_save = OSError("disk full")
    with pytest.raises(TokenPersistenceError) as caught:
        await h.manager.get_valid_token("alice")
    error = caught.value
    assert isinstance(error, AuthenticationError)
    assert isinstance(error, TokenStorageError)
    assert isinstance(error.__cause__, OSError)
    assert new_at not in str(error)
    assert h.store.rows["alice"] == old  # the old row is intact
    assert "alice" not in h.manager._cache  # nothing unsaved survives in memory
    assert "token_persistence_failed" in names(events)
    assert "token_stored" not in names(events)
    assert h.store.cooldowns == {}  # not Entra's fault: no store cool-down
    # For a few seconds callers fail fast: no new token is minted only to be discarded.
    with pytest.raises(TokenPersistenceError) as fast:
        await h.manager.get_valid_token("alice")
    assert fast.value.code == "cooldown"
    assert h.entra.posts == 1
    # Then the next call refreshes again (the old refresh token still works on Entra).
    h.clock.advance(PERSIST_COOLDOWN)
    h.store.fail_save = None
    h.entra.reply(token_ok(new_at))
    assert await h.manager.get_valid_token("alice") == new_at


async def test_persistence_failures_do_not_mint_a_token_per_call(make: Make) -> None:
    # /tmp/r5.py: five calls against a store that cannot save made five POSTs.
    h = make(PlainStore())
    h.seed(expires_in=-1)
    h.entra.reply(token_ok())
    h.store.fail_save = TokenStorageError("disk full")
    for _ in range(5):
        with pytest.raises(TokenPersistenceError):
            await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1
    h.clock.advance(PERSIST_COOLDOWN - 0.001)
    with pytest.raises(TokenPersistenceError, match="moments ago"):
        await h.manager.force_refresh("alice")
    assert h.entra.posts == 1


async def test_a_successful_save_ends_the_persistence_cooldown(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(token_ok())
    h.store.fail_save = OSError("disk full")
    with pytest.raises(TokenPersistenceError):
        await h.manager.get_valid_token("alice")
    h.store.fail_save = None
    # A save through the same path (a device login's) succeeds: refreshes are allowed at once.
    login = TokenGrant(
        access_token=secret("at"),
        refresh_token=secret("rt"),
        expires_at=h.clock() - 1,
        refresh_at=None,
        scope="s",
        token_type="Bearer",
    )
    await h.manager._refresher.persist("alice", "op", login)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    assert await h.manager.get_valid_token("alice") == new_at


async def test_plain_store_gets_an_in_process_cooldown(make: Make) -> None:
    h = make(PlainStore())
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (70000,)))
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")
    with pytest.raises(AuthenticationError, match="recent token refresh failed"):
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_transient_cooldown_expires(make: Make) -> None:
    h = make(PlainStore(), max_retries=0)
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503, headers={"Retry-After": "7"}), token_ok())
    with pytest.raises(TransientError):
        await h.manager.get_valid_token("alice")
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.code == "cooldown"
    assert caught.value.retry_after == 7.0
    assert not isinstance(caught.value, RateLimitError)
    h.clock.advance(7)
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 2


async def test_coordination_failures_never_mask_the_refresh_error(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (70000,)))

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("store gone")

    h.store.set_relogin_required = broken  # type: ignore[method-assign]
    h.store.release_lease = broken  # type: ignore[method-assign]
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")


async def test_lease_renewal_failure_is_ignored(h: Harness) -> None:
    h.seed(expires_in=-1)
    calls = 0
    real = h.store.try_acquire_lease

    async def flaky(user_id: str, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:  # the renewal during the backoff wait
            raise OSError("busy")
        return await real(user_id, **kwargs)

    h.store.try_acquire_lease = flaky  # type: ignore[method-assign]
    h.entra.reply(httpx.Response(503), token_ok())
    await h.manager.get_valid_token("alice")
    assert calls == 2


# -- logout, listing, close ---------------------------------------------------------------------


async def test_logout_deletes_and_forgets(h: Harness, events: list[Event]) -> None:
    h.seed()
    await h.manager.get_valid_token("alice")
    assert await h.manager.logout("alice") is True
    assert "alice" not in h.store.rows
    assert "alice" not in h.manager._cache
    assert names(events) == ["logout"]
    assert events[0].context == {"deleted": True}
    assert await h.manager.logout("alice") is False
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")


async def test_logout_on_plain_store_and_failing_store(make: Make) -> None:
    plain = make(PlainStore())
    with pytest.raises(TokenStorageError, match="cannot delete"):
        await plain.manager.logout("alice")
    h = make()

    async def broken(user_id: str) -> bool:
        raise OSError("read-only file system")

    h.store.delete_token = broken
    with pytest.raises(TokenStorageError, match="could not delete"):
        await h.manager.logout("alice")


async def test_logout_clears_the_local_cooldown(make: Make) -> None:
    h = make(PlainStore())
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (70000,)))
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")

    async def delete_token(user_id: str) -> bool:
        return h.store.rows.pop(user_id, None) is not None

    h.store.delete_token = delete_token
    assert await h.manager.logout("alice") is True
    h.seed(expires_in=-1)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")  # no cool-down left over


async def test_token_infos(make: Make) -> None:
    h = make()
    h.seed("alice")
    h.seed("bob")
    infos = await h.manager.token_infos()
    assert [info.user_id for info in infos] == ["alice", "bob"]
    assert await make(PlainStore()).manager.token_infos() == []


async def test_close_leaves_a_passed_in_client_open(h: Harness) -> None:
    await h.manager.close()
    assert not h.client.is_closed
    await h.manager.close()  # idempotent


async def test_close_closes_the_client_it_created(fake_clock: Any) -> None:
    store = FakeStore()
    manager = EntraIDAuthManager(
        store, tenant_id=TENANT, client_id=CLIENT_ID, clock=fake_clock, sleep=fake_clock.sleep
    )
    store.put("alice", refresh_token=secret("rt"))
    with respx.mock(assert_all_called=True) as router:
        router.post(TOKEN_URL).mock(return_value=token_ok())
        await manager.get_valid_token("alice")
    client = manager._entra._http
    assert client is not None
    assert not client.is_closed
    await manager.close()
    assert client.is_closed


# -- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"tenant_id": ""}, ConfigurationError),
        ({"tenant_id": "contoso/../evil"}, ConfigurationError),
        ({"tenant_id": "a b"}, ConfigurationError),
        ({"client_id": ""}, ConfigurationError),
        ({"client_id": "   "}, ConfigurationError),
        ({"authority_host": "http://login.example.com"}, ConfigurationError),
        ({"authority_host": "ftp://login.example.com"}, ConfigurationError),
        ({"scopes": ""}, ConfigurationError),
        ({"scopes": []}, ConfigurationError),
        ({"max_retries": -1}, ValueError),
        ({"max_retries": 1.5}, ValueError),
        ({"max_retries": True}, ValueError),
        ({"backoff_base": -1.0}, ValueError),
        ({"backoff_base": math.nan}, ValueError),
        ({"buffer_seconds": -1}, ValueError),
        ({"refresh_deadline": 0}, ValueError),
        ({"refresh_deadline": math.inf}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"lease_ttl": 0}, ValueError),
        ({"lease_poll_interval": -0.1}, ValueError),
    ],
)
def test_constructor_validation(options: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {"tenant_id": TENANT, "client_id": CLIENT_ID, **options}
    with pytest.raises(error):
        EntraIDAuthManager(PlainStore(), **arguments)


def test_constructor_accepts_edge_values() -> None:
    manager = EntraIDAuthManager(
        PlainStore(),
        tenant_id="common",
        client_id=CLIENT_ID,
        max_retries=0,
        backoff_base=0,
        buffer_seconds=0,
        timeout=httpx.Timeout(5.0, read=None),
        authority_host="http://localhost:8080",
        scopes=("a", "b"),
    )
    assert manager.cache_hits == 0


def test_from_settings_requires_tenant_and_client() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_TENANT_ID"):
        EntraIDAuthManager.from_settings(Settings.from_env({}), store=PlainStore())


async def test_from_settings_with_a_store(fake_clock: Any) -> None:
    settings = Settings.from_env(
        {
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_CLIENT_SECRET": "settings-secret-0123456789",
            "AZURE_AUTHORITY_HOST": "http://127.0.0.1:5555",
            "ARC_SAGA_SCOPES": "scope-a scope-b",
        }
    )
    entra = Entra().reply(token_ok())
    client = entra.client()
    store = FakeStore()
    store.put("alice", refresh_token=secret("rt"))
    manager = EntraIDAuthManager.from_settings(settings, store=store, http_client=client)
    await manager.get_valid_token("alice")
    assert str(entra.requests[0].url).startswith("http://127.0.0.1:5555/")
    assert entra.forms[0]["scope"] == "scope-a scope-b"
    assert entra.forms[0]["client_secret"] == "settings-secret-0123456789"
    await manager.close()
    await client.aclose()


async def test_from_settings_builds_and_closes_the_default_store(
    isolated_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    manager = EntraIDAuthManager.from_settings()
    store = manager._refresher.store
    assert type(store).__name__ == "SQLiteEncryptedTokenStore"
    assert await manager.token_infos() == []
    await manager.close()
    assert store._closed  # type: ignore[attr-defined]
    await manager.close()  # idempotent


def test_from_settings_closes_its_store_when_construction_fails(
    isolated_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []
    from saga_magic.core import store as store_module

    real = store_module.SQLiteEncryptedTokenStore

    class Spy(real):  # type: ignore[misc, valid-type]
        def close(self) -> None:
            closed.append(True)
            super().close()

    monkeypatch.setattr(store_module, "SQLiteEncryptedTokenStore", Spy)
    settings = Settings.from_env(
        {
            "ARC_SAGA_HOME": str(isolated_env),
            "AZURE_TENANT_ID": "bad/tenant",
            "AZURE_CLIENT_ID": CLIENT_ID,
        }
    )
    with pytest.raises(ConfigurationError):
        EntraIDAuthManager.from_settings(settings)
    assert closed == [True]
    with pytest.raises(ConfigurationError):
        EntraIDAuthManager.from_settings(settings, store=PlainStore())  # not ours: not closed
    assert closed == [True]


async def test_close_closes_its_store_without_blocking_the_loop(
    isolated_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    from saga_magic.core import store as store_module

    real = store_module.SQLiteEncryptedTokenStore

    class Spy(real):  # type: ignore[misc, valid-type]
        async def aclose(self) -> None:
            calls.append("aclose")
            await super().aclose()

    monkeypatch.setattr(store_module, "SQLiteEncryptedTokenStore", Spy)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    manager = EntraIDAuthManager.from_settings()
    await manager.close()
    await manager.close()  # idempotent
    assert calls == ["aclose"]


async def test_calls_after_close_raise_instead_of_opening_a_new_client(fake_clock: Any) -> None:
    store = FakeStore()
    store.put("alice", refresh_token=secret("rt"))
    manager = EntraIDAuthManager(
        store, tenant_id=TENANT, client_id=CLIENT_ID, clock=fake_clock, sleep=fake_clock.sleep
    )
    await manager.close()
    with pytest.raises(ArcSagaException) as caught:
        await manager.get_valid_token("alice")
    assert caught.value.code == "closed"
    assert manager._entra._http is None  # no client was created behind our back
    with pytest.raises(ArcSagaException, match="closed"):
        await manager.start_device_login("alice")
