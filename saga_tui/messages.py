"""Messages the event sources and loaders post to the app (one per batch, never one per event)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from pathlib import Path

    from saga_magic.core.events import Event
    from saga_magic.core.types import TokenInfo

    from .filters import EventFilter

__all__ = [
    "EventsBatch",
    "Exported",
    "LogEntry",
    "OlderEventsLoaded",
    "SourceStatus",
    "TokensLoaded",
]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One event as the Events panel holds it."""

    rowid: int | None
    """Journal rowid, or ``None`` for an event that came from the in-process bus."""
    event: Event
    """The (already redacted) event."""


class EventsBatch(Message):
    """New events from a source, oldest first (one message per poll or flush).

    Args:
        entries: The new entries.
    """

    def __init__(self, entries: tuple[LogEntry, ...]) -> None:
        self.entries = entries
        super().__init__()


class SourceStatus(Message):
    """The source's health; a newer status replaces a pending older one.

    Args:
        state: ``live``, ``waiting`` (journal missing) or ``error``.
        detail: Short human text (an error message, or empty).
    """

    def __init__(self, state: str, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        super().__init__()

    def can_replace(self, message: Message) -> bool:
        """Let a newer status supersede a queued one.

        Args:
            message: A queued message.

        Returns:
            True when ``message`` is also a :class:`SourceStatus`.
        """
        return isinstance(message, SourceStatus)


class TokensLoaded(Message):
    """A fresh read of the token store's clear metadata (or why it failed).

    Args:
        infos: One entry per stored user.
        error: Why the store could not be read (empty when it was).
    """

    def __init__(self, infos: tuple[TokenInfo, ...], *, error: str = "") -> None:
        self.infos = infos
        self.error = error
        super().__init__()

    def can_replace(self, message: Message) -> bool:
        """Let a newer read supersede a queued one.

        Args:
            message: A queued message.

        Returns:
            True when ``message`` is also a :class:`TokensLoaded`.
        """
        return isinstance(message, TokensLoaded)


class OlderEventsLoaded(Message):
    """A page of older events read from the journal for the history view.

    Args:
        entries: Matching entries, oldest first.
        before: The rowid the page was read before.
        next_before: The rowid to read the next page before (the oldest row scanned).
        exhausted: True when the journal holds nothing older that matches.
        event_filter: The filter the page was read with.
    """

    def __init__(
        self,
        entries: tuple[LogEntry, ...],
        *,
        before: int,
        next_before: int | None,
        exhausted: bool,
        event_filter: EventFilter,
    ) -> None:
        self.entries = entries
        self.before = before
        self.next_before = next_before
        self.exhausted = exhausted
        self.event_filter = event_filter
        super().__init__()


class Exported(Message):
    """An export finished.

    Args:
        path: The JSONL file written.
        count: Events written.
        what: The filter, described.
    """

    def __init__(self, path: Path, count: int, what: str) -> None:
        self.path = path
        self.count = count
        self.what = what
        super().__init__()
