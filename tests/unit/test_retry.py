"""RetryPolicy, parse_retry_after and retry_reason (PROTOCOLS.md section 3)."""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any

import httpx
import pytest

from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.retry import (
    PLAUSIBLE_WAIT_CEILING,
    RetryEvent,
    RetryPolicy,
    _default_jitter,
    parse_retry_after,
    retry_reason,
)

NOW = 1_700_000_000.0


def date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


# -- parse_retry_after ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({}, None, None),
        ({"retry-after-ms": "1500", "retry-after": "2"}, None, 1.5),
        ({"Retry-After-Ms": "250"}, None, 0.25),
        ({"x-ms-retry-after-ms": "3000", "retry-after": "9"}, None, 3.0),
        ({"retry-after": "7"}, None, 7.0),
        ({"Retry-After": " 7.5 "}, None, 7.5),
        ({"retry-after": date(10)}, None, 10.0),
        ({"retry-after": "86400"}, None, 86400.0),
        ({"retry-after-ms": "soon", "retry-after": "4"}, None, 4.0),
        ({"retry-after-ms": "nan", "x-ms-retry-after-ms": "-5", "retry-after": "3"}, None, 3.0),
        ({"retry-after": "soon"}, None, None),
        ({"retry-after": "nan"}, None, None),
        ({"retry-after": "inf"}, None, None),
        ({"retry-after": "-5"}, None, None),
        ({"retry-after": "0"}, None, None),
        ({"retry-after": "1e100"}, None, None),
        ({"retry-after": str(PLAUSIBLE_WAIT_CEILING + 1)}, None, None),
        ({"retry-after": date(-60)}, None, None),  # a past date
        ({"retry-after": "Fri, 29 Sep 2023 16:26:57 -0000"}, None, None),  # no time zone
        ({"retry-after": "Fri, 99 Foo 2023 99:99:99 GMT"}, None, None),
        ({}, "Please retry after 7 seconds.", 7.0),
        ({}, "Rate limit is exceeded. Try again in 3 seconds.", 3.0),
        ({}, "retry after 1.5s", 1.5),
        ({}, "Retry after 1500 milliseconds", 1.5),
        ({}, "retry after 200ms", 0.2),
        ({}, "try again in 2 secs", 2.0),
        ({}, "Please retry after 86400 seconds (daily quota).", 86400.0),
        ({}, "Please retry after 0 seconds.", None),
        ({}, "no hint here", None),
        ({}, "", None),
        ({"retry-after": "soon"}, "Please retry after 6 seconds.", 6.0),
        ({"retry-after": "5"}, "Please retry after 6 seconds.", 5.0),
    ],
)
def test_parse_retry_after(
    headers: dict[str, str], message: str | None, expected: float | None
) -> None:
    assert parse_retry_after(headers, message, now=NOW) == expected


def test_parse_retry_after_takes_httpx_headers_and_the_real_clock() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    wait = parse_retry_after(httpx.Headers({"Retry-After": when}))
    assert wait is not None
    assert 100 < wait <= 120


# -- retry_reason --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RateLimitError("x", status=429), "429"),
        (TransientError("x", code="connection"), "connection"),
        (RequestTimeoutError("x", code="timeout"), "timeout"),
        (TransientError("x"), "TransientError"),
        (OSError("x"), "OSError"),
    ],
)
def test_retry_reason(error: BaseException, reason: str) -> None:
    assert retry_reason(error) == reason


# -- the policy ----------------------------------------------------------------------------------


def test_schedule_and_attempts() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 6
    assert policy.schedule == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert sum(policy.schedule) == 31.0
    assert RetryPolicy(backoff_base=0.001, max_retries=3).schedule == (0.001, 0.002, 0.004)
    assert RetryPolicy(max_retries=0).schedule == ()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"backoff_base": -1.0}, "backoff_base"),
        ({"backoff_base": math.nan}, "backoff_base"),
    ],
)
def test_policy_validation(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**options)


def test_wait_before_never_shortens_and_only_adds_jitter() -> None:
    policy = RetryPolicy(jitter=lambda wait: 0.25)
    assert policy.wait_before(0, None) == 1.25
    assert policy.wait_before(0, 60.0) == 60.25  # the server's wait wins
    assert policy.wait_before(4, 3.0) == 16.25  # our schedule wins
    shrinking = RetryPolicy(jitter=lambda wait: -100.0)
    assert shrinking.wait_before(2, None) == 4.0  # negative jitter is ignored


def test_default_jitter_is_small_and_positive() -> None:
    for wait in (0.0, 1.0, 4.0, 60.0, 86400.0):
        for _ in range(50):
            extra = _default_jitter(wait)
            assert 0.0 <= extra <= min(1.0, 0.1 * wait)
    policy = RetryPolicy()
    assert 60.0 <= policy.wait_before(0, 60.0) <= 61.0


