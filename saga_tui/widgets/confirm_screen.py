"""A yes/no question in a modal (used before logging a user out)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

__all__ = ["ConfirmScreen"]


class ConfirmScreen(ModalScreen[bool]):
    """Ask a question; dismissed with ``True`` for yes. "No" has the focus, so enter is safe.

    Args:
        question: The question.
        confirm_label: Text of the yes button.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        """Lay out the question and the two buttons."""
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Static(self.question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm_label} (y)", id="confirm-yes", variant="error")
                yield Button("No (n)", id="confirm-no")
        yield Footer()

    def on_mount(self) -> None:
        """Focus the safe answer."""
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, message: Button.Pressed) -> None:
        """Answer with the pressed button.

        Args:
            message: The pressed button.
        """
        self.action_answer(message.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        """Close with an answer.

        Args:
            answer: True for yes.
        """
        self.dismiss(answer)
