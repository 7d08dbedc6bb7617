"""Structural interfaces between the core's parts (``typing.Protocol``, runtime-checkable).

The engine depends on :class:`ITokenProvider`, the auth manager on :class:`IEncryptedStore`
(and, when the store also offers it, :class:`IRefreshCoordinator` for cross-process
single-flight). Tests pass small doubles that satisfy these instead of monkeypatching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .types import AIResult, AITask

__all__ = [
    "CooldownKind",
    "IEncryptedStore",
    "IReasoningEngine",
    "IRefreshCoordinator",
    "ITokenProvider",
    "RefreshCooldown",
]


@runtime_checkable
class IReasoningEngine(Protocol):
    """Something that answers an :class:`AITask`."""

    async def reason(self, task: AITask) -> AIResult:
        """Answer ``task``.

        Raises:
            ArcSagaException: a subclass saying what failed.
        """
        ...

    async def close(self) -> None:
        """Release resources (HTTP clients the engine created)."""
        ...


@runtime_checkable
class IEncryptedStore(Protocol):
    """Persistent, encrypted storage of one token set per user."""

    async def get_token(self, user_id: str) -> dict[str, Any] | None:
        """Return the decrypted token set of ``user_id``, or ``None`` when there is none.

        The dict holds at least ``access_token``, ``refresh_token`` and ``expires_at``
        (unix seconds) when those were saved.

        Raises:
            TokenStorageError: the store cannot be read or decrypted.
        """
        ...

    async def save_token(self, user_id: str, token: Mapping[str, Any]) -> None:
        """Encrypt and save ``token`` for ``user_id`` in one transaction.

        ``token`` is the token endpoint's answer (``access_token``, ``refresh_token``,
        ``expires_in`` or ``expires_at``, ``scope``, ...).

        Raises:
            TokenStorageError: nothing was written.
        """
        ...


CooldownKind = Literal[
    "authentication", "configuration", "transient", "rate_limit", "timeout", "permission"
]
"""Class of a failed refresh: waiters re-raise ``AuthenticationError``, ``ConfigurationError``,
``TransientError``, ``RateLimitError``, ``RequestTimeoutError`` or ``PermissionDeniedError``."""


@dataclass(frozen=True, slots=True)
class RefreshCooldown:
    """A failed refresh, recorded so that every process waits instead of retrying at once."""

    until: float
    """Unix time before which no process should try again."""
    error_kind: CooldownKind
    """Class of the failure, so waiters raise the same kind of error as the leader."""
    message: str
    """The leader's (redacted) error message."""
    retry_after: float | None = None
    """Server-requested wait, for rate limits."""
    status: int | None = None
    """HTTP status of the leader's failure, when there was one."""
    code: str | None = None
    """The leader's error code (OAuth ``error`` such as ``invalid_grant``, or ``timeout``)."""


@runtime_checkable
class IRefreshCoordinator(Protocol):
    """Cross-process coordination of refreshes, offered by stores shared between processes.

    Times are unix seconds passed in by the caller, so the caller's clock is the only clock.
    """

    async def try_acquire_lease(self, user_id: str, *, owner: str, ttl: float, now: float) -> bool:
        """Take the refresh lease of ``user_id`` unless another live owner holds it.

        Returns:
            True when ``owner`` now holds the lease (taken, renewed, or taken over from an
            owner whose lease expired).
        """
        ...

    async def release_lease(self, user_id: str, *, owner: str) -> None:
        """Release the lease if ``owner`` holds it; otherwise do nothing."""
        ...

    async def lease_holder(self, user_id: str, *, now: float) -> str | None:
        """Return the owner of the live lease of ``user_id`` at ``now`` (read-only).

        Waiters poll this and write (:meth:`try_acquire_lease`) only when it looks free.

        Returns:
            The owner, or ``None`` when there is no lease or it expired at or before ``now``.
        """
        ...

    async def token_version(self, user_id: str) -> int | None:
        """Return a number that changes on every save of ``user_id``'s token (``None``: no row)."""
        ...

    async def get_cooldown(self, user_id: str, *, now: float) -> RefreshCooldown | None:
        """Return the cool-down in force for ``user_id`` at ``now``, if any."""
        ...

    async def set_cooldown(self, user_id: str, cooldown: RefreshCooldown | None) -> None:
        """Record (or clear, with ``None``) a cool-down for ``user_id``."""
        ...

    async def set_relogin_required(self, user_id: str, required: bool) -> None:
        """Flag (or clear) that ``user_id`` must sign in again; kept in clear metadata."""
        ...


@runtime_checkable
class ITokenProvider(Protocol):
    """Gives the engine a bearer token for a user (the auth manager implements it)."""

    async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
        """Return a non-expired access token, refreshing if needed.

        ``op_id`` (the caller's operation id) is carried by the refresh events it causes.

        Raises:
            AuthenticationError: sign-in needed.
            TransientError: the token endpoint could not be reached in the budget.
        """
        ...

    async def force_refresh(
        self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
    ) -> str:
        """Replace a token the API rejected; returns a newer stored token if there is one.

        ``op_id`` (the caller's operation id) is carried by the refresh events it causes.

        Raises:
            AuthenticationError: sign-in needed.
        """
        ...
