"""Single flight in the process, leases across processes, opportunistic refresh, force_refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from auth_helpers import (
    CLIENT_ID,
    TENANT,
    FakeStore,
    Harness,
    PlainStore,
    oauth_error,
    secret,
    token_ok,
)

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.events import Event
from saga_magic.core.protocols import RefreshCooldown
from saga_magic.core.refresh import OPPORTUNISTIC_QUIET, LocalCoordinator

Make = Callable[..., Harness]


# -- single flight in the process ---------------------------------------------------------------


async def test_hundred_callers_one_post(h: Harness) -> None:
    h.seed(expires_in=-1)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    tokens = await asyncio.gather(*(h.manager.get_valid_token("alice") for _ in range(100)))
    assert set(tokens) == {new_at}
    assert h.entra.posts == 1
    assert len(h.store.saves) == 1
    assert h.manager._refresher._flights == {}


async def test_hundred_callers_share_the_failure(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(oauth_error(400, "invalid_grant", (700082,)))
    results = await asyncio.gather(
        *(h.manager.get_valid_token("alice") for _ in range(100)), return_exceptions=True
    )
    assert {type(result) for result in results} == {AuthenticationError}
    assert h.entra.posts == 1


async def test_hundred_callers_share_a_retried_transient_failure(make: Make) -> None:
    h = make(max_retries=2)
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503), httpx.Response(503), httpx.Response(503))
    results = await asyncio.gather(
        *(h.manager.get_valid_token("alice") for _ in range(100)), return_exceptions=True
    )
    assert {type(result) for result in results} == {TransientError}
    assert h.entra.posts == 3


async def test_users_refresh_independently(h: Harness) -> None:
    h.seed("alice", expires_in=-1)
    h.seed("bob", expires_in=-1)
    h.entra.reply(token_ok(), token_ok())
    a, b = await asyncio.gather(
        h.manager.get_valid_token("alice"), h.manager.get_valid_token("bob")
    )
    assert a != b
    assert h.entra.posts == 2


async def test_a_cancelled_caller_does_not_cancel_the_others(h: Harness) -> None:
    h.seed(expires_in=-1)
    gate = asyncio.Event()
    new_at = secret("at")

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()

    h.manager._refresher._sleep = slow_sleep
    h.entra.reply(httpx.Response(503), token_ok(new_at))
    first = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    second = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    for _ in range(20):
        await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == new_at
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_the_refresh_stops_when_every_caller_left(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503), token_ok())
    gate = asyncio.Event()

    async def blocked(seconds: float) -> None:
        await gate.wait()

    h.manager._refresher._sleep = blocked
    caller = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    for _ in range(20):
        await asyncio.sleep(0)
    flight = h.manager._refresher._flights["alice"]
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with pytest.raises(asyncio.CancelledError):
        await flight.task
    assert h.entra.posts == 1
    assert h.store.leases == {}  # released on the way out
    # A caller arriving before the done callback ran starts a new refresh, not a cancelled one.
    h.manager._refresher._sleep = h.clock.sleep
    assert await h.manager.get_valid_token("alice")
    assert h.entra.posts == 2
    assert h.manager._refresher._flights == {}


async def test_close_cancels_refreshes_in_flight(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(httpx.Response(503))

    async def forever(seconds: float) -> None:
        await asyncio.Event().wait()

    h.manager._refresher._sleep = forever
    caller = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    for _ in range(20):
        await asyncio.sleep(0)
    await h.manager.close()
    with pytest.raises(asyncio.CancelledError):
        await caller


# -- across processes: the lease ----------------------------------------------------------------


async def test_another_process_saves_while_we_wait(h: Harness, events: list[Event]) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=60)
    fresh = secret("at")
    polls = 0
    real_sleep = h.clock.sleep

    async def other_process_finishes(seconds: float) -> None:
        nonlocal polls
        polls += 1
        await real_sleep(seconds)
        if polls == 3:
            h.store.put("alice", access_token=fresh, refresh_token=secret("rt"),
                        expires_at=h.clock() + 3600)  # fmt: skip

    h.manager._refresher._sleep = other_process_finishes
    assert await h.manager.get_valid_token("alice") == fresh
    assert h.entra.posts == 0
    assert polls == 3
    assert h.clock.sleeps == [0.05, 0.05, 0.05]
    assert events == []  # nothing refreshed here


async def test_another_process_fails_and_we_raise_the_same_kind(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=60)

    async def other_process_fails(seconds: float) -> None:
        await h.clock.sleep(seconds)
        h.store.cooldowns["alice"] = RefreshCooldown(
            until=h.clock() + 30, error_kind="rate_limit", message="throttled", retry_after=30
        )

    h.manager._refresher._sleep = other_process_fails
    with pytest.raises(RateLimitError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.retry_after == pytest.approx(30)
    assert "throttled" in str(caught.value)
    assert h.entra.posts == 0


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("authentication", AuthenticationError),
        ("permission", PermissionDeniedError),
        ("configuration", ConfigurationError),
        ("transient", TransientError),
        ("rate_limit", RateLimitError),
        ("timeout", RequestTimeoutError),
    ],
)
async def test_cooldown_kinds_map_to_error_classes(
    h: Harness, kind: Any, error: type[Exception]
) -> None:
    h.seed(expires_in=-1)
    h.store.cooldowns["alice"] = RefreshCooldown(until=h.clock() + 10, error_kind=kind, message="x")
    with pytest.raises(error) as caught:
        await h.manager.get_valid_token("alice")
    assert type(caught.value) is error
    if kind in ("transient", "rate_limit", "timeout"):
        assert caught.value.retry_after == 10  # type: ignore[attr-defined]
    else:
        assert not isinstance(caught.value, TransientError)
    assert h.entra.posts == 0


async def test_an_expired_lease_is_taken_over(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=0.12)  # the holder died
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1
    assert h.clock.sleeps == [0.05, 0.05, 0.05]
    assert h.store.leases == {}


async def test_waiting_for_the_lease_is_bounded_by_the_deadline(make: Make) -> None:
    h = make(refresh_deadline=1.0, lease_poll_interval=0.25)
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=3600)
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.code == "lease_timeout"
    assert sum(h.clock.sleeps) == pytest.approx(1.0)
    assert h.entra.posts == 0


async def test_version_change_without_a_usable_token_keeps_waiting(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=0.1)
    stale = h.store.rows["alice"]

    async def other_saves_junk(seconds: float) -> None:
        await h.clock.sleep(seconds)
        h.store.put("alice", **{**stale, "expires_at": h.clock() - 5})  # bumped, still expired

    h.manager._refresher._sleep = other_saves_junk
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_store_reread_under_the_lease_avoids_the_post(h: Harness) -> None:
    h.seed(expires_in=-1)
    fresh = secret("at")

    def saved_just_before_we_got_the_lease(owner: str) -> None:
        h.store.on_acquire = None
        h.store.put("alice", access_token=fresh, refresh_token=secret("rt"),
                    expires_at=h.clock() + 3600)  # fmt: skip

    h.store.on_acquire = saved_just_before_we_got_the_lease
    assert await h.manager.get_valid_token("alice") == fresh
    assert h.entra.posts == 0
    assert h.store.leases == {}


async def test_two_managers_on_one_store_share_the_cooldown(make: Make) -> None:
    first = make()
    second = make(first.store)
    first.seed(expires_in=-1)
    first.entra.reply(oauth_error(400, "invalid_grant", (50173,)))
    with pytest.raises(AuthenticationError):
        await first.manager.get_valid_token("alice")
    with pytest.raises(AuthenticationError, match="recent token refresh failed"):
        await second.manager.get_valid_token("alice")
    assert (first.entra.posts, second.entra.posts) == (1, 0)


async def test_a_save_by_another_process_is_picked_up(make: Make) -> None:
    first = make()
    second = make(first.store)
    first.seed(expires_in=-1)
    new_at = secret("at")
    first.entra.reply(token_ok(new_at))
    assert await first.manager.get_valid_token("alice") == new_at
    assert await second.manager.get_valid_token("alice") == new_at
    assert second.entra.posts == 0


def _other_lease(h: Harness, *, ttl: float) -> Any:
    from auth_helpers import Lease

    return Lease("4242-otherprocess", h.clock() + ttl)


# -- opportunistic refresh ----------------------------------------------------------------------


async def test_opportunistic_refresh_success(h: Harness, events: list[Event]) -> None:
    h.seed(expires_in=200)  # inside the 300 s buffer, still valid
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    assert await h.manager.get_valid_token("alice") == new_at
    start = events[0]
    assert (start.event, start.context["reason"]) == ("token_refresh_start", "expiring")
    assert start.context["opportunistic"] is True
    assert start.context["max_attempts"] == 1


async def test_opportunistic_transient_failure_keeps_the_valid_token(
    h: Harness, events: list[Event]
) -> None:
    row = h.seed(expires_in=200)
    h.entra.reply(httpx.Response(503))
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert (h.entra.posts, h.clock.sleeps) == (1, [])  # one attempt, no backoff
    failed = [e for e in events if e.event == "token_refresh_failed"]
    assert failed[0].level == "WARNING"
    assert failed[0].context["opportunistic"] is True
    # Quiet period: no new attempt for 30 s, answered from memory.
    h.clock.advance(OPPORTUNISTIC_QUIET - 1)
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 1
    h.clock.advance(1)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    assert await h.manager.get_valid_token("alice") == new_at
    assert h.entra.posts == 2


async def test_quiet_period_never_outlives_the_token(make: Make) -> None:
    h = make(max_retries=0)
    row = h.seed(expires_in=10)
    h.entra.reply(httpx.Response(503))
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    h.clock.advance(10)  # expired now: a real refresh, with its errors
    h.entra.reply(httpx.Response(503))
    with pytest.raises(TransientError):
        await h.manager.get_valid_token("alice")


async def test_opportunistic_invalid_grant_flags_relogin_and_keeps_working(
    h: Harness, events: list[Event]
) -> None:
    row = h.seed(expires_in=200)
    h.entra.reply(oauth_error(400, "invalid_grant", (700082,)))
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.store.relogin["alice"] is True
    assert h.store.rows["alice"]["refresh_token"] == row["refresh_token"]
    assert [e.level for e in events if e.event == "token_refresh_failed_auth"] == ["WARNING"]
    for _ in range(3):
        h.clock.advance(60)
        assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 1
    h.clock.advance(20)  # expired: now the user must sign in
    with pytest.raises(AuthenticationError):
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 1


async def test_opportunistic_with_a_cooldown_uses_the_valid_token(h: Harness) -> None:
    row = h.seed(expires_in=200)
    h.store.cooldowns["alice"] = RefreshCooldown(
        until=h.clock() + 5, error_kind="transient", message="503"
    )
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 0
    assert h.manager._cache["alice"][0] == h.clock() + OPPORTUNISTIC_QUIET


async def test_opportunistic_while_another_process_refreshes(h: Harness) -> None:
    row = h.seed(expires_in=200)
    h.store.leases["alice"] = _other_lease(h, ttl=30)
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert (h.entra.posts, h.clock.sleeps) == (0, [])


async def test_opportunistic_storage_error_still_raises(h: Harness) -> None:
    h.seed(expires_in=200)
    real = h.store.get_token
    calls = 0

    async def failing_on_the_attempt(user_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # flow read, lease re-read, then the attempt's refresh-token read
            raise OSError("disk")
        return await real(user_id)

    h.store.get_token = failing_on_the_attempt  # type: ignore[method-assign]
    from saga_magic.core.errors import TokenStorageError

    with pytest.raises(TokenStorageError):
        await h.manager.get_valid_token("alice")


# -- force_refresh ------------------------------------------------------------------------------


async def test_force_refresh_takes_a_newer_stored_token(h: Harness) -> None:
    old = h.seed(expires_in=3600)
    assert await h.manager.get_valid_token("alice") == old["access_token"]
    newer = secret("at")
    h.store.put("alice", **{**old, "access_token": newer})  # another process refreshed
    assert await h.manager.force_refresh("alice", rejected_token=old["access_token"]) == newer
    assert h.entra.posts == 0
    assert h.manager._cache["alice"][1] == newer


async def test_force_refresh_replaces_the_rejected_token(h: Harness, events: list[Event]) -> None:
    old = h.seed(expires_in=3600)
    await h.manager.get_valid_token("alice")
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    assert await h.manager.force_refresh("alice", rejected_token=old["access_token"]) == new_at
    assert h.entra.posts == 1
    assert events[0].context["reason"] == "forced"
    assert await h.manager.get_valid_token("alice") == new_at  # cached


async def test_force_refresh_without_a_rejected_token_always_posts(h: Harness) -> None:
    h.seed(expires_in=3600)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    assert await h.manager.force_refresh("alice") == new_at
    assert h.entra.posts == 1


async def test_force_refresh_with_an_unknown_rejected_token_keeps_the_stored_one(
    h: Harness,
) -> None:
    old = h.seed(expires_in=3600)
    await h.manager.get_valid_token("alice")
    token = await h.manager.force_refresh("alice", rejected_token="some-other-token-0123456789")
    assert token == old["access_token"]  # the stored token is not the rejected one
    assert h.entra.posts == 0
    assert h.manager._cache["alice"][1] == old["access_token"]


async def test_hundred_force_refreshes_one_post(h: Harness) -> None:
    old = h.seed(expires_in=3600)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    tokens = await asyncio.gather(
        *(h.manager.force_refresh("alice", rejected_token=old["access_token"]) for _ in range(100))
    )
    assert set(tokens) == {new_at}
    assert h.entra.posts == 1


async def test_force_refresh_joining_a_plain_refresh_forces_its_own(h: Harness) -> None:
    # The cached token is due (inside the buffer); the stored one is fine and is the rejected one.
    rejected = h.seed(expires_in=3600)["access_token"]
    h.manager._cache["alice"] = (h.clock() - 1, rejected)
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    plain = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    await asyncio.sleep(0)
    forced = await h.manager.force_refresh("alice", rejected_token=rejected)
    assert await plain == rejected  # the plain refresh re-used the stored token
    assert forced == new_at
    assert h.entra.posts == 1


async def test_force_refresh_joining_a_plain_refresh_that_posted(h: Harness) -> None:
    rejected = h.seed(expires_in=-1)["access_token"]
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    plain = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    await asyncio.sleep(0)
    assert await h.manager.force_refresh("alice", rejected_token=rejected) == new_at
    assert await plain == new_at
    assert h.entra.posts == 1


async def test_force_refresh_on_plain_store(make: Make) -> None:
    h = make(PlainStore())
    h.seed(expires_in=3600)
    h.entra.reply(token_ok())
    await h.manager.force_refresh("alice")
    assert isinstance(h.manager._refresher.coordinator, LocalCoordinator)
    assert h.entra.posts == 1


async def test_logout_elsewhere_while_waiting_for_the_lease(h: Harness) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=0.1)

    async def other_process_logs_out(seconds: float) -> None:
        await h.clock.sleep(seconds)
        h.store.rows.pop("alice", None)

    h.manager._refresher._sleep = other_process_logs_out
    with pytest.raises(AuthenticationError, match="no refresh token"):
        await h.manager.get_valid_token("alice")
    assert h.entra.posts == 0


async def test_lease_wait_and_retries_share_one_deadline(make: Make) -> None:
    h = make(refresh_deadline=10.0, lease_poll_interval=1.0)
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=3.5)  # we wait 4 s of the 10 s budget
    h.entra.reply(httpx.Response(503), httpx.Response(503), httpx.Response(503))
    with pytest.raises(TransientError) as caught:
        await h.manager.get_valid_token("alice")
    # 4 s of lease polling, then waits 1 + 2 fit in the 6 s left; a 4 s wait would not.
    assert h.clock.sleeps == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0]
    assert caught.value.attempts == 3


# -- review fixes -------------------------------------------------------------------------------


async def _spin(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_caller_arriving_after_the_last_one_left_gets_its_own_refresh(h: Harness) -> None:
    # /tmp/r8.py: the new caller joined the flight being cancelled and got CancelledError.
    h.seed(expires_in=-1)
    real_read = h.store.get_token

    async def first_read_hangs(user_id: str) -> Any:
        h.store.get_token = real_read  # type: ignore[method-assign]
        await asyncio.Event().wait()

    h.store.get_token = first_read_hangs  # type: ignore[method-assign]
    new_at = secret("at")
    h.entra.reply(token_ok(new_at))
    old = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    await _spin()
    old.cancel()  # e.g. a Textual exclusive worker superseded
    new = asyncio.ensure_future(h.manager.get_valid_token("alice"))  # started right away
    assert await new == new_at
    with pytest.raises(asyncio.CancelledError):
        await old
    assert h.entra.posts == 1
    await _spin()
    assert h.manager._refresher._flights == {}
    assert h.manager._refresher._tasks == set()


async def test_cancelled_while_taking_the_lease_releases_it(h: Harness) -> None:
    # /tmp/r3.py: cancelled during the lease's commit, the lease stayed for lease_ttl + timeout.
    h.seed(expires_in=-1)
    h.store.after_acquire = asyncio.Event().wait  # the commit is slow
    caller = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    await _spin()
    flight = h.manager._refresher._flights["alice"]
    assert "alice" in h.store.leases  # taken; the caller does not know it yet
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait({flight.task})
    assert h.store.leases == {}
    # The next caller (or process) is not held up by an orphan lease.
    h.store.after_acquire = None
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    assert h.clock.sleeps == []


async def test_a_cancelled_release_still_happens(h: Harness) -> None:
    # Cancelled again while releasing (abandoned, then closed): the release is shielded.
    h.seed(expires_in=-1)
    h.store.after_acquire = asyncio.Event().wait
    real_release = h.store.release_lease
    releasing = asyncio.Event()
    proceed = asyncio.Event()

    async def slow_release(user_id: str, *, owner: str) -> None:
        releasing.set()
        await proceed.wait()
        await real_release(user_id, owner=owner)

    h.store.release_lease = slow_release  # type: ignore[method-assign]
    caller = asyncio.ensure_future(h.manager.get_valid_token("alice"))
    await _spin()
    flight = h.manager._refresher._flights["alice"]
    caller.cancel()
    async with asyncio.timeout(5):
        await releasing.wait()
    flight.task.cancel()  # cancelled once more while it releases
    await asyncio.wait({flight.task})
    proceed.set()
    await _spin()
    assert h.store.leases == {}


async def test_cooldown_is_rechecked_under_the_lease(h: Harness) -> None:
    # /tmp/r9.py: the leader failed between our cool-down read and our lease: no POST now.
    h.seed(expires_in=-1)

    def leader_failed_meanwhile(owner: str) -> None:
        h.store.on_acquire = None
        h.store.cooldowns["alice"] = RefreshCooldown(
            until=h.clock() + 86400, error_kind="authentication", message="invalid_grant"
        )

    h.store.on_acquire = leader_failed_meanwhile
    with pytest.raises(AuthenticationError) as caught:
        await h.manager.get_valid_token("alice")
    assert caught.value.code == "cooldown"
    assert h.entra.posts == 0
    assert h.store.leases == {}


async def test_cooldown_under_the_lease_keeps_a_valid_token(h: Harness) -> None:
    row = h.seed(expires_in=200)  # opportunistic

    def leader_failed_meanwhile(owner: str) -> None:
        h.store.on_acquire = None
        h.store.cooldowns["alice"] = RefreshCooldown(
            until=h.clock() + 5, error_kind="transient", message="503"
        )

    h.store.on_acquire = leader_failed_meanwhile
    assert await h.manager.get_valid_token("alice") == row["access_token"]
    assert h.entra.posts == 0
    assert h.manager._cache["alice"][0] == h.clock() + OPPORTUNISTIC_QUIET


async def test_a_lost_lease_stops_our_retries_and_we_wait_for_the_new_holder(
    make: Make, events: list[Event]
) -> None:
    h = make(max_retries=3)
    h.seed(expires_in=-1)
    other = _other_lease(h, ttl=60)
    fresh = secret("at")

    def first_attempt(request: httpx.Request) -> httpx.Response:
        h.store.leases["alice"] = other  # ours lapsed meanwhile; another process took over
        return httpx.Response(503)

    async def other_process_finishes(seconds: float) -> None:
        await h.clock.sleep(seconds)
        h.store.put("alice", access_token=fresh, refresh_token=secret("rt"),
                    expires_at=h.clock() + 3600)  # fmt: skip

    h.entra.reply(first_attempt)
    h.manager._refresher._sleep = other_process_finishes
    assert await h.manager.get_valid_token("alice") == fresh
    assert h.entra.posts == 1  # no second leader posting
    assert h.clock.sleeps == [0.05]  # one lease poll, not the 1 s retry wait
    assert h.store.leases["alice"] is other  # the new holder's lease is left alone
    names = [e.event for e in events]
    assert names == ["token_refresh_start", "token_refresh_retry", "token_refresh_failed"]
    assert events[-1].context["code"] == "lease_lost"
    assert events[-1].level == "WARNING"


async def test_waiters_poll_read_only_and_write_only_when_the_lease_looks_free(
    h: Harness,
) -> None:
    h.seed(expires_in=-1)
    h.store.leases["alice"] = _other_lease(h, ttl=0.12)
    h.entra.reply(token_ok())
    await h.manager.get_valid_token("alice")
    acquires = [entry for entry in h.store.lease_log if entry[0] == "acquire"]
    assert len(acquires) == 1  # one write, once the holder's lease had expired
    assert h.store.holder_checks == 4
    assert h.clock.sleeps == [0.05, 0.05, 0.05]


async def test_a_lease_taken_between_look_and_take_is_waited_for(h: Harness) -> None:
    h.seed(expires_in=-1)
    fresh = secret("at")
    real_holder = h.store.lease_holder

    async def looks_free_once(user_id: str, *, now: float) -> str | None:
        h.store.lease_holder = real_holder  # type: ignore[method-assign]
        h.store.leases["alice"] = _other_lease(h, ttl=60)  # taken right after our look
        return None

    async def other_process_finishes(seconds: float) -> None:
        await h.clock.sleep(seconds)
        h.store.put("alice", access_token=fresh, refresh_token=secret("rt"),
                    expires_at=h.clock() + 3600)  # fmt: skip

    h.store.lease_holder = looks_free_once  # type: ignore[method-assign]
    h.manager._refresher._sleep = other_process_finishes
    assert await h.manager.get_valid_token("alice") == fresh
    assert h.entra.posts == 0


async def test_a_timeout_cooldown_keeps_its_class_and_status(make: Make) -> None:
    first = make(max_retries=0)
    second = make(first.store)
    first.seed(expires_in=-1)
    first.entra.reply(httpx.Response(504, text="Gateway Timeout"))
    with pytest.raises(RequestTimeoutError):
        await first.manager.get_valid_token("alice")
    cooldown = first.store.cooldowns["alice"]
    assert (cooldown.error_kind, cooldown.status) == ("timeout", 504)
    with pytest.raises(RequestTimeoutError) as caught:
        await second.manager.get_valid_token("alice")
    assert (caught.value.code, caught.value.status) == ("cooldown", 504)
    assert second.entra.posts == 0


async def test_an_auth_cooldown_keeps_status_and_code(make: Make) -> None:
    first = make()
    second = make(first.store)
    first.seed(expires_in=-1)
    first.entra.reply(oauth_error(400, "invalid_grant", (70000,)))
    with pytest.raises(AuthenticationError):
        await first.manager.get_valid_token("alice")
    cooldown = first.store.cooldowns["alice"]
    assert (cooldown.status, cooldown.code) == (400, "invalid_grant")
    with pytest.raises(AuthenticationError) as caught:
        await second.manager.get_valid_token("alice")
    assert (caught.value.code, caught.value.status) == ("cooldown", 400)
    assert "invalid_grant" in caught.value.message


async def test_refresh_events_carry_the_callers_op_id(h: Harness, events: list[Event]) -> None:
    h.seed(expires_in=-1)
    h.entra.reply(token_ok(), token_ok())
    await h.manager.get_valid_token("alice", op_id="op-engine-1")
    await h.manager.force_refresh("alice", op_id="op-engine-2")
    assert [e.op_id for e in events if e.event == "token_refresh_start"] == [
        "op-engine-1",
        "op-engine-2",
    ]
    assert {e.op_id for e in events} == {"op-engine-1", "op-engine-2"}


async def test_logout_cancels_a_refresh_in_flight(fake_clock: Any, events: list[Event]) -> None:
    store = FakeStore()
    posting = asyncio.Event()

    async def slow_entra(request: httpx.Request) -> httpx.Response:
        posting.set()
        await asyncio.sleep(0.01)
        return token_ok()

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_entra)) as client:
        manager = EntraIDAuthManager(
            store,
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            http_client=client,
            clock=fake_clock,
            sleep=fake_clock.sleep,
        )
        store.put("alice", access_token=secret("at"), refresh_token=secret("rt"), expires_at=0)
        caller = asyncio.ensure_future(manager.get_valid_token("alice"))
        await posting.wait()
        assert await manager.logout("alice") is True
        with pytest.raises(AuthenticationError) as caught:
            await caller
        assert caught.value.code == "signed_out"
        await asyncio.sleep(0.02)  # the answer would have arrived by now
        assert "alice" not in store.rows  # not saved again after the logout
        assert "alice" not in manager._cache
        assert store.leases == {}
        assert "token_stored" not in [e.event for e in events]
        await manager.close()


async def test_logout_without_a_refresh_in_flight(h: Harness) -> None:
    h.seed()
    await h.manager.get_valid_token("alice")
    assert await h.manager.logout("alice") is True
    assert "alice" not in h.manager._cache


async def test_local_coordinator() -> None:
    local = LocalCoordinator()
    cooldown = RefreshCooldown(until=10.0, error_kind="transient", message="x")
    await local.set_cooldown("alice", cooldown)
    assert await local.get_cooldown("alice", now=5.0) is cooldown
    await local.set_cooldown("alice", None)
    assert await local.get_cooldown("alice", now=5.0) is None
    assert await local.lease_holder("alice", now=5.0) is None