class Script:
    """An operation that fails with the given errors, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(**options: Any) -> RetryPolicy:
    options.setdefault("jitter", lambda wait: 0.0)
    return RetryPolicy(**options)


async def test_success_at_once(fake_clock: Any) -> None:
    operation = Script()
    result = await policy().run(
        operation, deadline_at=fake_clock() + 120, clock=fake_clock, sleep=fake_clock.sleep
    )
    assert (result, operation.attempts, fake_clock.sleeps) == ("ok", [1], [])


async def test_retries_transient_errors_and_reports_each_wait(fake_clock: Any) -> None:
    operation = Script(
        TransientError("503", status=503),
        RateLimitError("429", status=429, retry_after=5.0),
        RequestTimeoutError("slow", code="timeout"),
    )
    seen: list[RetryEvent] = []
    start = fake_clock()
    result = await policy().run(
        operation,
        deadline_at=start + 120,
        clock=fake_clock,
        sleep=fake_clock.sleep,
        on_retry=seen.append,
    )
    assert result == "ok"
    assert operation.attempts == [1, 2, 3, 4]
    assert fake_clock.sleeps == [1.0, 5.0, 4.0]
    assert [e.attempt for e in seen] == [1, 2, 3]
    assert {e.max_attempts for e in seen} == {6}
    assert [e.wait_s for e in seen] == [1.0, 5.0, 4.0]
    assert [e.next_attempt_at for e in seen] == [start + 1, start + 6, start + 10]
    assert [e.reason for e in seen] == ["503", "429", "timeout"]
    assert isinstance(seen[1].error, RateLimitError)


async def test_exhausted_budget_raises_the_last_error(fake_clock: Any) -> None:
    operation = Script(*(RateLimitError("429", status=429) for _ in range(6)))
    with pytest.raises(RateLimitError) as caught:
        await policy().run(
            operation, deadline_at=fake_clock() + 120, clock=fake_clock, sleep=fake_clock.sleep
        )
    assert operation.attempts == [1, 2, 3, 4, 5, 6]
    assert fake_clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert caught.value.attempts == 6


async def test_no_retries(fake_clock: Any) -> None:
    operation = Script(TransientError("503"))
    with pytest.raises(TransientError) as caught:
        await policy(max_retries=0).run(operation, deadline_at=fake_clock() + 120)
    assert caught.value.attempts == 1


async def test_permanent_errors_are_not_retried(fake_clock: Any) -> None:
    for error in (AuthenticationError("no"), ConfigurationError("bad")):
        operation = Script(error)
        with pytest.raises(type(error)) as caught:
            await policy().run(
                operation, deadline_at=fake_clock() + 120, clock=fake_clock, sleep=fake_clock.sleep
            )
        assert caught.value.attempts == 1
        assert operation.attempts == [1]
    operation = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        await policy().run(operation, deadline_at=fake_clock() + 120, clock=fake_clock)
    assert fake_clock.sleeps == []


async def test_server_wait_beyond_the_deadline_fails_fast(fake_clock: Any) -> None:
    operation = Script(RateLimitError("quota", status=429, retry_after=86400.0, code="429"))
    with pytest.raises(RateLimitError) as caught:
        await policy().run(
            operation, deadline_at=fake_clock() + 120, clock=fake_clock, sleep=fake_clock.sleep
        )
    error = caught.value
    assert fake_clock.sleeps == []
    assert error.retry_after == 86400.0
    assert error.attempts == 1
    assert (error.status, error.code) == (429, "429")
    assert "86400 s (quota exhausted), more than the 120 s left" in str(error)
    assert "try again in 86400 s" in (error.hint or "")
    assert isinstance(error.__cause__, RateLimitError)


async def test_any_server_wait_past_the_deadline_fails_fast_as_a_rate_limit(
    fake_clock: Any,
) -> None:
    operation = Script(RequestTimeoutError("504", status=504, retry_after=300.0))
    with pytest.raises(RateLimitError) as caught:
        await policy().run(operation, deadline_at=fake_clock() + 60, clock=fake_clock)
    assert caught.value.status == 504
    assert "quota" not in str(caught.value)


async def test_fail_fast_when_the_deadline_already_passed(fake_clock: Any) -> None:
    operation = Script(TransientError("503", status=503, retry_after=30.0))
    with pytest.raises(RateLimitError, match="more than the 0 s left"):
        await policy().run(operation, deadline_at=fake_clock() - 5, clock=fake_clock)


async def test_own_backoff_past_the_deadline_raises_the_error_itself(fake_clock: Any) -> None:
    # Without a server wait: the last error, unchanged.
    operation = Script(TransientError("503", status=503))
    with pytest.raises(TransientError) as caught:
        await policy().run(operation, deadline_at=fake_clock() + 0.5, clock=fake_clock)
    assert type(caught.value) is TransientError
    assert caught.value.attempts == 1
    # With a short server wait that fits, but our 16 s step does not: no misleading fail-fast.
    errors = [TransientError("503", status=503) for _ in range(4)]
    operation = Script(*errors, RateLimitError("429", status=429, retry_after=2.0))
    with pytest.raises(RateLimitError) as caught_rate:
        await policy().run(
            operation, deadline_at=fake_clock() + 25, clock=fake_clock, sleep=fake_clock.sleep
        )
    assert fake_clock.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert caught_rate.value.message == "429"
    assert caught_rate.value.retry_after == 2.0
    assert caught_rate.value.attempts == 5
