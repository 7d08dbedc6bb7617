"""The filter bar above the Events panel: level, event name, user and free text.

The selects apply at once; the text box applies after a short pause in typing (each change can
mean a journal scan), or at once on ``enter``. ``escape`` leaves the bar and keeps the filters;
``ctrl+x`` clears them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Select

from ..event_names import KNOWN_EVENTS
from ..filters import LEVELS, EventFilter

__all__ = ["FilterBar", "FilterInput"]


class FilterInput(Input):
    """The free-text box; ``enter`` applies the text at once (shown in the footer)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Apply"),
    ]


class FilterBar(Horizontal):
    """Controls that build an :class:`EventFilter` and announce every change.

    Args:
        debounce: Seconds of quiet typing before the text filter applies.
        id: The widget id.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Back to events (keeps filters)"),
        Binding("ctrl+x", "clear", "Clear filters", priority=True),
    ]

    class Changed(Message):
        """The filter changed.

        Args:
            event_filter: The new filter.
        """

        def __init__(self, event_filter: EventFilter) -> None:
            self.event_filter = event_filter
            super().__init__()

    def __init__(self, *, debounce: float = 0.3, id: str | None = None) -> None:
        super().__init__(id=id)
        self.debounce = debounce
        self._events: set[str] = set(KNOWN_EVENTS)
        self._users: set[str] = set()
        self._filter = EventFilter()
        self._typing: Timer | None = None

    def compose(self) -> ComposeResult:
        """Lay out the three selects and the text box."""
        yield Select(
            [(f"≥ {name}", name) for name in LEVELS],
            prompt="any level",
            id="filter-level",
            compact=True,
        )
        yield Select(
            [(name, name) for name in sorted(self._events)],
            prompt="any event",
            id="filter-event",
            compact=True,
        )
        yield Select([], prompt="any user", id="filter-user", compact=True)
        yield FilterInput(placeholder="search text or key=value…", id="filter-text", compact=True)

    @property
    def event_filter(self) -> EventFilter:
        """The filter the controls describe (text typed in the last moment not yet included)."""
        return self._filter

    def add_event_names(self, names: Iterable[str]) -> None:
        """Offer more event names (seen in the stream) in the event select.

        Args:
            names: Event names.
        """
        fresh = set(names) - self._events
        if fresh:
            self._events |= fresh
            self._reset_options("#filter-event", self._events)

    def add_users(self, users: Iterable[str | None]) -> None:
        """Offer more user ids in the user select.

        Args:
            users: User ids (``None`` is ignored).
        """
        fresh = {user for user in users if user} - self._users
        if fresh:
            self._users |= fresh
            self._reset_options("#filter-user", self._users)

    def apply(self, event_filter: EventFilter) -> None:
        """Set the controls from a filter (the command palette uses this) and announce it.

        Args:
            event_filter: The filter to show.
        """
        self._stop_typing()
        if event_filter.event is not None:
            self.add_event_names([event_filter.event])
        if event_filter.user is not None:
            self.add_users([event_filter.user])
        with self.prevent(Select.Changed, Input.Changed):
            self._set_select("#filter-level", event_filter.level)
            self._set_select("#filter-event", event_filter.event)
            self._set_select("#filter-user", event_filter.user)
            self.query_one("#filter-text", Input).value = event_filter.text
        self._announce(event_filter)

    def apply_text(self) -> None:
        """Apply what the text box holds now (``enter``, or the end of the typing pause)."""
        self._stop_typing()
        text = self.query_one("#filter-text", Input).value
        self._announce(self._filter.replace(text=text))

    async def action_leave(self) -> None:
        """Apply pending text, keep every filter and hand the focus back to the Events panel."""
        self.apply_text()
        await self.run_action("app.focus_events")

    def action_clear(self) -> None:
        """Reset every control (show all events)."""
        self.apply(EventFilter())
        self.notify("Filters cleared")

    @on(Select.Changed)
    def _select_changed(self, message: Select.Changed) -> None:
        message.stop()
        value = None if message.value is Select.NULL else str(message.value)
        field = {"filter-level": "level", "filter-event": "event", "filter-user": "user"}
        name = field.get(message.select.id or "")
        if name is not None:
            self._announce(self._filter.replace(**{name: value}))

    @on(Input.Changed, "#filter-text")
    def _text_changed(self, message: Input.Changed) -> None:
        message.stop()
        self._stop_typing()
        self._typing = self.set_timer(self.debounce, self.apply_text, name="filter-typing")

    @on(Input.Submitted, "#filter-text")
    def _text_submitted(self) -> None:
        self.apply_text()  # the app moves the focus to the Events panel

    def _stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.stop()
            self._typing = None

    def _announce(self, event_filter: EventFilter) -> None:
        if event_filter == self._filter:
            return
        self._filter = event_filter
        self.post_message(self.Changed(event_filter))

    def _set_select(self, selector: str, value: str | None) -> None:
        select: Select[str] = self.query_one(selector, Select)
        if value is None:
            select.clear()
        else:
            select.value = value

    def _reset_options(self, selector: str, values: set[str]) -> None:
        select: Select[str] = self.query_one(selector, Select)
        current = select.value
        with self.prevent(Select.Changed):
            select.set_options([(name, name) for name in sorted(values)])
            if current is not Select.NULL:
                select.value = current
