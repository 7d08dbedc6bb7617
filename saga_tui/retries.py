"""Follow in-flight operations through their retry events (a pure model, no widgets).

An operation appears with its first ``*_retry`` event and ends with a terminal event of the same
``op_id`` (see :mod:`saga_tui.event_names`). Some operations never send one: a prompt the TUI
cancelled, a process that died mid-wait. So an operation with no news for ``grace`` seconds past
its next attempt is marked ``unknown`` and, like a finished one, dropped ``linger`` seconds later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .event_names import ends_operation, retry_kind

if TYPE_CHECKING:
    from saga_magic.core.events import Event

__all__ = ["RetryState", "RetryTracker"]

UNKNOWN = "unknown"
"""Outcome of an operation that went silent (no event ``grace`` seconds past its next attempt)."""


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
    """``token refresh``, ``chat request`` or ``device code``."""
    user_id: str | None
    """Whose operation it is."""
    attempt: int
    """Number of the attempt that failed last (the one that ended it, once ended)."""
    max_attempts: int
    """Attempts the policy allows."""
    wait_s: float
    """Length of the current wait."""
    next_attempt_at: float
    """Unix time of the next attempt."""
    reason: str
    """Why the last attempt failed (``429``, ``503``, ``timeout``...)."""
    pid: int = 0
    """The process the operation runs in."""
    started_at: float = 0.0
    """Unix time of its first retry event."""
    last_seen: float = 0.0
    """Unix time of its newest event."""
    outcome: str | None = None
    """``None`` while in flight, then ``succeeded``, ``failed`` or ``unknown`` (went silent)."""
    ended_at: float | None = None
    """Unix time the operation was seen to end (or was given up on)."""

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
        grace: Seconds past its next attempt an operation may stay silent before it is marked
            ``unknown`` (an attempt may run this long: the engine's request timeout is 60 s).
    """

    def __init__(self, *, linger: float = 10.0, grace: float = 90.0) -> None:
        self.linger = linger
        self.grace = grace
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
            kind = retry_kind(event.event)
            if kind is not None:
                previous = self._ops.get(event.op_id)
                state = self._state_from_retry(event, kind)
                if previous is not None:
                    state.started_at = previous.started_at
                self._ops[event.op_id] = state
                changed = True
                continue
            current = self._ops.get(event.op_id)
            if current is None or current.outcome is not None:
                continue
            state = current
            state.last_seen = max(state.last_seen, event.ts)
            success = ends_operation(event.event, event.context.get("code"))
            if success is None:
                continue
            state.outcome = "succeeded" if success else "failed"
            state.ended_at = event.ts
            state.attempt = self._final_attempt(state, event, success=success)
            changed = True
        return changed

    def prune(self, now: float) -> bool:
        """Give up on silent operations, and drop those that ended ``linger`` seconds ago.

        Args:
            now: The current unix time.

        Returns:
            True when an operation changed or was dropped.
        """
        changed = False
        for state in self._ops.values():
            silent_since = max(state.next_attempt_at, state.last_seen)
            if state.outcome is None and now - silent_since >= self.grace:
                state.outcome, state.ended_at, changed = UNKNOWN, now, True
        stale = [
            op_id
            for op_id, state in self._ops.items()
            if state.ended_at is not None and now - state.ended_at >= self.linger
        ]
        for op_id in stale:
            del self._ops[op_id]
        return changed or bool(stale)

    def discard(self, *, pid: int, kind: str, since: float, user_id: str | None = None) -> bool:
        """Forget in-flight operations of one process and kind that started after ``since``.

        The app calls this when it cancels its own prompt: the engine sends no terminal event for
        a cancelled call, and only one prompt of the app runs at a time.

        Args:
            pid: The process (the app's own).
            kind: The kind of operation (``"chat request"``).
            since: Unix time the cancelled call started (a little slack is allowed).
            user_id: Only this user's operations, when given.

        Returns:
            True when an operation was dropped.
        """
        gone = [
            op_id
            for op_id, state in self._ops.items()
            if state.outcome is None
            and state.pid == pid
            and state.kind == kind
            and state.started_at >= since - 1.0
            and (user_id is None or state.user_id == user_id)
        ]
        for op_id in gone:
            del self._ops[op_id]
        return bool(gone)

    @staticmethod
    def _final_attempt(state: RetryState, event: Event, *, success: bool) -> int:
        """The attempt that ended the operation: the event's ``attempts`` when it says so."""
        attempts = event.context.get("attempts")
        if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 0:
            return attempts
        if success or event.ts >= state.next_attempt_at:
            return state.attempt + 1  # the wait ended and another attempt ran
        return state.attempt  # ended during the wait (deadline, cancellation)

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
            pid=event.pid,
            started_at=event.ts,
            last_seen=event.ts,
        )
