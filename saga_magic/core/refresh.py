"""Refreshing one user's token: single flight in the process, a lease across processes.

The engine room of :class:`~saga_magic.core.auth.EntraIDAuthManager` (which owns the hot path and
the public API). Per user::

    one task in flight per user; every caller awaits it (a caller that leaves does not cancel it
    unless it was the last one; a caller arriving after that starts a new flight)
      read the store -> a usable token? cache it, done (another process refreshed)
      a new token could not be saved moments ago? raise TokenPersistenceError, no POST
      cool-down recorded by a failed refresh? raise the same kind of error, no POST
      take the refresh lease, or wait for its holder (one refresh_deadline bounds the whole call):
          read-only check of the holder; write (take it) only when it looks free;
          token version changed -> use the stored token; cool-down -> raise
      re-read the store and the cool-down under the lease (another process may just have
      saved, or failed)
      POST the refresh_token grant through RetryPolicy (refresh token re-read before each attempt;
      the lease is renewed before each wait: lost to another process -> stop, wait for it)
      save access + refresh token in one save_token call -> cache -> return
      on failure: record a cool-down, flag re-login on invalid_grant (never delete the RT)
      release the lease (always, once we tried to take it; even when cancelled)

Opportunistic refresh (the token in hand is inside the buffer but not expired): one attempt, no
backoff. On any refresh failure (transient, re-login, configuration) the still-valid token is
returned and cached for :data:`OPPORTUNISTIC_QUIET` seconds (longer when a cool-down says so),
never past its expiry; the failure is still recorded (event, cool-down, re-login flag). Storage
errors raise. When another process holds the lease, the valid token is returned at once.

Cool-downs: transient ``max(5 s, retry_after)``; re-login 24 h (the next save, i.e. a login,
clears it); configuration 60 s, so a corrected setting in a restarted process is not locked out
for long. A store without :class:`IRefreshCoordinator` gets an in-process equivalent. A token that
was issued but could not be saved starts an in-memory :data:`PERSIST_COOLDOWN`, so callers fail
fast instead of minting (and discarding) a new token each.
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
from typing import Any, TypeVar

from .entra import EntraClient, TokenGrant
from .errors import (
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
from .events import log_with_context, new_op_id
from .jwt import finite_float, jwt_exp
from .protocols import CooldownKind, IEncryptedStore, IRefreshCoordinator, RefreshCooldown
from .retry import Clock, RetryEvent, RetryPolicy, Sleep

__all__ = [
    "AUTH_COOLDOWN",
    "CONFIG_COOLDOWN",
    "OPPORTUNISTIC_QUIET",
    "PERSIST_COOLDOWN",
    "TRANSIENT_COOLDOWN",
    "LocalCoordinator",
    "TokenRefresher",
    "TokenState",
    "cooldown_error",
    "emit",
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
PERSIST_COOLDOWN = 5.0
"""Seconds, in this process, without a new refresh after a new token could not be saved."""

LOGIN_HINT = "run %copilot login to sign in"
_LOG = logging.getLogger("saga.auth")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the manager needs to know about one access token (the token is kept out of repr)."""

    access_token: str = field(repr=False)
    """The bearer token (secret)."""
    expires_at: float
    """Earlier of the stored ``expires_at`` and the JWT ``exp``; ``-inf`` when neither."""
    refresh_at: float
    """When to refresh: ``expires_at - buffer``, or the server's ``refresh_in`` time if earlier."""


