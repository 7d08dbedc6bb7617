"""Refreshing one user's token: single flight in the process, a lease across processes.

The engine room of :class:`~saga_magic.core.auth.EntraIDAuthManager` (which owns the hot path and
the public API). Per user::

    one task in flight per user; every caller awaits it (a caller that leaves does not cancel it
    unless it was the last one)
      read the store -> a usable token? cache it, done (another process refreshed)
      cool-down recorded by a failed refresh? raise the same kind of error, no POST
      take the refresh lease, or wait for its holder (one refresh_deadline bounds the whole call):
          token version changed -> use the stored token; cool-down -> raise; lease free -> take it
      re-read the store under the lease (another process may just have saved)
      POST the refresh_token grant through RetryPolicy (refresh token re-read before each attempt)
      save access + refresh token in one save_token call -> cache -> return
      on failure: record a cool-down, flag re-login on invalid_grant (never delete the RT)
      release the lease (always)

Opportunistic refresh (the token in hand is inside the buffer but not expired): one attempt, no
backoff. On any refresh failure (transient, re-login, configuration) the still-valid token is
returned and cached for :data:`OPPORTUNISTIC_QUIET` seconds (longer when a cool-down says so),
never past its expiry; the failure is still recorded (event, cool-down, re-login flag). Storage
errors raise. When another process holds the lease, the valid token is returned at once.

Cool-downs: transient ``max(5 s, retry_after)``; re-login 24 h (the next save, i.e. a login,
clears it); configuration 60 s, so a corrected setting in a restarted process is not locked out
for long. A store without :class:`IRefreshCoordinator` gets an in-process equivalent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

from .entra import EntraClient, TokenGrant
from .errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    TokenPersistenceError,
    TokenStorageError,
    TransientError,
)
from .events import log_with_context, new_op_id
from .jwt import jwt_exp
from .protocols import IEncryptedStore, IRefreshCoordinator, RefreshCooldown
from .retry import Clock, RetryEvent, RetryPolicy, Sleep

__all__ = [
    "AUTH_COOLDOWN",
    "CONFIG_COOLDOWN",
    "OPPORTUNISTIC_QUIET",
    "TRANSIENT_COOLDOWN",
    "LocalCoordinator",
    "TokenRefresher",
    "TokenState",
    "cooldown_error",
    "error_fields",
    "grant_state",
    "storage_call",
    "token_state",
]

OPPORTUNISTIC_QUIET = 30.0
"""Seconds without a new attempt after a failed opportunistic refresh."""
TRANSIENT_COOLDOWN = 5.0
"""Minimum cool-down after a transient refresh failure (the server's wait wins when longer)."""
AUTH_COOLDOWN = 86400.0
"""Cool-down after a re-login failure; the next save (a login) clears it."""
CONFIG_COOLDOWN = 60.0
"""Cool-down after a configuration failure."""

LOGIN_HINT = "run %copilot login to sign in"
_LOG = logging.getLogger("saga.auth")
_Kind = Literal["authentication", "configuration", "transient", "rate_limit"]
T = TypeVar("T")


class TokenState(NamedTuple):
    """What the manager needs to know about one access token."""

    access_token: str
    """The bearer token."""
    expires_at: float
    """Earlier of the stored ``expires_at`` and the JWT ``exp``; ``-inf`` when neither."""
    refresh_at: float
    """When to refresh: ``expires_at - buffer``, or the server's ``refresh_in`` time if earlier."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _state(access_token: str, expires_at: object, refresh_at: object, buffer: float) -> TokenState:
    known = [t for t in (_number(expires_at), jwt_exp(access_token)) if t is not None]
    expiry = min(known) if known else -math.inf
    refresh = expiry - buffer
    server_refresh_at = _number(refresh_at)
    if server_refresh_at is not None:
        refresh = min(refresh, server_refresh_at)
    return TokenState(access_token, expiry, refresh)


def token_state(stored: Mapping[str, Any] | None, *, buffer: float) -> TokenState | None:
    """Read a stored token set's expiry defensively.

    Args:
        stored: The store's dict, or ``None``.
        buffer: Seconds before expiry at which to refresh.

    Returns:
        The state, or ``None`` when there is no usable ``access_token``.
    """
    if stored is None:
        return None
    access_token = stored.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        return None
    return _state(access_token, stored.get("expires_at"), stored.get("refresh_at"), buffer)


def grant_state(grant: TokenGrant, *, buffer: float) -> TokenState:
    """Return the state of a freshly issued token.

    Args:
        grant: The token endpoint's answer.
        buffer: Seconds before expiry at which to refresh.

    Returns:
        Its state (expiry capped by the JWT ``exp``).
    """
    return _state(grant.access_token, grant.expires_at, grant.refresh_at, buffer)


def cooldown_error(cooldown: RefreshCooldown, now: float) -> ArcSagaException:
    """Turn a recorded cool-down into the same kind of error the failed refresh raised.

    Args:
        cooldown: The cool-down in force.
        now: Current unix time.

    Returns:
        AuthenticationError, ConfigurationError, RateLimitError or TransientError (the last two
        with ``retry_after`` = seconds left in the cool-down).
    """
    message = f"a recent token refresh failed: {cooldown.message}"
    remaining = max(cooldown.until - now, 0.0)
    if cooldown.error_kind == "authentication":
        return AuthenticationError(message, code="cooldown", hint=LOGIN_HINT)
    if cooldown.error_kind == "configuration":
        return ConfigurationError(message, code="cooldown", hint="check the Azure settings")
    cls = RateLimitError if cooldown.error_kind == "rate_limit" else TransientError
    hint = f"try again in {remaining:.0f} s"
    return cls(message, code="cooldown", retry_after=remaining, hint=hint)


def _cooldown_for(error: ArcSagaException, now: float) -> RefreshCooldown:
    kind: _Kind
    if isinstance(error, TransientError):
        kind = "rate_limit" if isinstance(error, RateLimitError) else "transient"
        until = now + max(TRANSIENT_COOLDOWN, error.retry_after or 0.0)
    elif isinstance(error, AuthenticationError):
        kind, until = "authentication", now + AUTH_COOLDOWN
    else:
        kind, until = "configuration", now + CONFIG_COOLDOWN
    retry_after = getattr(error, "retry_after", None)
    return RefreshCooldown(
        until=until, error_kind=kind, message=error.message, retry_after=retry_after
    )


@dataclass
class LocalCoordinator:
    """In-process stand-in for stores that do not coordinate refreshes across processes."""

    cooldowns: dict[str, RefreshCooldown] = field(default_factory=dict)
    """Cool-downs by user."""

    async def try_acquire_lease(self, user_id: str, *, owner: str, ttl: float, now: float) -> bool:
        """Always True: the in-process single flight already allows one refresh per user."""
        return True

    async def release_lease(self, user_id: str, *, owner: str) -> None:
        """Nothing to release."""

    async def token_version(self, user_id: str) -> int | None:
        """Unknown (``None``): nobody else writes behind our back in-process."""
        return None

    async def get_cooldown(self, user_id: str, *, now: float) -> RefreshCooldown | None:
        """Return the cool-down of ``user_id`` still in force at ``now``."""
        cooldown = self.cooldowns.get(user_id)
        return cooldown if cooldown is not None and cooldown.until > now else None

    async def set_cooldown(self, user_id: str, cooldown: RefreshCooldown | None) -> None:
        """Record or clear (``None``) a cool-down."""
        if cooldown is None:
            self.cooldowns.pop(user_id, None)
        else:
            self.cooldowns[user_id] = cooldown

    async def set_relogin_required(self, user_id: str, required: bool) -> None:
        """Nothing to record: a plain store has no flag."""


@dataclass(eq=False)
class _Flight:
    task: asyncio.Task[str]
    forced: bool
    waiters: int = 0


class TokenRefresher:
    """Refreshes tokens for the manager and keeps its in-memory cache.

    ``cache`` maps user id -> ``(refresh_at, access_token, expires_at)``; the manager's hot path
    reads it directly. All arguments come from the manager, already validated.
    """

    def __init__(
        self,
        store: IEncryptedStore,
        entra: EntraClient,
        *,
        policy: RetryPolicy,
        buffer: float,
        deadline: float,
        lease_ttl: float,
        lease_poll_interval: float,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self.store = store
        """The token store."""
        self.coordinator: IRefreshCoordinator = (
            store if isinstance(store, IRefreshCoordinator) else LocalCoordinator()
        )
        """The store itself when it coordinates processes, else a :class:`LocalCoordinator`."""
        self.cache: dict[str, tuple[float, str, float]] = {}
        """User id -> (refresh_at, access_token, expires_at)."""
        self._entra = entra
        self._policy = policy
        self._single_attempt = RetryPolicy(
            max_retries=0, backoff_base=policy.backoff_base, jitter=policy.jitter
        )
        self._buffer = buffer
        self._deadline = deadline
        self._lease_ttl = lease_ttl
        self._poll_interval = lease_poll_interval
        self._clock = clock
        self._sleep = sleep
        self._flights: dict[str, _Flight] = {}

    # -- single flight ----------------------------------------------------------------------

    async def join(self, user_id: str, *, force: bool, rejected: str | None) -> tuple[str, bool]:
        """Await the user's refresh in flight, starting one if there is none.

        Args:
            user_id: Whose token.
            force: Refresh even if the stored token is not due (a rejected token).
            rejected: The token the API refused (``force`` only).

        Returns:
            The token, and whether the flight joined was a forced one.
        """
        flight = self._flights.get(user_id)
        if flight is None or flight.task.done():  # done: its callback has not run yet
            task = asyncio.ensure_future(self._flow(user_id, new_op_id(), force, rejected))
            flight = self._flights[user_id] = _Flight(task, force)

            def done(_: object, *, user: str = user_id, mine: _Flight = flight) -> None:
                if self._flights.get(user) is mine:
                    del self._flights[user]

            task.add_done_callback(done)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), flight.forced
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # every caller left: nobody wants this refresh any more

    async def cancel_all(self) -> None:
        """Cancel every refresh in flight and wait for them to end."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the flow ---------------------------------------------------------------------------

    def _usable(self, state: TokenState, *, force: bool, rejected: str | None) -> bool:
        now = self._clock()
        if force:
            return state.access_token != rejected and now < state.expires_at
        return now < state.refresh_at

    def remember(self, user_id: str, state: TokenState, *, until: float | None = None) -> str:
        """Cache ``state`` (until its refresh time, or ``until`` capped at its expiry).

        Args:
            user_id: Whose token.
            state: The token.
            until: Serve it from memory until then instead (a quiet period).

        Returns:
            The access token.
        """
        refresh_at = state.refresh_at if until is None else min(until, state.expires_at)
        self.cache[user_id] = (refresh_at, state.access_token, state.expires_at)
        return state.access_token

    async def _reuse_stored(self, user_id: str, *, force: bool, rejected: str | None) -> str | None:
        state = token_state(await self.read(user_id), buffer=self._buffer)
        if state is not None and self._usable(state, force=force, rejected=rejected):
            return self.remember(user_id, state)
        return None

    async def _flow(self, user_id: str, op_id: str, force: bool, rejected: str | None) -> str:
        stored = await self.read(user_id)
        if stored is None:
            _emit(logging.WARNING, "token_refresh_failed_auth", user_id, op_id, code="no_token")
            raise AuthenticationError(f"no token is stored for user {user_id!r}", hint=LOGIN_HINT)
        state = token_state(stored, buffer=self._buffer)
        if force and rejected is None and state is not None:
            rejected = state.access_token  # refresh regardless: only a different token will do
        if state is not None and self._usable(state, force=force, rejected=rejected):
            return self.remember(user_id, state)
        now = self._clock()
        # Opportunistic when the token in hand is still valid: a failure must not hurt then.
        valid = None if force or state is None or now >= state.expires_at else state
        coordinator = self.coordinator
        cooldown = await coordinator.get_cooldown(user_id, now=now)
        if cooldown is not None:
            if valid is not None:
                until = max(cooldown.until, now + OPPORTUNISTIC_QUIET)
                return self.remember(user_id, valid, until=until)
            raise cooldown_error(cooldown, now)
        owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        deadline_at = now + self._deadline
        version = await coordinator.token_version(user_id)
        while not await coordinator.try_acquire_lease(
            user_id, owner=owner, ttl=self._lease_ttl, now=self._clock()
        ):
            if valid is not None:  # another process is refreshing; ours is still good
                return self.remember(user_id, valid, until=now + OPPORTUNISTIC_QUIET)
            if self._clock() >= deadline_at:
                raise TransientError(
                    "another process is refreshing the token and did not finish in time",
                    code="lease_timeout",
                )
            await self._sleep(self._poll_interval)
            current = await coordinator.token_version(user_id)
            if current != version:
                version = current
                token = await self._reuse_stored(user_id, force=force, rejected=rejected)
                if token is not None:
                    return token
            cooldown = await coordinator.get_cooldown(user_id, now=self._clock())
            if cooldown is not None:
                raise cooldown_error(cooldown, self._clock())
        try:
            token = await self._reuse_stored(user_id, force=force, rejected=rejected)
            if token is not None:
                return token
            if force:
                reason = "forced"
            elif state is None:
                reason = "missing"
            else:
                reason = "expiring" if valid is not None else "expired"
            return await self._lead(
                user_id, op_id, owner=owner, valid=valid, reason=reason, deadline_at=deadline_at
            )
        finally:
            with contextlib.suppress(Exception):  # the lease also ends by itself after its TTL
                await coordinator.release_lease(user_id, owner=owner)

    async def _lead(
        self,
        user_id: str,
        op_id: str,
        *,
        owner: str,
        valid: TokenState | None,
        reason: str,
        deadline_at: float,
    ) -> str:
        # One budget for the whole call: time spent waiting for a lease counts against it.
        started = self._clock()
        policy = self._policy if valid is None else self._single_attempt
        attempts = 0
        _emit(
            logging.INFO,
            "token_refresh_start",
            user_id,
            op_id,
            reason=reason,
            opportunistic=valid is not None,
            max_attempts=policy.max_attempts,
        )

        async def attempt(number: int) -> TokenGrant:
            nonlocal attempts
            attempts = number
            stored = await self.read(user_id)  # the refresh token, fresh from the store
            refresh_token = stored.get("refresh_token") if stored is not None else None
            if not isinstance(refresh_token, str) or not refresh_token:
                raise AuthenticationError(
                    f"no refresh token is stored for user {user_id!r}", hint=LOGIN_HINT
                )
            return await self._entra.refresh(refresh_token, budget=deadline_at - self._clock())

        async def renewing_sleep(seconds: float) -> None:
            with contextlib.suppress(Exception):  # best effort: the lease outlives one attempt
                await self.coordinator.try_acquire_lease(
                    user_id, owner=owner, ttl=seconds + self._lease_ttl, now=self._clock()
                )
            await self._sleep(seconds)

        def on_retry(event: RetryEvent) -> None:
            _emit(
                logging.WARNING,
                "token_refresh_retry",
                user_id,
                op_id,
                attempt=event.attempt,
                max_attempts=event.max_attempts,
                wait_s=round(event.wait_s, 3),
                next_attempt_at=event.next_attempt_at,
                reason=event.reason,
                **error_fields(event.error),
            )

        try:
            grant = await policy.run(
                attempt,
                deadline_at=deadline_at,
                clock=self._clock,
                sleep=renewing_sleep,
                on_retry=on_retry,
            )
        except (AuthenticationError, ConfigurationError, TransientError) as error:
            until = await self._record_failure(user_id, op_id, error, opportunistic=bool(valid))
            if valid is None:
                raise
            until = max(self._clock() + OPPORTUNISTIC_QUIET, until)
            return self.remember(user_id, valid, until=until)
        await self.persist(user_id, op_id, grant)
        state = grant_state(grant, buffer=self._buffer)
        _emit(
            logging.INFO,
            "token_refresh_success",
            user_id,
            op_id,
            attempts=attempts,
            expires_at=state.expires_at,
            duration_s=round(self._clock() - started, 3),
            request_id=grant.request_id,
            opportunistic=valid is not None,
        )
        return self.remember(user_id, state)

    async def _record_failure(
        self, user_id: str, op_id: str, error: ArcSagaException, *, opportunistic: bool
    ) -> float:
        cooldown = _cooldown_for(error, self._clock())
        relogin = isinstance(error, AuthenticationError) and error.status is not None
        auth = isinstance(error, AuthenticationError)
        _emit(
            logging.WARNING if opportunistic else logging.ERROR,
            "token_refresh_failed_auth" if auth else "token_refresh_failed",
            user_id,
            op_id,
            opportunistic=opportunistic,
            relogin_required=relogin,
            **error_fields(error),
        )
        # Best effort: a failing store must never mask the refresh error.
        if relogin:
            with contextlib.suppress(Exception):
                await self.coordinator.set_relogin_required(user_id, True)
        with contextlib.suppress(Exception):
            await self.coordinator.set_cooldown(user_id, cooldown)
        return cooldown.until

    # -- store access -----------------------------------------------------------------------

    async def persist(self, user_id: str, op_id: str, grant: TokenGrant) -> None:
        """Save ``grant`` in one ``save_token`` call; on failure drop it from memory too.

        Args:
            user_id: Whose token.
            op_id: Operation id for the events.
            grant: The new token set.

        Raises:
            TokenPersistenceError: the store refused it (the storage error is chained).
        """
        try:
            await self.store.save_token(user_id, grant.to_record())
        except Exception as exc:
            self.cache.pop(user_id, None)
            _emit(
                logging.ERROR, "token_persistence_failed", user_id, op_id, error=type(exc).__name__
            )
            raise TokenPersistenceError(
                "a new token was issued but could not be saved; it was discarded",
                request_id=grant.request_id,
                hint="check the token store (disk, permissions, key), then try again",
            ) from exc
        _emit(logging.INFO, "token_stored", user_id, op_id, expires_at=grant.expires_at)

    async def read(self, user_id: str) -> dict[str, Any] | None:
        """Read ``user_id``'s token set from the store.

        Raises:
            TokenStorageError: the store failed (other exceptions are wrapped).
        """
        return await storage_call(self.store.get_token(user_id), "read")


async def storage_call(call: Awaitable[T], action: str) -> T:
    """Await a store call; wrap unexpected exceptions in :class:`TokenStorageError`.

    Args:
        call: The store coroutine.
        action: Verb for the message (``read``, ``delete``, ...).

    Returns:
        What the call returned.

    Raises:
        ArcSagaException: as raised by the store.
        TokenStorageError: any other exception, chained.
    """
    try:
        return await call
    except ArcSagaException:
        raise
    except Exception as exc:
        raise TokenStorageError(
            f"could not {action} the token store ({type(exc).__name__})"
        ) from exc


def error_fields(error: ArcSagaException) -> dict[str, Any]:
    """Return an error's class name, message and context fields, for events."""
    return {"error": type(error).__name__, "message": error.message, **error.context()}


def _emit(level: int, event: str, user_id: str, op_id: str, **context: Any) -> None:
    log_with_context(_LOG, level, event, user_id=user_id, op_id=op_id, **context)
