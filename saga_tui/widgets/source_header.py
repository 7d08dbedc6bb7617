"""The header: where the events come from, whether that source is healthy, and how fresh it is.

:class:`SourceHealth` is the pure model (tests read its text without a screen);
:class:`SourceHeader` is Textual's header showing it as the sub-title, turning to the warning
colour when the journal is missing, failing or stale. The most useful words come first (state,
then freshness); the path comes last, so a narrow terminal cuts the path, not the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.widgets import Header

from ..timefmt import format_ago

__all__ = ["SourceHeader", "SourceHealth"]


@dataclass(slots=True, kw_only=True)
class SourceHealth:
    """The event source's health, as the header tells it."""

    journal_path: Path
    """The journal followed (or written, with the in-process source)."""
    in_process: bool = False
    """Events come from this process's bus rather than from the journal."""
    stale_after: float = 300.0
    """Seconds without a new event before the source counts as stale."""
    state: str = "starting"
    """``starting``, ``live``, ``waiting`` (journal missing) or ``error``."""
    detail: str = ""
    """The error, when ``state`` is ``error``."""
    last_event_at: float | None = None
    """Unix time of the newest event seen."""
    dropped: int = 0
    """Events the in-process source dropped (its buffer was full between two drains)."""

    def describe(self, now: float) -> tuple[str, bool]:
        """Put the state in words.

        Args:
            now: The current unix time.

        Returns:
            The text (``"live · last event 2s ago · journal /path"``) and whether it is a warning.
        """
        warn = True
        if self.state == "error":
            state = f"error: {self.detail}"
        elif self.state == "waiting":
            state = "journal missing (waiting for it)"
        elif self.state == "starting":
            state, warn = "connecting…", False
        elif self.last_event_at is not None and now - self.last_event_at > self.stale_after:
            state = "stale"
        else:
            state, warn = "live", False
        last = "no events yet"
        if self.last_event_at is not None:
            last = f"last event {format_ago(self.last_event_at, now)}"
        parts = [state, last]
        if self.dropped:
            parts.append(f"{self.dropped:,} dropped")
            warn = True
        where = f"journal {self.journal_path}"
        parts.append(f"in-process · {where}" if self.in_process else where)
        return " · ".join(parts), warn


class SourceHeader(Header):
    """Textual's header, showing a :class:`SourceHealth` as the app's sub-title."""

    def show(self, health: SourceHealth, now: float) -> None:
        """Redraw from the health.

        Args:
            health: The source's health.
            now: The current unix time.
        """
        text, warn = health.describe(now)
        self.app.sub_title = text
        self.set_class(warn, "-warning")
