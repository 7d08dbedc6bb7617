"""The prompt bar: type a prompt, press enter, and the app sends it through the engine."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input

__all__ = ["PromptBar"]


class PromptBar(Input):
    """A one-line prompt input that posts :class:`PromptBar.Send` for non-blank text.

    Args:
        id: The widget id.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send"),
    ]

    class Send(Message):
        """The user sent a prompt.

        Args:
            prompt: The text.
        """

        def __init__(self, prompt: str) -> None:
            self.prompt = prompt
            super().__init__()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="Ask Copilot… (enter sends · ctrl+l clears)", id=id)
        self.border_title = "Prompt"

    def on_input_submitted(self, message: Input.Submitted) -> None:
        """Send the text and clear the box.

        Args:
            message: The submission.
        """
        message.stop()
        prompt = message.value.strip()
        if prompt:
            self.post_message(self.Send(prompt))
            self.clear()
