"""Device-code login (RFC 8628 on Entra ID): the first refresh token, without another tool.

:meth:`EntraIDAuthManager.start_device_login <saga_magic.core.auth.EntraIDAuthManager>` asks
Entra for a code and returns a :class:`DeviceCodeLogin` to show; ``complete_device_login``
runs :func:`poll_device_login` here, then saves the token. The poll loop:

* waits ``interval`` before each poll (injected sleep), never past the code's local expiry;
* ``authorization_pending`` -> poll again; ``slow_down`` -> ``interval += 5`` s;
* 429 / AADSTS50196 (throttled) -> ``interval += 5`` s and wait at least the server's wait;
  5xx, timeouts, connection errors -> poll again (each bounded by the expiry);
* ``authorization_declined`` / ``expired_token`` / ``bad_verification_code`` and every
  configuration error end it at once; reaching the local expiry ends it as "expired";
* nothing is memoized between polls, and cancelling the task (Ctrl-C, the TUI) propagates
  :class:`asyncio.CancelledError` cleanly with nothing saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .entra import EntraClient, PollStatus, TokenGrant
from .errors import ArcSagaException, AuthenticationError, RateLimitError, TransientError
from .refresh import emit
from .retry import Clock, Sleep

__all__ = ["SLOW_DOWN_STEP", "DeviceCodeLogin", "DevicePoll", "poll_device_login"]

SLOW_DOWN_STEP = 5.0
"""Seconds added to the poll interval on ``slow_down`` or throttling (RFC 8628 section 3.5)."""


@dataclass(frozen=True, slots=True)
class DeviceCodeLogin:
    """A started device-code login: what to show the user, and the secret needed to finish it.

    Built by ``start_device_login``; pass it to ``complete_device_login``.
    """

    user_id: str
    """Whose token the login will save."""
    user_code: str
    """The short code the user types (shown to the user; not a credential on its own)."""
    verification_uri: str
    """Where to type it, e.g. ``https://microsoft.com/devicelogin``."""
    message: str
    """Entra's ready-made instruction, code and URI included."""
    expires_at: float
    """Unix time after which the code is dead and a new login is needed."""
    interval: float
    """Seconds between polls, as Entra asked."""
    op_id: str = ""
    """Operation id shared by every event of this login."""
    _device_code: str = field(default="", repr=False, compare=False)
    """The secret device code (never shown, never logged)."""


@dataclass(frozen=True, slots=True)
class DevicePoll:
    """Progress of a device-code login, given to ``on_poll`` after each unfinished poll."""

    attempt: int
    """Polls made so far."""
    status: str
    """``authorization_pending``, ``slow_down``, ``throttled`` or ``transient``."""
    interval: float
    """The poll interval now in force."""
    next_poll_at: float
    """Unix time of the next poll."""
    expires_at: float
    """Unix time the code expires."""


def _expired(attempts: int) -> AuthenticationError:
    return AuthenticationError(
        "the code expired; run login again",
        code="expired_token",
        attempts=attempts,
        hint="run %copilot login to get a new code",
    )


async def poll_device_login(
    entra: EntraClient,
    login: DeviceCodeLogin,
    *,
    clock: Clock,
    sleep: Sleep,
    on_poll: Callable[[DevicePoll], None] | None = None,
) -> TokenGrant:
    """Poll the token endpoint until the user approves, declines, or the code expires.

    Args:
        entra: The boundary client of the manager.
        login: From ``start_device_login``.
        clock: Unix time.
        sleep: Waits between polls.
        on_poll: Called after each poll that did not finish the login.

    Returns:
        The approved token set (not saved yet).

    Raises:
        AuthenticationError: declined, expired (locally or by Entra), code not recognised,
            or another re-login answer.
        ConfigurationError: the app registration or a setting is wrong.
        ArcSagaException: the manager was closed (``code="closed"``); like the two above, it
            carries ``attempts``.
        asyncio.CancelledError: the task was cancelled.
    """
    interval = login.interval
    wait = interval
    attempt = 0
    while True:
        remaining = login.expires_at - clock()
        if remaining <= 0:
            raise _expired(attempt)
        await sleep(min(wait, remaining))
        remaining = login.expires_at - clock()
        if remaining <= 0:
            raise _expired(attempt)
        attempt += 1
        try:
            outcome = await entra.poll_device_code(login._device_code, budget=remaining)
        except TransientError as error:
            status = "transient"
            if isinstance(error, RateLimitError):
                status = "throttled"
                interval += SLOW_DOWN_STEP
            wait = max(interval, error.retry_after or 0.0)
        except ArcSagaException as error:  # re-login or configuration: the login ends here
            error.attempts = attempt
            raise
        else:
            if isinstance(outcome, TokenGrant):
                return outcome
            if outcome is PollStatus.SLOW_DOWN:
                interval += SLOW_DOWN_STEP
            status = outcome.value
            wait = interval
        next_poll_at = clock() + wait
        emit(
            logging.DEBUG,
            "device_code_poll",
            login.user_id,
            login.op_id,
            attempt=attempt,
            status=status,
            interval=interval,
            next_poll_at=next_poll_at,
        )
        if on_poll is not None:
            on_poll(
                DevicePoll(
                    attempt=attempt,
                    status=status,
                    interval=interval,
                    next_poll_at=next_poll_at,
                    expires_at=login.expires_at,
                )
            )
