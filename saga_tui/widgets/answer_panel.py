"""The answer panel: the latest prompt, the engine's answer as it streams, and how it went."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

__all__ = ["AnswerPanel"]


class AnswerPanel(VerticalScroll):
    """Shows one exchange: the prompt, then the answer text growing as deltas arrive.

    Focusable (``tab``), so the arrow and page keys scroll a long answer.

    Args:
        id: The widget id.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.prompt = ""
        """The prompt being answered."""
        self.text = ""
        """The answer so far."""
        self.border_title = "Answer"

    def compose(self) -> ComposeResult:
        """One static holding the exchange."""
        yield Static(id="answer-text")

    def start(self, prompt: str) -> None:
        """Begin a new exchange.

        Args:
            prompt: The prompt sent.
        """
        self.prompt = prompt
        self.text = ""
        self.border_subtitle = "waiting for the engine…"
        self.remove_class("-error")
        self._redraw()

    def append(self, delta: str) -> None:
        """Add streamed text.

        Args:
            delta: The next piece of the answer.
        """
        self.text += delta
        self.border_subtitle = "streaming…"
        self._redraw()

    def finish(self, summary: str) -> None:
        """Mark the answer complete.

        Args:
            summary: E.g. ``"stop · 1.2 s · 2 attempts · 42 tokens"``.
        """
        self.border_subtitle = summary
        self._redraw()

    def fail(self, message: str) -> None:
        """Show that the exchange failed.

        Args:
            message: What went wrong (safe to show: never a token or a raw body).
        """
        self.border_subtitle = "failed"
        self.add_class("-error")
        self.text = self.text or message
        if self.text != message:
            self.text += f"\n\n{message}"
        self._redraw()

    def _redraw(self) -> None:
        body = Content.from_markup("[b]$prompt[/b]\n", prompt=f"> {self.prompt}") + Content(
            self.text
        )
        self.query_one("#answer-text", Static).update(body)
        self.scroll_end(animate=False)
