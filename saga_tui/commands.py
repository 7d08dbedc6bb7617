"""The command palette's provider: the app's actions and filters, searchable by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .filters import LEVELS

if TYPE_CHECKING:
    from .app import SagaApp

__all__ = ["PaletteCommand", "SagaCommands", "palette_commands"]


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """One entry of the palette."""

    name: str
    """What the user types and sees."""
    run: Callable[[], object]
    """What choosing it does."""
    help: str
    """One line under the name."""
    discover: bool = False
    """Listed before the user types anything."""


def palette_commands(app: SagaApp) -> list[PaletteCommand]:
    """List the palette's commands for the app's current state (known users and events).

    Args:
        app: The running app.

    Returns:
        The commands, most useful first.
    """
    user = app.target_user()
    commands = [
        PaletteCommand(
            f"Refresh token now ({user})", app.action_refresh_token, "Force a refresh", True
        ),
        PaletteCommand(f"Log in ({user})", app.action_login, "Device-code sign-in", True),
        PaletteCommand(f"Log out ({user})", app.action_logout, "Forget the stored token", True),
        PaletteCommand(
            "Export filtered events to JSONL", app.action_export, "Write a .jsonl file", True
        ),
        PaletteCommand("Follow the tail", app.action_follow, "Jump to the newest event", True),
        PaletteCommand("Clear filters", app.action_clear_filters, "Show every event", True),
        PaletteCommand(
            "Filter by text…", app.action_focus_filter, "Text, or key=value (reason=429)", True
        ),
        PaletteCommand("Ask Copilot", app.action_focus_prompt, "Focus the prompt bar", True),
        PaletteCommand(
            "Show event details", app.action_details, "The highlighted event in full", True
        ),
        PaletteCommand(
            "Copy event as JSON",
            app.action_copy_event,
            "Send the highlighted event to the terminal clipboard (OSC 52)",
            True,
        ),
        PaletteCommand("Show keys", app.action_toggle_keys, "Every key binding (F1)", True),
    ]
    for level in LEVELS:
        commands.append(
            PaletteCommand(
                f"Filter: level >= {level}",
                partial(app.set_filter, level=level),
                f"Show {level} and above",
            )
        )
    for known in app.known_users():
        commands.append(
            PaletteCommand(
                f"Filter: user = {known}", partial(app.set_filter, user=known), "Only this user"
            )
        )
        if known != user:
            commands.append(
                PaletteCommand(
                    f"Refresh token now ({known})",
                    partial(app.action_refresh_token, known),
                    "Force a refresh",
                )
            )
            commands.append(
                PaletteCommand(
                    f"Log in ({known})", partial(app.action_login, known), "Device-code sign-in"
                )
            )
            commands.append(
                PaletteCommand(
                    f"Log out ({known})",
                    partial(app.action_logout, known),
                    "Forget the stored token",
                )
            )
    for name in app.known_events():
        commands.append(
            PaletteCommand(
                f"Filter: event = {name}", partial(app.set_filter, event=name), "Only this event"
            )
        )
    return commands


class SagaCommands(Provider):
    """Offers :func:`palette_commands` in the command palette."""

    def _commands(self) -> list[PaletteCommand]:
        return palette_commands(cast("SagaApp", self.app))

    async def discover(self) -> Hits:
        """List the main actions before anything is typed.

        Yields:
            One hit per main action.
        """
        for command in self._commands():
            if command.discover:
                yield DiscoveryHit(command.name, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        """Match the query against every command.

        Args:
            query: What the user typed.

        Yields:
            Matching commands, scored.
        """
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.run, help=command.help)
