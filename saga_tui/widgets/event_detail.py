"""The detail view of one event: its full (already redacted) record, pretty-printed."""

from __future__ import annotations

import json
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.highlight import highlight
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from ..messages import LogEntry
from ..timefmt import format_clock_time
from .event_log import copied_note

__all__ = ["EventDetailScreen", "pretty_event"]


def pretty_event(entry: LogEntry) -> str:
    """Format an event as indented JSON (rowid first when known).

    Args:
        entry: The event.

    Returns:
        The JSON text.
    """
    record: dict[str, object] = {}
    if entry.rowid is not None:
        record["rowid"] = entry.rowid
    record.update(entry.event.to_dict())
    return json.dumps(record, indent=2, ensure_ascii=False, default=str)


class EventDetailScreen(ModalScreen[None]):
    """A modal showing one event in full.

    Args:
        entry: The event to show.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("c", "copy", "Copy JSON (OSC 52)"),
    ]

    def __init__(self, entry: LogEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        """Lay out the title, the JSON and the buttons."""
        event = self.entry.event
        with Vertical(id="detail-dialog", classes="dialog"):
            yield Static(
                f"{event.event} · {event.level} · {format_clock_time(event.ts, millis=True)}",
                classes="dialog-title",
            )
            with VerticalScroll(id="detail-body"):
                yield Static(highlight(pretty_event(self.entry), language="json"), id="detail-json")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy JSON", id="detail-copy", variant="primary")
                yield Button("Close", id="detail-close")
        yield Footer()

    def on_mount(self) -> None:
        """Let the arrow keys scroll the body."""
        self.query_one("#detail-body").focus()

    def on_button_pressed(self, message: Button.Pressed) -> None:
        """Copy or close.

        Args:
            message: The pressed button.
        """
        if message.button.id == "detail-copy":
            self.action_copy()
        else:
            self.action_close()

    def action_copy(self) -> None:
        """Send the event as one line of JSON to the terminal's clipboard (OSC 52)."""
        self.app.copy_to_clipboard(self.entry.event.to_json())
        self.notify(copied_note(self.entry.event.event))

    def action_close(self) -> None:
        """Close the view."""
        self.dismiss(None)
