"""The device-code login modal: the code, the link, a countdown, and a way out."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from ..timefmt import format_duration

if TYPE_CHECKING:
    from ..timefmt import Clock

__all__ = ["LoginScreen"]


class LoginScreen(ModalScreen[bool]):
    """Shows a device code while the app polls Entra; dismissed with ``False`` on cancel.

    The device code itself (the secret) never reaches this screen: only the user code and the
    verification link, which are meant to be shown.

    Args:
        user_id: Who is signing in.
        user_code: The short code to type at the verification link.
        verification_uri: Where to type it.
        expires_at: Unix time the code expires.
        clock: Returns the current unix time.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel login"),
        Binding("c", "copy_code", "Copy code (OSC 52)"),
    ]

    def __init__(
        self,
        *,
        user_id: str,
        user_code: str,
        verification_uri: str,
        expires_at: float,
        clock: Clock,
    ) -> None:
        super().__init__()
        self.user_id = user_id
        self.user_code = user_code
        self.verification_uri = verification_uri
        self.expires_at = expires_at
        self._clock = clock
        self.status = "waiting for approval"
        """Last poll outcome shown under the code."""
        self._status_line = Static("", id="login-status")

    def compose(self) -> ComposeResult:
        """Lay out the code, the link, the status and the buttons."""
        with Vertical(id="login-dialog", classes="dialog"):
            yield Static(f"Sign in as {self.user_id}", classes="dialog-title")
            yield Label("Open this link in a browser:")
            yield Static(self.verification_uri, id="login-link")
            yield Label("and enter the code:")
            yield Static(self.user_code, id="login-code")
            yield self._status_line
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy code", id="login-copy", variant="primary")
                yield Button("Cancel", id="login-cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        """Start the countdown."""
        self.tick()
        self.set_interval(1.0, self.tick)

    def set_status(self, status: str) -> None:
        """Show the latest poll outcome.

        Args:
            status: Short text, e.g. ``"authorization pending"``.
        """
        self.status = status
        self.tick()

    def tick(self) -> None:
        """Redraw the status line with the time left."""
        left = self.expires_at - self._clock()
        when = f"code expires in {format_duration(left)}" if left > 0 else "code expired"
        self._status_line.update(f"{self.status} · {when}")

    def on_button_pressed(self, message: Button.Pressed) -> None:
        """Copy the code or cancel.

        Args:
            message: The pressed button.
        """
        if message.button.id == "login-copy":
            self.action_copy_code()
        else:
            self.action_cancel()

    def action_copy_code(self) -> None:
        """Send the user code to the terminal's clipboard (OSC 52)."""
        self.app.copy_to_clipboard(self.user_code)
        self.notify(f"Sent the code {self.user_code} to the terminal clipboard (OSC 52)")

    def action_cancel(self) -> None:
        """Give up on this login."""
        self.dismiss(False)
