"""The Events panel: a windowed, filterable live log drawn with Textual's line API.

The widget never holds the whole journal. It keeps a bounded window of recent events (the live
tail) and a filtered view of at most ``window`` rows plus one page; older pages come from the
journal on demand (the app answers :class:`EventLog.OlderWanted`) and push the bottom out, which
detaches the view from the tail until the user presses ``end``.

While the user reads (scrolled up, or the cursor off the newest row) the view does not move: new
matching events are only counted ("paused · 12 new") and join the view when the user comes back
to the bottom or presses ``end``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..filters import EventFilter, level_rank, render_value
from ..messages import LogEntry
from ..timefmt import format_clock_time

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from saga_magic.core.events import Event

__all__ = ["EventLog", "copied_note", "summarize_context"]


def copied_note(name: str) -> str:
    """Say what a copy did: the text went to the terminal, which may or may not pass it on.

    Args:
        name: The event name copied.

    Returns:
        The notification text.
    """
    return f"Sent {name} as JSON to the terminal clipboard (OSC 52). Nothing? x exports a file."


_LEVEL_CLASS = {
    0: "event-log--debug",
    1: "event-log--info",
    2: "event-log--warning",
    3: "event-log--error",
    4: "event-log--error",
}


_WIDE = 110
"""Content width from which the Events panel shows milliseconds and full-width columns."""


def _fit(text: str, width: int) -> str:
    return f"{text:<{width}}" if len(text) <= width else text[: width - 1] + "…"


_FIRST_KEYS = ("reason", "status")
_THEN_KEYS = ("code",)
_ID_KEYS = frozenset({"op_id", "task_id", "request_id", "correlation_id", "trace_id"})


def _is_id(key: str) -> bool:
    return key in _ID_KEYS or key.endswith("_id")


def _short_id(value: object) -> str:
    text = render_value(value)
    return text if len(text) <= 12 else text[:8] + "…"


def _render(key: str, value: object) -> str:
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return format_clock_time(float(value))  # absolute unix times read as local time
    return render_value(value)


def summarize_context(event: Event, *, limit: int = 160) -> str:
    """Render an event's context as compact ``key=value`` pairs, the useful ones first.

    ``reason``, ``status``, ``attempt`` (as ``attempt=2/6``), ``code`` and ``wait`` come first;
    ``*_at`` unix times read as local clock time; ids (``task_id``, ``request_id``...) come last,
    shortened. A retry event reads as ``reason=429 attempt=2/6 wait=2s``.

    Args:
        event: The event.
        limit: Maximum length of the text.

    Returns:
        The summary (possibly cut with an ellipsis).
    """
    context = dict(event.context)
    context.pop("next_attempt_at", None)  # the wait says it
    parts = [f"{key}={_render(key, context.pop(key))}" for key in _FIRST_KEYS if key in context]
    if "attempt" in context and "max_attempts" in context:
        parts.append(f"attempt={context.pop('attempt')}/{context.pop('max_attempts')}")
    parts.extend(f"{key}={_render(key, context.pop(key))}" for key in _THEN_KEYS if key in context)
    if "wait_s" in context:
        parts.append(f"wait={render_value(context.pop('wait_s'))}s")
    ids = [f"{key}={_short_id(value)}" for key, value in context.items() if _is_id(key)]
    rest = [f"{key}={_render(key, value)}" for key, value in context.items() if not _is_id(key)]
    parts.extend(rest + ids)
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EventLog(ScrollView, can_focus=True, inherit_bindings=False):
    """Live structured events, newest at the bottom, following the tail unless scrolled.

    Args:
        window: How many recent events to keep in memory (and rows to show at most).
        page: How many older events one history page adds.
        id: The widget id.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "event-log--cursor",
        "event-log--time",
        "event-log--debug",
        "event-log--info",
        "event-log--warning",
        "event-log--error",
        "event-log--name",
        "event-log--user",
        "event-log--context",
        "event-log--marker",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Previous event", show=False),
        Binding("down,j", "cursor_down", "Next event", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "oldest", "Load older", show=False),
        Binding("end", "follow", "Follow tail", show=False),
        Binding("enter", "details", "Details"),
        Binding("c", "copy", "Copy JSON (OSC 52)", show=False),
    ]

    class OlderWanted(Message):
        """The user reached the top: the app should read an older page from the journal.

        Args:
            before: Read events with a rowid below this (``None``: the newest ones).
            event_filter: The filter the page must match.
        """

        def __init__(self, before: int | None, event_filter: EventFilter) -> None:
            self.before = before
            self.event_filter = event_filter
            super().__init__()

    class DetailsWanted(Message):
        """The user asked for the full detail of one event.

        Args:
            entry: The event under the cursor.
        """

        def __init__(self, entry: LogEntry) -> None:
            self.entry = entry
            super().__init__()

    def __init__(self, *, window: int = 2000, page: int = 500, id: str | None = None) -> None:
        super().__init__(id=id)
        self.window_size = window
        self.page_size = page
        self._window: deque[LogEntry] = deque(maxlen=window)
        self._view: list[LogEntry] = []
        self._filter = EventFilter()
        self.cursor = -1
        """Index of the highlighted row in the view (-1: none)."""
        self.follow = True
        """Keep the newest event in sight as events arrive."""
        self.detached = False
        """The view shows history whose bottom is no longer joined to the live tail."""
        self.history_enabled = False
        """The source has a journal to page older events from."""
        self.history_exhausted = False
        """The journal holds nothing older that matches the filter."""
        self.loading_older = False
        """A history page was requested and has not arrived yet."""
        self.unseen = 0
        """Matching events that arrived while detached or scrolled up."""
        self.placeholder = "no events yet"
        """What the empty panel says (the app names the journal it waits for)."""
        self.searching_below: int | None = None
        """The rowid a history read in progress scans below (``None``: not scanning)."""
        self._pending: deque[LogEntry] = deque(maxlen=window)
        self._pending_lost = False
        self._adjusting = False
        self._older_than: int | None = None
        self.border_title = "Events"

    # ----------------------------------------------------------------- state
    @property
    def event_filter(self) -> EventFilter:
        """The filter in force."""
        return self._filter

    @property
    def entries(self) -> Sequence[LogEntry]:
        """The rows shown, oldest first."""
        return self._view

    @property
    def window_entries(self) -> Sequence[LogEntry]:
        """The recent events kept in memory (unfiltered), oldest first."""
        return tuple(self._window)

    @property
    def selected(self) -> LogEntry | None:
        """The entry under the cursor, if any."""
        if 0 <= self.cursor < len(self._view):
            return self._view[self.cursor]
        return None

    # --------------------------------------------------------------- feeding
    def add_entries(self, entries: Iterable[LogEntry]) -> None:
        """Append a batch of new events from the live source.

        Args:
            entries: New entries, oldest first.
        """
        batch = list(entries)
        if not batch:
            return
        self._window.extend(batch)
        matching = [entry for entry in batch if self._filter.matches(entry.event)]
        if not matching:
            return
        if self.detached or not self.follow:
            # The user is reading: leave the rows (and the cursor) where they are.
            self.unseen += len(matching)
            if not self.detached:
                self._pending_lost |= len(self._pending) + len(matching) > self.window_size
                self._pending.extend(matching)
            self._update_subtitle()
            return
        self._append(matching)
        self.cursor = len(self._view) - 1
        self._resize()
        self._scroll_to_end()

    def _append(self, matching: Sequence[LogEntry]) -> None:
        """Add rows at the bottom, trimming the top to the window (the cursor moves with it)."""
        self._view.extend(matching)
        overflow = len(self._view) - self.window_size
        if overflow > 0:
            del self._view[:overflow]
            self.history_exhausted = False
            self._older_than = None
            self.cursor = max(-1, self.cursor - overflow)
            self._shift_scroll(-overflow)

    def _catch_up(self) -> bool:
        """Add the events that arrived while paused below the view (keeping the cursor's row).

        Returns:
            True when rows were added.
        """
        if not self._pending:
            return False
        if self._pending_lost:  # more arrived than the window holds: rebuild from it
            self.set_filter(self._filter)
            return True
        pending = list(self._pending)
        self._pending.clear()
        self._append(pending)
        self.unseen = 0
        self._resize()
        return True

    def set_filter(self, event_filter: EventFilter) -> None:
        """Show only events that match, rebuilt from the window; follow the tail again.

        Args:
            event_filter: The new filter.
        """
        self._filter = event_filter
        self._view = [entry for entry in self._window if event_filter.matches(entry.event)]
        self._pending.clear()
        self._pending_lost = False
        self.detached = False
        self.history_exhausted = False
        self.loading_older = False
        self._older_than = None
        self.follow = True
        self.unseen = 0
        self.cursor = len(self._view) - 1
        self._resize()
        self._scroll_to_end()
        self._update_title()
        if self.size.height and len(self._view) < self.size.height:
            self.call_after_refresh(self.request_older)

    def prepend_older(
        self, entries: Sequence[LogEntry], *, exhausted: bool, next_before: int | None = None
    ) -> None:
        """Insert a page of older events above the view (the answer to :class:`OlderWanted`).

        Args:
            entries: Older matching entries, oldest first.
            exhausted: True when nothing older matches.
            next_before: Where the next page starts (the oldest rowid the page scanned).
        """
        self.loading_older = False
        self.searching_below = None
        self.history_exhausted = exhausted
        self._older_than = next_before
        known = {entry.rowid for entry in self._view if entry.rowid is not None}
        fresh = [entry for entry in entries if entry.rowid not in known]
        if fresh:
            self._view[:0] = fresh
            self.cursor = self.cursor + len(fresh) if self.cursor >= 0 else len(fresh) - 1
            self._resize()
            self._shift_scroll(len(fresh))
            overflow = len(self._view) - (self.window_size + self.page_size)
            if overflow > 0:
                del self._view[-overflow:]
                self.detached = True
                self.follow = False
                self._pending.clear()
                self._pending_lost = False
                self.cursor = min(self.cursor, len(self._view) - 1)
                self._resize()
        self._update_subtitle()
        self.refresh()
        if not exhausted and len(self._view) < self.scrollable_content_region.height:
            self.call_after_refresh(self.request_older)

    def request_older(self) -> None:
        """Ask the app for an older page, unless one is on its way or history is exhausted."""
        if not self.history_enabled or self.loading_older or self.history_exhausted:
            return
        before = self._older_than
        if before is None and self._view:
            before = self._view[0].rowid
        elif before is None and self._window:
            before = self._window[0].rowid
        if (self._view or self._window) and before is None:
            return
        self.loading_older = True
        self.searching_below = before
        self._update_subtitle()
        self.post_message(self.OlderWanted(before, self._filter))

    # --------------------------------------------------------------- actions
    def action_cursor_up(self) -> None:
        """Move the highlight to the previous event (loading history at the top)."""
        if self.cursor <= 0:
            self.request_older()
            if self._view:
                self.cursor = 0
            self.refresh()
            return
        self.follow = False
        self._move_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        """Move the highlight to the next event (past the bottom: to events that came meanwhile)."""
        if self.cursor >= len(self._view) - 1 and not self.detached:
            self._catch_up()
        if self.cursor < len(self._view) - 1:
            self._move_cursor(self.cursor + 1)
        if self.cursor == len(self._view) - 1 and not self.detached and not self._pending:
            self.follow = True
            self.unseen = 0
            self._update_subtitle()

    def action_page_up(self) -> None:
        """Move the highlight one screen up."""
        if self.cursor <= 0:
            self.request_older()
            return
        self.follow = False
        self._move_cursor(max(0, self.cursor - max(1, self.size.height - 1)))

    def action_page_down(self) -> None:
        """Move the highlight one screen down."""
        self._move_cursor(min(len(self._view) - 1, self.cursor + max(1, self.size.height - 1)))

    def action_oldest(self) -> None:
        """Jump to the oldest row shown and load an older page."""
        self.follow = False
        if self._view:
            self._move_cursor(0)
        self.request_older()

    def action_follow(self) -> None:
        """Return to the live tail (rebuilding the view if it shows detached history)."""
        if self.detached or self._pending_lost:
            self.set_filter(self._filter)
            return
        self._catch_up()
        self.follow = True
        self.unseen = 0
        self.cursor = len(self._view) - 1
        self._scroll_to_end()
        self._update_subtitle()
        self.refresh()

    def action_details(self) -> None:
        """Open the detail view of the highlighted event."""
        entry = self.selected
        if entry is not None:
            self.post_message(self.DetailsWanted(entry))

    def action_copy(self) -> None:
        """Send the highlighted event as JSON to the terminal's clipboard (OSC 52)."""
        entry = self.selected
        if entry is None:
            self.notify("No event selected", severity="warning")
            return
        self.app.copy_to_clipboard(entry.event.to_json())
        self.notify(copied_note(entry.event.event))

    # ----------------------------------------------------------------- mouse
    def on_click(self, event: events.Click) -> None:
        """Highlight the clicked row; a double click opens its details.

        Args:
            event: The click.
        """
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = self.scroll_offset.y + offset.y
        if 0 <= index < len(self._view):
            self.follow = index == len(self._view) - 1 and not self.detached
            if self.follow:
                self._catch_up()
                index = len(self._view) - 1
            self._move_cursor(index)
            if event.chain >= 2:
                self.action_details()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        """Stop following when the user scrolls up; at the top, load history.

        Args:
            event: The scroll event.
        """
        self.follow = False
        if self.scroll_offset.y <= 0:
            self.request_older()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Track whether the user left (or came back to) the bottom.

        Args:
            old_value: Previous offset.
            new_value: New offset.
        """
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting:
            return
        if new_value < old_value and new_value < self.max_scroll_y:
            self.follow = False
        elif (
            new_value >= self.max_scroll_y
            and not self.detached
            and new_value > old_value
            and not self._catch_up()  # rows that came meanwhile are below now: keep reading
        ):
            self.follow = True
            self.unseen = 0
        self._update_subtitle()

    def on_resize(self, event: events.Resize) -> None:
        """Keep the tail in sight after a resize.

        Args:
            event: The resize event.
        """
        self._resize()
        if self.follow:
            self._scroll_to_end()

    # ------------------------------------------------------------- rendering
    def render_line(self, y: int) -> Strip:
        """Draw one row of the view.

        Args:
            y: Line of the widget's viewport.

        Returns:
            The rendered line.
        """
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not self._view and y == 0:
            note = self.placeholder
            if not self._filter.is_empty:
                note = f"no events match {self._filter.describe()}"
            style = base + self.get_component_rich_style("event-log--marker")
            return Strip([Segment(f" {note}", style)]).crop_extend(0, width, base)
        if index >= len(self._view):
            return Strip.blank(width, base)
        strip = Strip(self._segments(self._view[index], base), None)
        if index == self.cursor and self.has_focus:
            strip = strip.apply_style(self.get_component_rich_style("event-log--cursor"))
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _segments(self, entry: LogEntry, base: Style) -> list[Segment]:
        event = entry.event
        style = self.get_component_rich_style
        level_class = _LEVEL_CLASS[min(4, level_rank(event.level))]
        # Narrow panels (an 80-column terminal) give the context more room: no milliseconds,
        # shorter name and user columns (long names are cut with an ellipsis).
        wide = self.scrollable_content_region.width >= _WIDE
        name_width, user_width = (26, 12) if wide else (22, 8)
        return [
            Segment(
                format_clock_time(event.ts, millis=wide) + " ", base + style("event-log--time")
            ),
            Segment(f"{event.level[:7]:<7} ", base + style(level_class)),
            Segment(f"{_fit(event.event, name_width)} ", base + style("event-log--name")),
            Segment(f"{_fit(event.user_id or '-', user_width)} ", base + style("event-log--user")),
            Segment(summarize_context(event), base + style("event-log--context")),
        ]

    # --------------------------------------------------------------- helpers
    def on_focus(self) -> None:
        """Show the cursor."""
        self.refresh()

    def on_blur(self) -> None:
        """Hide the cursor."""
        self.refresh()

    def _resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self._view))
        self._update_subtitle()
        self.refresh()

    def _scroll_to_end(self) -> None:
        self._adjusting = True
        try:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        finally:
            self._adjusting = False

    def _shift_scroll(self, lines: int) -> None:
        self._adjusting = True
        try:
            self.scroll_to(
                y=max(0, self.scroll_offset.y + lines), animate=False, immediate=True, force=True
            )
        finally:
            self._adjusting = False

    def _move_cursor(self, index: int) -> None:
        if not self._view:
            return
        self.cursor = max(0, min(index, len(self._view) - 1))
        top = self.scroll_offset.y
        height = max(1, self.scrollable_content_region.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True, force=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True, force=True)
        self._update_subtitle()
        self.refresh()

    def _update_title(self) -> None:
        suffix = "" if self._filter.is_empty else f" · {self._filter.describe()}"
        self.border_title = f"Events{suffix}"

    def _update_subtitle(self) -> None:
        count = f"{len(self._view):,} shown"
        if self.loading_older and self.searching_below is not None and not self._filter.is_empty:
            state = f"searching… rowid {self.searching_below:,}"
        elif self.loading_older:
            state = "loading older…"
        elif self.detached:
            state = f"history · {self.unseen:,} newer · end to follow"
        elif not self.follow:
            state = f"paused · {self.unseen:,} new · end to follow"
        else:
            state = "following"
        self.border_subtitle = f"{state} · {count}"