def _state(access_token: str, expires_at: object, refresh_at: object, buffer: float) -> TokenState:
    known = [t for t in (finite_float(expires_at), jwt_exp(access_token)) if t is not None]
    expiry = min(known) if known else -math.inf
    refresh = expiry - buffer
    server_refresh_at = finite_float(refresh_at)
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

    The error's ``code`` is ``"cooldown"`` (no request was made); its ``status`` is the
    leader's, and the leader's own code is named in the message.

    Args:
        cooldown: The cool-down in force.
        now: Current unix time.

    Returns:
        AuthenticationError or PermissionDeniedError, ConfigurationError, or (with
        ``retry_after`` = seconds left in the cool-down) RateLimitError, RequestTimeoutError or
        TransientError.
    """
    detail = cooldown.message
    if cooldown.code and cooldown.code not in detail:
        detail = f"{cooldown.code}: {detail}"
    message = f"a recent token refresh failed: {detail}"
    remaining = max(cooldown.until - now, 0.0)
    kind, status = cooldown.error_kind, cooldown.status
    if kind in ("authentication", "permission"):
        auth = PermissionDeniedError if kind == "permission" else AuthenticationError
        return auth(message, status=status, code="cooldown", hint=LOGIN_HINT)
    if kind == "configuration":
        return ConfigurationError(
            message, status=status, code="cooldown", hint="check the Azure settings"
        )
    transient = _TRANSIENT_KINDS.get(kind, TransientError)
    hint = f"try again in {remaining:.0f} s"
    return transient(message, status=status, code="cooldown", retry_after=remaining, hint=hint)


_TRANSIENT_KINDS: dict[str, type[TransientError]] = {
    "rate_limit": RateLimitError,
    "timeout": RequestTimeoutError,
}


def _cooldown_for(error: ArcSagaException, now: float) -> RefreshCooldown:
    kind: CooldownKind
    retry_after = None
    if isinstance(error, TransientError):
        if isinstance(error, RateLimitError):
            kind = "rate_limit"
        elif isinstance(error, RequestTimeoutError):
            kind = "timeout"
        else:
            kind = "transient"
        retry_after = error.retry_after
        until = now + max(TRANSIENT_COOLDOWN, retry_after or 0.0)
    elif isinstance(error, AuthenticationError):
        kind = "permission" if isinstance(error, PermissionDeniedError) else "authentication"
        until = now + AUTH_COOLDOWN
    else:
        kind, until = "configuration", now + CONFIG_COOLDOWN
    return RefreshCooldown(
        until=until,
        error_kind=kind,
        message=error.message,
        retry_after=retry_after,
        status=error.status,
        code=error.code,
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

    async def lease_holder(self, user_id: str, *, now: float) -> str | None:
        """Always ``None``: there is no lease to hold."""
        return None

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
    abandoned: bool = False  # cancelled: whoever comes next starts a new flight
    signed_out: bool = False  # cancelled by logout: its callers get AuthenticationError


@dataclass(eq=False)
class _Lease:
    owner: str
    version: int | None
    tried: bool = False  # a take was attempted (maybe committed): release it in the end


class _LeaseLost(Exception):
    """Renewing the lease failed: another process took it over while we refreshed."""


class TokenRefresher:
    """Refreshes tokens for the manager and keeps its in-memory cache.

    ``cache`` maps user id -> ``(refresh_at, access_token)``; the manager's hot path reads it
    directly. All arguments come from the manager, already validated.
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
        self.cache: dict[str, tuple[float, str]] = {}
        """User id -> (refresh_at, access_token)."""
        self.buffer = buffer
        """Seconds before expiry at which a token is refreshed."""
        self.deadline = deadline
        """Seconds one refresh (attempts, waits, lease waits) may take."""
        self._entra = entra
        self._policy = policy
        self._single_attempt = RetryPolicy(
            max_retries=0, backoff_base=policy.backoff_base, jitter=policy.jitter
        )
        self._lease_ttl = lease_ttl
        self._poll_interval = lease_poll_interval
        self._clock = clock
        self._sleep = sleep
        self._flights: dict[str, _Flight] = {}
        self._tasks: set[asyncio.Task[str]] = set()
        self._persist_failed: dict[str, float] = {}

    # -- single flight ----------------------------------------------------------------------

    async def join(
        self, user_id: str, *, force: bool, rejected: str | None, op_id: str | None = None
    ) -> tuple[str, bool]:
        """Await the user's refresh in flight, starting one if there is none.

        Args:
            user_id: Whose token.
            force: Refresh even if the stored token is not due (a rejected token).
            rejected: The token the API refused (``force`` only).
            op_id: Operation id for the events of a refresh started here (a new one if
                ``None``); a joined refresh keeps its own.

        Returns:
            The token, and whether the flight joined was a forced one.

        Raises:
            AuthenticationError: as the refresh raised, or the user signed out meanwhile.
        """
        flight = self._flights.get(user_id)
        if flight is None or flight.abandoned or flight.task.done() or flight.task.cancelling():
            # done: its callback has not run yet; cancelled: it ends without a token.
            flight = self._start(user_id, op_id or new_op_id(), force, rejected)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), flight.forced
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if flight.signed_out and not (me and me.cancelling()):
                raise AuthenticationError(
                    f"user {user_id!r} signed out while the token was being refreshed",
                    code="signed_out",
                    hint=LOGIN_HINT,
                ) from None
            raise
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.abandoned = True  # every caller left: nobody wants this refresh any more
                flight.task.cancel()

    def _start(self, user_id: str, op_id: str, force: bool, rejected: str | None) -> _Flight:
        task = asyncio.ensure_future(self._flow(user_id, op_id, force, rejected))
        flight = self._flights[user_id] = _Flight(task, force)
        self._tasks.add(task)

        def done(_: object, *, user: str = user_id, mine: _Flight = flight) -> None:
            self._tasks.discard(mine.task)
            if self._flights.get(user) is mine:
                del self._flights[user]

        task.add_done_callback(done)
        return flight

    async def cancel_all(self) -> None:
        """Cancel every refresh in flight (abandoned ones included) and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sign_out(self, user_id: str) -> None:
        """Cancel ``user_id``'s refresh in flight, wait for it to end, forget the user in memory.

        Its callers get :class:`AuthenticationError` (``code="signed_out"``), so a refresh that
        was running cannot cache or hand out a token after the logout.

        Args:
            user_id: Whose refresh.
        """
        flight = self._flights.pop(user_id, None)
        if flight is not None:
            flight.signed_out = flight.abandoned = True
            flight.task.cancel()
            await asyncio.wait({flight.task})
        self.forget(user_id)

    def forget(self, user_id: str) -> None:
        """Drop ``user_id``'s cached token and in-memory cool-downs."""
        self.cache.pop(user_id, None)
        self._persist_failed.pop(user_id, None)
        if isinstance(self.coordinator, LocalCoordinator):
            self.coordinator.cooldowns.pop(user_id, None)

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
        self.cache[user_id] = (refresh_at, state.access_token)
        return state.access_token

    async def _reuse_stored(self, user_id: str, *, force: bool, rejected: str | None) -> str | None:
        state = token_state(await self.read(user_id), buffer=self.buffer)
        if state is not None and self._usable(state, force=force, rejected=rejected):
            return self.remember(user_id, state)
        return None

    def _cooled(self, user_id: str, cooldown: RefreshCooldown, valid: TokenState | None) -> str:
        """Serve the still-valid token through a cool-down, or raise the cool-down's error."""
        now = self._clock()
        if valid is None:
            raise cooldown_error(cooldown, now)
        return self.remember(user_id, valid, until=max(cooldown.until, now + OPPORTUNISTIC_QUIET))

    def _check_persistence(self, user_id: str, now: float) -> None:
        until = self._persist_failed.get(user_id)
        if until is not None and now < until:
            raise TokenPersistenceError(
                "a token refreshed moments ago could not be saved; not refreshing again yet",
                code="cooldown",
                hint=(
                    "check the token store (disk, permissions, key); "
                    f"try again in {until - now:.0f} s"
                ),
            )

    async def _flow(self, user_id: str, op_id: str, force: bool, rejected: str | None) -> str:
        stored = await self.read(user_id)
        if stored is None:
            emit(logging.WARNING, "token_refresh_failed_auth", user_id, op_id, code="no_token")
            raise AuthenticationError(f"no token is stored for user {user_id!r}", hint=LOGIN_HINT)
        state = token_state(stored, buffer=self.buffer)
        if force and rejected is None and state is not None:
            rejected = state.access_token  # refresh regardless: only a different token will do
        if state is not None and self._usable(state, force=force, rejected=rejected):
            return self.remember(user_id, state)
        now = self._clock()
        # Opportunistic when the token in hand is still valid: a failure must not hurt then.
        valid = None if force or state is None or now >= state.expires_at else state
        self._check_persistence(user_id, now)
        coordinator = self.coordinator
        cooldown = await coordinator.get_cooldown(user_id, now=now)
        if cooldown is not None:
            return self._cooled(user_id, cooldown, valid)
        if force:
            reason = "forced"
        elif state is None:
            reason = "missing"
        else:
            reason = "expiring" if valid is not None else "expired"
        deadline_at = now + self.deadline
        owner = f"{os.getpid()}-{secrets.token_hex(6)}"
        lease = _Lease(owner, await coordinator.token_version(user_id))
        try:
            while True:
                token = await self._acquire(
                    user_id,
                    lease,
                    valid=valid,
                    force=force,
                    rejected=rejected,
                    deadline=deadline_at,
                )
                if token is not None:
                    return token
                # Under the lease: another process may just have saved, or failed.
                token = await self._reuse_stored(user_id, force=force, rejected=rejected)
                if token is not None:
                    return token
                cooldown = await coordinator.get_cooldown(user_id, now=self._clock())
                if cooldown is not None:
                    return self._cooled(user_id, cooldown, valid)
                try:
                    return await self._lead(
                        user_id,
                        op_id,
                        owner=owner,
                        valid=valid,
                        reason=reason,
                        deadline_at=deadline_at,
                    )
                except _LeaseLost:
                    # Our lease lapsed and another process holds it now: one leader only. End
                    # our attempt (the event closes its retries) and wait for it like a waiter.
                    emit(
                        logging.WARNING,
                        "token_refresh_failed",
                        user_id,
                        op_id,
                        code="lease_lost",
                        message="another process took over the refresh; waiting for it",
                        opportunistic=False,
                    )
        finally:
            if lease.tried:  # the lease also ends by itself after its TTL
                with contextlib.suppress(Exception):
                    # Shielded: a cancelled refresh still releases (the take may have committed).
                    await asyncio.shield(coordinator.release_lease(user_id, owner=owner))

    async def _acquire(
        self,
        user_id: str,
        lease: _Lease,
        *,
        valid: TokenState | None,
        force: bool,
        rejected: str | None,
        deadline: float,
    ) -> str | None:
        """Take the lease (``None``) or return a token that made taking it unnecessary."""
        coordinator = self.coordinator
        while True:
            # A read-only look first: waiters do not queue for the database's write lock.
            holder = await coordinator.lease_holder(user_id, now=self._clock())
            if holder in (None, lease.owner):
                lease.tried = True
                taken = await coordinator.try_acquire_lease(
                    user_id, owner=lease.owner, ttl=self._lease_ttl, now=self._clock()
                )
                if taken:
                    return None
            if valid is not None:  # another process is refreshing; ours is still good
                return self.remember(user_id, valid, until=self._clock() + OPPORTUNISTIC_QUIET)
            if self._clock() >= deadline:
                raise TransientError(
                    "another process is refreshing the token and did not finish in time",
                    code="lease_timeout",
                )
            await self._sleep(self._poll_interval)
            current = await coordinator.token_version(user_id)
            if current != lease.version:
                lease.version = current
                token = await self._reuse_stored(user_id, force=force, rejected=rejected)
                if token is not None:
                    return token
            cooldown = await coordinator.get_cooldown(user_id, now=self._clock())
            if cooldown is not None:
                raise cooldown_error(cooldown, self._clock())

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
        emit(
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
            renewed = True
            with contextlib.suppress(Exception):  # best effort: the lease outlives one attempt
                renewed = await self.coordinator.try_acquire_lease(
                    user_id, owner=owner, ttl=seconds + self._lease_ttl, now=self._clock()
                )
            if not renewed:  # our lease expired and another process holds it: two leaders
                raise _LeaseLost
            await self._sleep(seconds)

        def on_retry(event: RetryEvent) -> None:
            emit(
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
        state = grant_state(grant, buffer=self.buffer)
        emit(
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
        emit(
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

        A failure also starts :data:`PERSIST_COOLDOWN`: refreshes in that time raise at once
        instead of minting a token that cannot be kept. A success clears in-memory cool-downs
        (the store clears its own).

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
            self._persist_failed[user_id] = self._clock() + PERSIST_COOLDOWN
            emit(
                logging.ERROR, "token_persistence_failed", user_id, op_id, error=type(exc).__name__
            )
            raise TokenPersistenceError(
                "a new token was issued but could not be saved; it was discarded",
                request_id=grant.request_id,
                hint="check the token store (disk, permissions, key), then try again",
            ) from exc
        self._persist_failed.pop(user_id, None)
        if isinstance(self.coordinator, LocalCoordinator):
            self.coordinator.cooldowns.pop(user_id, None)  # as a store's save clears its own
        emit(logging.INFO, "token_stored", user_id, op_id, expires_at=grant.expires_at)

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


def emit(level: int, event: str, user_id: str, op_id: str, **context: Any) -> None:
    """Log an auth event (logger ``saga.auth``) through :func:`~.events.log_with_context`.

    Args:
        level: A ``logging`` level.
        event: The event name.
        user_id: Whose token.
        op_id: The operation id.
        **context: Event fields (redacted by the events module).
    """
    log_with_context(_LOG, level, event, user_id=user_id, op_id=op_id, **context)
