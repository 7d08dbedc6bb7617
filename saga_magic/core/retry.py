"""One retry policy for the token endpoint and the chat endpoint.

Rules (DESIGN.md, PROTOCOLS.md section 3):

* 1 attempt + up to ``max_retries`` retries; our own waits are ``backoff_base`` x 1, 2, 4, 8, 16 s
  (``backoff.expo``), plus a small **positive** jitter.
* A server wait (``retry-after-ms``, ``x-ms-retry-after-ms``, ``retry-after`` seconds or HTTP date,
  or "retry after N seconds" in the message) wins when longer; it is never shortened.
* A wait that would end past the call's deadline fails fast, now, with the server's
  ``retry_after`` on the error (a daily quota's 86400 s reads as what it is).
* Only :class:`TransientError` (and its subclasses) is retried; anything else propagates at once.

Why not ``backoff.on_exception``: its decorators sleep with a hard-wired ``asyncio.sleep`` (no way
to inject a clock in tests) and cap the last wait to ``max_time`` (shortening a server wait). We
keep ``backoff``'s wait generator for the schedule and run the loop here, with injected clock and
sleep.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import backoff

from .errors import ArcSagaException, RateLimitError, TransientError

__all__ = [
    "PLAUSIBLE_WAIT_CEILING",
    "Clock",
    "RetryEvent",
    "RetryPolicy",
    "Sleep",
    "parse_retry_after",
    "retry_reason",
]

T = TypeVar("T")
Clock = Callable[[], float]
"""Returns unix time in seconds (``time.time``); tests pass a fake."""
Sleep = Callable[[float], Awaitable[None]]
"""Waits that many seconds (``asyncio.sleep``); tests pass a fake that advances the fake clock."""

PLAUSIBLE_WAIT_CEILING = 7 * 86400.0
"""Server waits above this (a week) are treated as garbage; 86400 s quota waits stay real."""

_MESSAGE_WAIT = re.compile(
    r"(?:retry after|try again in)\s+(\d+(?:\.\d+)?)\s*(milliseconds|ms|seconds?|secs?|s)\b",
    re.IGNORECASE,
)


def _plausible(seconds: float) -> float | None:
    if math.isfinite(seconds) and 0 < seconds <= PLAUSIBLE_WAIT_CEILING:
        return seconds
    return None


def _number(raw: str | None, scale: float) -> float | None:
    if raw is None:
        return None
    try:
        return _plausible(float(raw.strip()) * scale)
    except ValueError:
        return None


def _http_date(raw: str | None, now: float) -> float | None:
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return _plausible(when.timestamp() - now)


def parse_retry_after(
    headers: Mapping[str, str], message: str | None = None, *, now: float | None = None
) -> float | None:
    """Find the server's requested wait, in seconds.

    Sources, first valid wins: ``retry-after-ms``, ``x-ms-retry-after-ms``, ``retry-after`` as a
    number, ``retry-after`` as an HTTP date, then "retry after N seconds" / "try again in N
    seconds" in ``message``. Garbage (``soon``, ``nan``, ``inf``, ``-5``, ``0``, ``1e100``, a past
    date) is skipped.

    Args:
        headers: Response headers (case-insensitive mapping such as ``httpx.Headers``, or a
            dict with lower-case keys).
        message: Error message text from the body, if any.
        now: Unix time for HTTP dates; the current time by default.

    Returns:
        Seconds to wait, or ``None`` if the server gave no valid wait.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    current = time.time() if now is None else now
    retry_after = lowered.get("retry-after")
    for candidate in (
        _number(lowered.get("retry-after-ms"), 0.001),
        _number(lowered.get("x-ms-retry-after-ms"), 0.001),
        _number(retry_after, 1.0),
        _http_date(retry_after, current),
    ):
        if candidate is not None:
            return candidate
    if message:
        match = _MESSAGE_WAIT.search(message)
        if match:
            unit = match.group(2).lower()
            scale = 0.001 if unit in ("ms", "milliseconds") else 1.0
            return _number(match.group(1), scale)
    return None


