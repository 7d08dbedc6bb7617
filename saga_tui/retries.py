"""Follow in-flight operations through their retry events (a pure model, no widgets)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saga_magic.core.events import Event

__all__ = ["RETRY_EVENTS", "TERMINAL_EVENTS", "RetryState", "RetryTracker"]

RETRY_EVENTS: dict[str, str] = dict(
    zip(("token_refresh_retry", "copilot_retry"), ("token refresh", "chat request"), strict=True)
)
"""Retry event name -> what kind of operation it belongs to."""

_SUCCEEDED = (
    "token_refresh_success",
    "copilot_request_complete",
    "copilot_stream_complete",
    "login_complete",
)
_FAILED = (
    "token_refresh_failed_auth",
    "token_refresh_failed",
    "token_persistence_failed",
    "copilot_error",
    "copilot_auth_failed",
    "login_failed",
)
TERMINAL_EVENTS: dict[str, bool] = dict.fromkeys(_SUCCEEDED, True) | dict.fromkeys(_FAILED, False)
"""Event names that end an operation -> whether it succeeded."""


def _number(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


@dataclass(slots=True)
class RetryState:
    """What the Retries panel shows for one operation."""

    op_id: str
    """The operation's id (one per ``get_valid_token`` / ``reason`` call)."""
    kind: str
    """``token refresh`` or ``chat request``."""
    user_id: str | None
    """Whose operation it is."""
    attempt: int
    """Number of the attempt that failed last."""
    max_attempts: int
    """Attempts the policy allows."""
    wait_s: float
    """Length of the current wait."""
    next_attempt_at: float
    """Unix time of the next attempt."""
    reason: str
    """Why the last attempt failed (``429``, ``503``, ``timeout``...)."""
    outcome: str | None = None
    """``None`` while in flight, then ``succeeded`` or ``failed``."""
    ended_at: float | None = None
    """Unix time the terminal event was seen."""

    def remaining(self, now: float) -> float:
        """Seconds left before the next attempt (never negative).

        Args:
            now: The current unix time.

        Returns:
            The wait still ahead.
        """
        return max(0.0, self.next_attempt_at - now)

    def elapsed_fraction(self, now: float) -> float:
        """How much of the current wait has passed, from 0 to 1.

        Args:
            now: The current unix time.

        Returns:
            The fraction (1 when the wait is over or the operation ended).
        """
        if self.outcome is not None or self.wait_s <= 0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.remaining(now) / self.wait_s))


class RetryTracker:
    """Turn a stream of events into one :class:`RetryState` per operation with retries.

    Args:
        linger: Seconds a finished operation stays listed (marked done) before it is dropped.
    """

    def __init__(self, *, linger: float = 10.0) -> None:
        self.linger = linger
        self._ops: dict[str, RetryState] = {}

    @property
    def states(self) -> list[RetryState]:
        """The tracked operations, oldest first."""
        return list(self._ops.values())

    def get(self, op_id: str) -> RetryState | None:
        """Return the state of one operation.

        Args:
            op_id: The operation id.

        Returns:
            Its state, or ``None`` when it is not tracked.
        """
        return self._ops.get(op_id)

    def apply(self, events: Iterable[Event]) -> bool:
        """Fold events into the tracked states.

        Args:
            events: Events in arrival order.

        Returns:
            True when anything changed.
        """
        changed = False
        for event in events:
            if event.op_id is None:
                continue
            kind = RETRY_EVENTS.get(event.event)
            if kind is not None:
                self._ops[event.op_id] = self._state_from_retry(event, kind)
                changed = True
                continue
            success = TERMINAL_EVENTS.get(event.event)
            state = self._ops.get(event.op_id)
            if success is None or state is None or state.outcome is not None:
                continue
            state.outcome = "succeeded" if success else "failed"
            state.ended_at = event.ts
            changed = True
        return changed

    def prune(self, now: float) -> bool:
        """Drop operations that ended more than ``linger`` seconds ago.

        Args:
            now: The current unix time.

        Returns:
            True when an operation was dropped.
        """
        stale = [
            op_id
            for op_id, state in self._ops.items()
            if state.ended_at is not None and now - state.ended_at >= self.linger
        ]
        for op_id in stale:
            del self._ops[op_id]
        return bool(stale)

    @staticmethod
    def _state_from_retry(event: Event, kind: str) -> RetryState:
        context = event.context
        wait_s = _number(context.get("wait_s"), 0.0)
        next_at = _number(context.get("next_attempt_at"), event.ts + wait_s)
        return RetryState(
            op_id=event.op_id or "",
            kind=kind,
            user_id=event.user_id,
            attempt=int(_number(context.get("attempt"), 0)),
            max_attempts=int(_number(context.get("max_attempts"), 0)),
            wait_s=wait_s,
            next_attempt_at=next_at,
            reason=str(context.get("reason") or "unknown"),
        )
