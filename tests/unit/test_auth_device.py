"""Device-code login: start, poll (pending, slow_down, throttling, errors), expiry, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from auth_helpers import (
    CLIENT_ID,
    DEVICE_URL,
    TOKEN_URL,
    FakeStore,
    Harness,
    PlainStore,
    device_ok,
    oauth_error,
    secret,
    token_ok,
)

from saga_magic.core.auth import DeviceCodeLogin, DevicePoll
from saga_magic.core.device import SLOW_DOWN_STEP
from saga_magic.core.entra import DEVICE_CODE_GRANT
from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    TokenPersistenceError,
    TokenStorageError,
    TransientError,
)
from saga_magic.core.events import Event
from saga_magic.core.types import TokenInfo

Make = Callable[..., Harness]
PENDING = (400, "authorization_pending", (70016,))


def pending() -> httpx.Response:
    return oauth_error(*PENDING, text="Authorization pending.")


async def start(h: Harness, **extra: Any) -> tuple[DeviceCodeLogin, str]:
    device_code = secret("dc")
    h.entra.reply(device_ok(device_code, **extra))
    return await h.manager.start_device_login("alice"), device_code


# -- start ----------------------------------------------------------------------------------------


async def test_start_device_login(h: Harness, events: list[Event]) -> None:
    now = h.clock()
    login, device_code = await start(h)
    assert str(h.entra.requests[0].url) == DEVICE_URL
    assert h.entra.forms[0] == {
        "client_id": CLIENT_ID,
        "scope": "https://cognitiveservices.azure.com/.default offline_access",
    }
    assert login.user_id == "alice"
    assert login.user_code == "ABCD-EFGH"
    assert login.verification_uri == "https://microsoft.com/devicelogin"
    assert "ABCD-EFGH" in login.message
    assert login.expires_at == now + 900
    assert login.interval == 5
    assert device_code not in repr(login)
    assert login.op_id
    (issued,) = events
    assert issued.event == "device_code_issued"
    assert issued.op_id == login.op_id
    assert issued.context["user_code"] == "ABCD-EFGH"
    assert device_code not in issued.to_json()


async def test_start_defaults(h: Harness) -> None:
    now = h.clock()
    login, _ = await start(
        h,
        expires_in=None,
        interval=None,
        message=None,
        verification_uri=None,
        verification_url="https://microsoft.com/link",
    )
    assert login.expires_at == now + 900  # Entra's documented default
    assert login.interval == 5
    assert login.verification_uri == "https://microsoft.com/link"
    assert "https://microsoft.com/link" in login.message


async def test_start_configuration_error(h: Harness, events: list[Event]) -> None:
    h.entra.reply(oauth_error(400, "unauthorized_client", (700016,)))
    with pytest.raises(ConfigurationError):
        await h.manager.start_device_login("alice")
    assert [e.event for e in events] == ["login_failed"]
    assert h.entra.posts == 1


async def test_start_retries_transient_failures(make: Make, events: list[Event]) -> None:
    h = make(max_retries=1)
    h.entra.reply(httpx.Response(200, json={"user_code": "X"}), httpx.Response(503))
    with pytest.raises(TransientError):
        await h.manager.start_device_login("alice")
    assert h.entra.posts == 2
    assert h.clock.sleeps == [1.0]
    retry, failed = events
    assert (retry.event, retry.level, failed.event) == (
        "device_code_retry",
        "WARNING",
        "login_failed",
    )
    assert retry.op_id == failed.op_id
    assert retry.context["attempt"] == 1
    assert retry.context["max_attempts"] == 2
    assert retry.context["wait_s"] == 1.0
    assert retry.context["next_attempt_at"] == h.clock() - 1.0 + 1.0
    assert retry.context["reason"] == "200"  # a 200 answer without the codes
    assert retry.context["error"] == "TransientError"


# -- complete -------------------------------------------------------------------------------------


async def test_pending_twice_then_success(h: Harness, events: list[Event]) -> None:
    login, device_code = await start(h)
    new_at, new_rt = secret("at"), secret("rt")
    h.entra.reply(pending(), pending(), token_ok(new_at, new_rt, expires_in=4000))
    h.store.relogin["alice"] = True
    polls: list[DevicePoll] = []

    info = await h.manager.complete_device_login(login, on_poll=polls.append)

    assert h.clock.sleeps == [5, 5, 5]
    poll_forms = h.entra.forms[1:]
    assert all(str(r.url) == TOKEN_URL for r in h.entra.requests[1:])
    assert poll_forms[0] == {
        "grant_type": DEVICE_CODE_GRANT,
        "client_id": CLIENT_ID,
        "device_code": device_code,
    }
    assert [p.status for p in polls] == ["authorization_pending"] * 2
    assert [p.attempt for p in polls] == [1, 2]
    assert polls[0].next_poll_at == polls[0].expires_at - 900 + 10
    assert h.store.rows["alice"]["access_token"] == new_at
    assert h.store.rows["alice"]["refresh_token"] == new_rt
    assert h.store.relogin["alice"] is False  # the save cleared it
    assert info.user_id == "alice"
    assert info.expires_at == h.clock() + 4000
    assert info.scopes == ("https://cognitiveservices.azure.com/.default",)
    assert not info.relogin_required
    assert [e.event for e in events] == [
        "device_code_issued",
        "device_code_poll",
        "device_code_poll",
        "token_stored",
        "login_complete",
    ]
    assert {e.op_id for e in events} == {login.op_id}
    assert events[1].level == "DEBUG"
    # The memory cache is primed: no HTTP, no store read.
    reads = h.store.reads
    assert await h.manager.get_valid_token("alice") == new_at
    assert h.store.reads == reads


async def test_client_secret_goes_with_the_polls(make: Make) -> None:
    h = make(client_secret="confidential-secret-000111")
    login, _ = await start(h)
    h.entra.reply(token_ok())
    await h.manager.complete_device_login(login)
    assert h.entra.forms[1]["client_secret"] == "confidential-secret-000111"
    assert "client_secret" not in h.entra.forms[0]  # devicecode: client_id and scope only


async def test_slow_down_increases_the_interval(h: Harness) -> None:
    login, _ = await start(h)
    h.entra.reply(
        pending(),
        oauth_error(400, "slow_down"),
        pending(),
        oauth_error(400, "slow_down"),
        token_ok(),
    )
    polls: list[DevicePoll] = []
    await h.manager.complete_device_login(login, on_poll=polls.append)
    assert h.clock.sleeps == [5, 5, 10, 10, 15]
    assert [p.interval for p in polls] == [5, 10, 10, 15]
    assert SLOW_DOWN_STEP == 5


async def test_throttling_backs_off(h: Harness) -> None:
    login, _ = await start(h)
    h.entra.reply(
        oauth_error(400, "invalid_grant", (50196,)),
        httpx.Response(429, headers={"Retry-After": "30"}),
        token_ok(),
    )
    polls: list[DevicePoll] = []
    await h.manager.complete_device_login(login, on_poll=polls.append)
    assert h.clock.sleeps == [5, 10, 30]
    assert [p.status for p in polls] == ["throttled", "throttled"]


async def test_server_errors_keep_polling(h: Harness) -> None:
    login, _ = await start(h)
    h.entra.reply(
        httpx.Response(500, text="<html>oops</html>"),
        httpx.ConnectError("reset"),
        httpx.Response(503, headers={"Retry-After": "12"}),
        token_ok(),
    )
    polls: list[DevicePoll] = []
    await h.manager.complete_device_login(login, on_poll=polls.append)
    assert h.clock.sleeps == [5, 5, 5, 12]
    assert {p.status for p in polls} == {"transient"}


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ("authorization_declined", None, "declined"),
        ("access_denied", None, "declined"),
        ("expired_token", 70019, "expired"),
        ("bad_verification_code", 70018, "expired"),
    ],
)
async def test_terminal_poll_errors(
    h: Harness, events: list[Event], error: str, code: int | None, message: str
) -> None:
    login, _ = await start(h)
    h.entra.reply(pending(), oauth_error(400, error, (code,) if code else ()))
    with pytest.raises(AuthenticationError, match=message) as caught:
        await h.manager.complete_device_login(login)
    assert caught.value.code == error
    assert caught.value.status == 400
    assert caught.value.attempts == 2
    assert "login" in (caught.value.hint or "")
    assert "alice" not in h.store.rows
    assert events[-1].event == "login_failed"
    assert events[-1].context["code"] == error


async def test_configuration_error_while_polling(h: Harness) -> None:
    login, _ = await start(h)
    h.entra.reply(pending(), oauth_error(401, "invalid_client", (7000215,)))
    with pytest.raises(ConfigurationError) as caught:
        await h.manager.complete_device_login(login)
    assert caught.value.attempts == 2


async def test_local_expiry_while_pending(h: Harness, events: list[Event]) -> None:
    login, _ = await start(h, expires_in=12)
    h.entra.reply(pending(), pending())
    with pytest.raises(AuthenticationError, match="expired") as caught:
        await h.manager.complete_device_login(login)
    assert caught.value.code == "expired_token"
    assert h.clock.sleeps == [5, 5, 2]  # the last wait stops at the expiry
    assert h.entra.posts == 3  # devicecode + 2 polls; none after the expiry
    assert events[-1].event == "login_failed"


async def test_already_expired_login(h: Harness) -> None:
    login, _ = await start(h)
    h.clock.advance(901)
    with pytest.raises(AuthenticationError, match="expired"):
        await h.manager.complete_device_login(login)
    assert h.entra.posts == 1


async def test_cancellation_saves_nothing(h: Harness, events: list[Event]) -> None:
    login, _ = await start(h)
    h.entra.reply(pending(), token_ok())
    polling = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        polling.set()
        await asyncio.Event().wait()

    h.manager._sleep = blocking_sleep
    task = asyncio.ensure_future(h.manager.complete_device_login(login))
    await polling.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.store.saves == []
    assert events[-1].event == "login_failed"
    assert events[-1].context == {"code": "cancelled"}


async def test_persistence_failure(h: Harness, events: list[Event]) -> None:
    login, _ = await start(h)
    h.entra.reply(token_ok())
    h.store.fail_save = OSError("disk full")
    with pytest.raises(TokenPersistenceError):
        await h.manager.complete_device_login(login)
    assert [e.event for e in events][-2:] == ["token_persistence_failed", "login_failed"]
    assert "alice" not in h.manager._cache


async def test_login_clears_the_in_process_cooldown(make: Make) -> None:
    h = make(PlainStore())
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (70000,)))
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")
    login, _ = await start(h)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    await h.manager.complete_device_login(login)
    h.manager._cache.clear()
    assert await h.manager.get_valid_token("alice") == new_at  # no cool-down left


async def test_no_error_memoization_between_logins(h: Harness) -> None:
    first, _ = await start(h)
    h.entra.reply(oauth_error(400, "expired_token", (70019,)))
    with pytest.raises(AuthenticationError):
        await h.manager.complete_device_login(first)
    second, _ = await start(h)
    h.entra.reply(token_ok())
    await h.manager.complete_device_login(second)
    assert "alice" in h.store.rows


async def test_an_on_poll_error_ends_the_login_with_login_failed(
    h: Harness, events: list[Event]
) -> None:
    login, _ = await start(h)
    h.entra.reply(pending())

    def broken(poll: DevicePoll) -> None:
        raise RuntimeError("the display went away")

    with pytest.raises(RuntimeError):
        await h.manager.complete_device_login(login, on_poll=broken)
    assert events[-1].event == "login_failed"
    assert events[-1].context == {"error": "RuntimeError"}
    assert h.store.saves == []


async def test_login_reports_the_stored_created_at(make: Make) -> None:
    class DatedStore(FakeStore):
        async def list_tokens(self) -> list[TokenInfo]:
            return [
                TokenInfo(user_id="bob", expires_at=None, created_at=1.0, updated_at=2.0),
                TokenInfo(user_id="alice", expires_at=None, created_at=1000.0, updated_at=2000.0),
            ]

    h = make(DatedStore())
    login, _ = await start(h)
    h.entra.reply(token_ok())
    info = await h.manager.complete_device_login(login)
    assert (info.created_at, info.updated_at) == (1000.0, 2000.0)  # an existing user's row


async def test_login_created_at_falls_back_to_now(make: Make) -> None:
    class BrokenListing(FakeStore):
        async def list_tokens(self) -> list[TokenInfo]:
            raise TokenStorageError("cannot list")

    for store in (PlainStore(), BrokenListing()):
        h = make(store)
        login, _ = await start(h)
        h.entra.reply(token_ok())
        info = await h.manager.complete_device_login(login)
        assert info.created_at == info.updated_at == h.clock()


async def test_login_without_the_user_in_the_listing_falls_back_to_now(make: Make) -> None:
    class EmptyListing(FakeStore):
        async def list_tokens(self) -> list[TokenInfo]:
            return []

    h = make(EmptyListing())
    login, _ = await start(h)
    h.entra.reply(token_ok())
    info = await h.manager.complete_device_login(login)
    assert info.created_at == h.clock()