def retry_reason(error: BaseException) -> str:
    """Short reason for a retry event: ``429``, ``503``, ``timeout``, ``connection``, ...

    Args:
        error: The failure that triggered the retry.

    Returns:
        The HTTP status when there was one, else the error code or class name.
    """
    if isinstance(error, ArcSagaException):
        if error.status is not None:
            return str(error.status)
        if error.code:
            return error.code
    return type(error).__name__


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What the loop tells its caller before each wait (the caller emits the event)."""

    attempt: int
    """The attempt that just failed (1-based)."""
    max_attempts: int
    """Attempts allowed in all."""
    wait_s: float
    """Seconds until the next attempt."""
    next_attempt_at: float
    """Unix time of the next attempt (absolute, so another process can draw a countdown)."""
    reason: str
    """Why: ``429``, ``503``, ``timeout``, ``connection``, ..."""
    error: TransientError
    """The failure itself."""


def _default_jitter(wait: float) -> float:
    # Non-cryptographic: spreads clients that were told the same Retry-After.
    return random.uniform(0.0, min(1.0, 0.1 * wait))  # noqa: S311  # nosec B311


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempt budget, backoff schedule and jitter.

    Args:
        max_retries: Retries after the first attempt (5 -> 6 attempts).
        backoff_base: Factor of the 1, 2, 4, 8, 16 s schedule (tests use e.g. 0.001).
        jitter: Returns a non-negative extra wait for a given wait (injected in tests).
    """

    max_retries: int = 5
    """Retries after the first attempt."""
    backoff_base: float = 1.0
    """Factor of the exponential schedule."""
    jitter: Callable[[float], float] = field(default=_default_jitter)
    """Extra positive wait added to every wait."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not (math.isfinite(self.backoff_base) and self.backoff_base >= 0):
            raise ValueError("backoff_base must be a finite number >= 0")

    @property
    def max_attempts(self) -> int:
        """Attempts allowed in all (first attempt included)."""
        return self.max_retries + 1

    @functools.cached_property
    def schedule(self) -> tuple[float, ...]:
        """Our own waits before each retry, e.g. ``(1, 2, 4, 8, 16)``."""
        waits = backoff.expo(base=2, factor=self.backoff_base)
        next(waits)  # advance past the generator's priming yield
        return tuple(float(next(waits)) for _ in range(self.max_retries))

    def wait_before(self, retry_index: int, server_wait: float | None) -> float:
        """Wait before retry number ``retry_index`` (0-based), server wait and jitter applied.

        Args:
            retry_index: 0 for the first retry.
            server_wait: The server's requested wait, if any.

        Returns:
            ``max(own, server) + jitter``; never shorter than ``server_wait``.
        """
        wait = max(self.schedule[retry_index], server_wait or 0.0)
        return wait + max(0.0, self.jitter(wait))

    async def run(
        self,
        operation: Callable[[int], Awaitable[T]],
        *,
        deadline_at: float,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> T:
        """Run ``operation`` until it succeeds, fails permanently, or the budget ends.

        Args:
            operation: Called with the attempt number (1-based); raises a
                :class:`TransientError` to ask for a retry.
            deadline_at: Unix time by which the whole call must end.
            clock: Current unix time.
            sleep: Waits between attempts.
            on_retry: Called before each wait (emit the retry event there).

        Returns:
            What ``operation`` returned.

        Raises:
            RateLimitError: the server's wait would pass the deadline (fail fast), or the last
                attempt was throttled.
            TransientError: the last attempt failed transiently, or the next wait would pass
                the deadline.
            ArcSagaException: any permanent failure, at once, with ``attempts`` set.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation(attempt)
            except TransientError as error:
                error.attempts = attempt
                if attempt >= self.max_attempts:
                    raise
                wait = self.wait_before(attempt - 1, error.retry_after)
                now = clock()
                if now + wait > deadline_at:
                    if error.retry_after is None or now + error.retry_after <= deadline_at:
                        raise  # our own backoff is what overruns: not a server-wait fail-fast
                    raise self._fail_fast(error, error.retry_after, deadline_at - now) from error
                event = RetryEvent(
                    attempt=attempt,
                    max_attempts=self.max_attempts,
                    wait_s=wait,
                    next_attempt_at=now + wait,
                    reason=retry_reason(error),
                    error=error,
                )
                if on_retry is not None:
                    on_retry(event)
                await sleep(wait)
            except ArcSagaException as error:
                error.attempts = attempt
                raise

    @staticmethod
    def _fail_fast(error: TransientError, retry_after: float, remaining: float) -> RateLimitError:
        left = max(0.0, remaining)
        quota = " (quota exhausted)" if retry_after >= 3600 else ""
        return RateLimitError(
            f"{error.message}; the server asks to wait {retry_after:.0f} s{quota}, "
            f"more than the {left:.0f} s left before the deadline",
            retry_after=retry_after,
            status=error.status,
            code=error.code,
            error_codes=error.error_codes,
            request_id=error.request_id,
            correlation_id=error.correlation_id,
            attempts=error.attempts,
            hint=f"try again in {retry_after:.0f} s",
        )
