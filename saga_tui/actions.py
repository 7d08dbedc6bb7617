"""What the user can do from the TUI: refresh, log in, log out, ask, export.

Each action runs in a worker with a group and a description; :meth:`SagaApp.on_worker_state_changed`
turns a failure into a notification. Token actions are exclusive per user (a second ``r`` on the
same user supersedes the first; other users are not affected), a login or a prompt supersedes the
previous one, and a second export while one runs is refused. The ``--sandbox`` demo drives the
same public methods.
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from textual.worker import Worker, get_current_worker

from saga_magic.core.events import JournalReader

from .export import ExportCancelled, default_export_path, export_jsonl
from .messages import Exported
from .sources import iter_matching
from .timefmt import format_countdown
from .widgets.answer_panel import AnswerPanel
from .widgets.confirm_screen import ConfirmScreen
from .widgets.event_log import EventLog
from .widgets.login_screen import LoginScreen
from .widgets.retries_panel import RetriesPanel
from .widgets.tokens_panel import TokensPanel

if TYPE_CHECKING:
    from saga_magic.core.device import DevicePoll

    from .app import SagaApp
    from .filters import EventFilter
    from .messages import LogEntry

__all__ = ["Actions"]


class Actions:
    """The app's actions, as workers.

    Args:
        app: The app they act in.
        export_home: Exports go to ``<export_home>/exports`` (the real home, also in
            ``--sandbox``, whose home is deleted on exit).
    """

    def __init__(self, app: SagaApp, *, export_home: Path) -> None:
        self.app = app
        self.export_home = export_home
        """Exports go to ``<export_home>/exports``."""
        self._export: Worker[None] | None = None
        self._prompt_started = 0.0

    # ------------------------------------------------------------------ tokens
    def refresh(self, user: str) -> Worker[None]:
        """Refresh a user's token now (supersedes a refresh of the same user started here).

        Args:
            user: The user.

        Returns:
            The worker.
        """
        return self.app.run_worker(
            functools.partial(self._refresh, user),
            group=f"refresh:{user}",
            exclusive=True,
            exit_on_error=False,
            description="refresh token",
        )

    async def _refresh(self, user: str) -> None:
        self.app.notify(f"Refreshing the token of {user}…")
        try:
            await self.app.services.refresh(user)
        finally:
            self.app.reload_tokens()  # success or failure (a re-login flag), the store changed
        self.app.notify(f"Token of {user} refreshed")

    def login(self, user: str) -> Worker[None]:
        """Sign a user in with a device code (shown in a modal; cancellable).

        Args:
            user: The user.

        Returns:
            The worker (cancelled when the modal is closed).
        """
        return self.app.run_worker(
            functools.partial(self._login, user),
            group="login",
            exclusive=True,
            exit_on_error=False,
            description="device login",
        )

    async def _login(self, user: str) -> None:
        app = self.app
        login = await app.services.start_login(user)
        screen = LoginScreen(
            user_id=user,
            user_code=login.user_code,
            verification_uri=login.verification_uri,
            expires_at=login.expires_at,
            clock=app.clock,
        )
        worker = get_current_worker()

        def closed(approved: bool | None) -> None:
            if not approved and worker.is_running:
                worker.cancel()

        def polled(poll: DevicePoll) -> None:
            screen.set_status(poll.status.replace("_", " "))

        await app.push_screen(screen, closed)
        try:
            info = await app.services.complete_login(login, on_poll=polled)
        finally:
            if screen.is_attached and app.screen is screen:
                screen.dismiss(True)
        expires = format_countdown(info.expires_at, app.clock())
        app.notify(f"{user} signed in (token expires {expires})", title="Logged in")
        app.reload_tokens()

    def confirm_logout(self, user: str) -> None:
        """Ask before forgetting a user's stored token; say so when there is nothing to forget.

        Args:
            user: The user.
        """
        panel = self.app.query_one(TokensPanel)
        if panel.loaded and panel.status_of(user) is None:
            self.app.notify(f"{user} has no stored token: nothing to log out")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.logout(user)

        store = self.app.settings.token_store_path
        self.app.push_screen(
            ConfirmScreen(
                f"Log {user} out?\n\nTheir stored token is deleted from {store}; signing in "
                "again needs a new device code. Other users are not affected.",
                confirm_label="Log out",
            ),
            answered,
        )

    def logout(self, user: str) -> Worker[None]:
        """Forget a user's stored token now (no confirmation; see :meth:`confirm_logout`).

        Args:
            user: The user.

        Returns:
            The worker.
        """
        return self.app.run_worker(
            functools.partial(self._logout, user),
            group=f"logout:{user}",
            exclusive=True,
            exit_on_error=False,
            description="log out",
        )

    async def _logout(self, user: str) -> None:
        removed = await self.app.services.logout(user)
        if removed:
            self.app.notify(f"{user} logged out")
        else:
            self.app.notify(f"{user} had no stored token: nothing to log out")
        self.app.reload_tokens()

    # ------------------------------------------------------------------ prompt
    def ask(self, prompt: str) -> Worker[None]:
        """Send a prompt through the engine and stream the answer (supersedes a running one).

        Args:
            prompt: The prompt.

        Returns:
            The worker.
        """
        return self.app.run_worker(
            functools.partial(self._ask, prompt),
            group="prompt",
            exclusive=True,
            exit_on_error=False,
            description="prompt",
        )

    async def _ask(self, prompt: str) -> None:
        app = self.app
        panel = app.query_one(AnswerPanel)
        panel.display = True
        panel.start(prompt)
        self._prompt_started = started = app.clock()
        try:
            async for delta in app.services.ask(prompt, user_id=app.settings.user):
                panel.append(delta)
        except asyncio.CancelledError:
            # The engine sends no event for a cancelled call: drop its retry rows here.
            if app.is_running:
                panel.finish("cancelled")
                app.query_one(RetriesPanel).discard_own(
                    pid=os.getpid(), kind="chat request", since=started, user_id=app.settings.user
                )
            raise
        result = app.services.last_result()
        if result is None:
            panel.finish("done")
            return
        tokens = result.usage.total_tokens
        panel.finish(
            f"{result.finish_reason or 'done'} · {result.latency_ms / 1000:.1f} s · "
            f"{result.attempts} attempt{'s' if result.attempts != 1 else ''} · {tokens} tokens"
        )

    # ------------------------------------------------------------------ export
    def export(self) -> Worker[None] | None:
        """Export the filtered events to a JSONL file (the whole journal, or the window).

        Returns:
            The worker, or ``None`` when an export is already running.
        """
        if self._export is not None and not self._export.is_finished:
            self.app.notify("An export is already running", severity="warning")
            return None
        log = self.app.query_one(EventLog)
        event_filter = log.event_filter
        window = None
        if self.app.source_kind != "journal":
            window = [entry for entry in log.window_entries if event_filter.matches(entry.event)]
        self._export = self.app.run_worker(
            lambda: self._write_export(event_filter, window),
            group="export",
            exit_on_error=False,
            description="export",
            thread=True,
        )
        return self._export

    def _write_export(self, event_filter: EventFilter, window: list[LogEntry] | None) -> None:
        app = self.app
        worker = get_current_worker()

        def cancelled() -> bool:
            return worker.is_cancelled

        what = event_filter.describe()
        path = default_export_path(self.export_home, app.clock())
        try:
            if window is not None:
                app.call_from_thread(app.notify, f"Exporting {len(window):,} events ({what})…")
                count = export_jsonl(window, path, cancelled=cancelled)
            else:
                # A reader of its own: a long scan never delays the tail or history pages.
                with JournalReader(app.settings.journal_path) as reader:
                    total = reader.count()
                    app.call_from_thread(
                        app.notify, f"Exporting the journal's events ({what}; {total:,} to scan)…"
                    )
                    matching = iter_matching(reader, event_filter, cancelled=cancelled)
                    count = export_jsonl(matching, path, cancelled=cancelled)
        except ExportCancelled:
            return  # the partial file is gone; the app is closing or moved on
        app.post_message(Exported(path, count, what))

    def exported_note(self, message: Exported) -> str:
        """Say where an export went (or that there was nothing to write).

        Args:
            message: The finished export.

        Returns:
            The notification text.
        """
        if message.count == 0:
            return f"Nothing to export: no events match ({message.what}); no file written."
        return f"{message.count:,} events ({message.what}) → {message.path}"
