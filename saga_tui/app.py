"""The ``saga-tui`` application: token state, retry progress and the live event log on one screen.

Layout (top to bottom): header (source and freshness), Tokens | Retries, the filter bar, the
Events panel, the answer panel (after a first prompt), the prompt bar, the footer.

Blocking work (sqlite reads, exports) runs in thread workers that talk back through messages;
network actions run in async workers; one handler turns every worker error into a notification.
The clock is injected so tests and snapshots can freeze time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Header, HelpPanel, Input
from textual.worker import Worker, WorkerState, get_current_worker

from saga_magic.core.errors import ArcSagaException
from saga_magic.core.events import EventJournal, get_journal, install_journal, subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore

from .commands import SagaCommands
from .export import default_export_path, export_jsonl
from .filters import EventFilter
from .messages import (
    EventsBatch,
    Exported,
    LogEntry,
    OlderEventsLoaded,
    SourceStatus,
    TokensLoaded,
)
from .sources import BusSource, JournalTail, iter_matching, read_history
from .timefmt import format_ago, format_countdown
from .widgets.answer_panel import AnswerPanel
from .widgets.confirm_screen import ConfirmScreen
from .widgets.event_detail import EventDetailScreen
from .widgets.event_log import EventLog
from .widgets.filter_bar import FilterBar
from .widgets.login_screen import LoginScreen
from .widgets.prompt_bar import PromptBar
from .widgets.retries_panel import RetriesPanel
from .widgets.tokens_panel import TokensPanel

if TYPE_CHECKING:
    from saga_magic.core.config import Settings
    from saga_magic.core.device import DevicePoll

    from .services import Services
    from .timefmt import Clock

__all__ = ["SagaApp", "describe_error"]

_TOKEN_EVENTS = frozenset(
    {
        "token_stored",
        "token_refresh_success",
        "token_refresh_failed_auth",
        "token_persistence_failed",
        "login_complete",
        "logout",
    }
)

SourceKind = Literal["journal", "bus"]


def describe_error(error: BaseException | None) -> str:
    """Turn an exception into one line for a notification (message plus hint).

    Args:
        error: The exception (``None`` reads as an unknown error).

    Returns:
        The text; core errors carry no secrets by construction.
    """
    if error is None:
        return "unknown error"
    if isinstance(error, ArcSagaException):
        text = error.message
        if error.status is not None or error.code:
            text += f" [{' '.join(str(p) for p in (error.status, error.code) if p)}]"
        if error.hint:
            # The core's hints name the notebook magic; say what to press here instead.
            text += "\n→ " + error.hint.replace("run %copilot login", "press l (log in)")
        return text
    return f"{type(error).__name__}: {error}"


class SagaApp(App[None]):
    """Watch what the core is doing, in this process or another, and act on it.

    Args:
        settings: The product settings (``Settings.from_env()`` plus CLI overrides).
        source: ``journal`` tails the SQLite journal (sees every process); ``bus`` subscribes to
            this process's event bus (used with ``--sandbox``).
        services: The core actions; built from ``settings`` when omitted.
        clock: Returns the current unix time (tests pass a frozen clock).
        write_journal: Install a journal writer for this process's own events when none is
            installed (so the actions taken here reach the journal, and other viewers).
        poll_interval: Seconds between journal polls when idle.
        window: Events kept in memory (rows shown at most, plus one history page).
        page: Events per history page.
        stale_after: Seconds without a new event before the header warns that it is stale.
        token_poll: Seconds between re-reads of the token store.
        demo: An optional coroutine factory run in a worker after mount (``--sandbox`` traffic).
        title_suffix: Added to the header title (e.g. ``sandbox``).
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "ARC SAGA"
    COMMANDS = App.COMMANDS | {SagaCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "toggle_keys", "Keys"),
        Binding("r", "refresh_token", "Refresh token"),
        Binding("l", "login", "Log in"),
        Binding("o", "logout", "Log out"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("p", "focus_prompt", "Prompt"),
        Binding("x", "export", "Export"),
        Binding("t", "focus_tokens", "Tokens", show=False),
        Binding("e", "focus_events", "Events", show=False),
        Binding("ctrl+l", "clear_answer", "Clear answer", show=False),
        Binding("escape", "focus_events", "Back to events", show=False),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        source: SourceKind = "journal",
        services: Services | None = None,
        clock: Clock = time.time,
        write_journal: bool = True,
        poll_interval: float = 0.1,
        window: int = 2000,
        page: int = 500,
        stale_after: float = 300.0,
        token_poll: float = 5.0,
        demo: Callable[[SagaApp], Awaitable[None]] | None = None,
        title_suffix: str = "",
    ) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock
        """Returns the current unix time."""
        self.source_kind: SourceKind = source
        self._services = services
        self._write_journal = write_journal
        self._owned_journal: EventJournal | None = None
        self._null_handler: logging.Handler | None = None
        self.poll_interval = poll_interval
        self.window = window
        self.page = page
        self.stale_after = stale_after
        self.token_poll = token_poll
        self._demo = demo
        self.tail = JournalTail(settings.journal_path)
        """The journal follower (also the reader for history pages and exports)."""
        self.bus = BusSource(subscribe)
        """The in-process bus collector (used when ``source == "bus"``)."""
        self.source_state = "starting"
        """``starting``, ``live``, ``waiting`` (journal missing) or ``error``."""
        self.source_detail = ""
        self.last_event_at: float | None = None
        """Unix time of the newest event seen."""
        self.events_seen = 0
        """Events received since start."""
        self._known_users: set[str] = set()
        self._known_events: set[str] = set()
        self.title = f"ARC SAGA · {title_suffix}" if title_suffix else "ARC SAGA"

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Lay out the panels."""
        yield Header(icon="◆")
        with Horizontal(id="top"):
            yield TokensPanel(clock=self.clock, primary_user=self.settings.user, id="tokens")
            yield RetriesPanel(clock=self.clock, id="retries")
        yield FilterBar(id="filters")
        yield EventLog(window=self.window, page=self.page, id="events")
        yield AnswerPanel(id="answer")
        yield PromptBar(id="prompt")
        yield Footer()

    @property
    def services(self) -> Services:
        """The core actions (built from the settings on first use)."""
        if self._services is None:
            from .services import CoreServices

            self._services = CoreServices(self.settings)
        return self._services

    def on_mount(self) -> None:
        """Start the source, the timers and the first token read."""
        saga_logger = logging.getLogger("saga")
        if not saga_logger.handlers:
            # The screen shows every event; keep logging's last-resort stderr writes off it.
            self._null_handler = logging.NullHandler()
            saga_logger.addHandler(self._null_handler)
        if self._write_journal and get_journal() is None:
            self._owned_journal = EventJournal(self.settings.journal_path)
            install_journal(self._owned_journal)
        log = self.query_one(EventLog)
        log.history_enabled = self.source_kind == "journal"
        if self.source_kind == "journal":
            self._tail_journal()
        else:
            self.bus.start()
            self.source_state = "live"
            self.set_interval(self.poll_interval, self._drain_bus, name="drain-bus")
        self.set_interval(1.0, self._tick, name="tick")
        self.set_interval(0.25, self.query_one(RetriesPanel).tick, name="retries")
        self.set_interval(self.token_poll, self._load_tokens, name="tokens")
        self._load_tokens()
        self._tick()
        log.focus()
        if self._demo is not None:
            self._run_demo()

    async def on_unmount(self) -> None:
        """Stop the sources and close what the app opened."""
        self.tail.stop()
        self.bus.stop()
        workers = list(self.workers)
        for worker in workers:
            if worker.group != "tail":
                worker.cancel()
        waits = (worker.wait() for worker in workers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5.0)
        self.tail.close()
        if self._services is not None:
            await self._services.aclose()
        if self._null_handler is not None:
            logging.getLogger("saga").removeHandler(self._null_handler)
            self._null_handler = None
        if self._owned_journal is not None:
            if get_journal() is self._owned_journal:
                install_journal(None)
            self._owned_journal.close()
            self._owned_journal = None

    # ------------------------------------------------------------------ sources
    @work(thread=True, group="tail", exclusive=True, exit_on_error=False, description="tail")
    def _tail_journal(self) -> None:
        worker = get_current_worker()
        backlog = self.tail.backlog(self.window)
        self.post_message(SourceStatus("live" if self.tail.exists() else "waiting"))
        if backlog:
            self.post_message(EventsBatch(tuple(backlog)))

        def deliver(batch: list[LogEntry]) -> None:
            self.post_message(EventsBatch(tuple(batch)))

        def status(state: str, detail: str) -> None:
            self.post_message(SourceStatus(state, detail))

        self.tail.run(
            deliver,
            status,
            interval=self.poll_interval,
            cancelled=lambda: worker.is_cancelled,
        )

    def _drain_bus(self) -> None:
        if not self.is_running:
            return
        entries = self.bus.drain()
        if entries:
            self.post_message(EventsBatch(tuple(entries)))

    def on_events_batch(self, message: EventsBatch) -> None:
        """Feed a batch to every panel.

        Args:
            message: The batch.
        """
        if not self.is_running:
            return
        entries = message.entries
        events = [entry.event for entry in entries]
        self.events_seen += len(entries)
        self.last_event_at = max(self.last_event_at or 0.0, events[-1].ts)
        self.query_one(EventLog).add_entries(entries)
        self.query_one(RetriesPanel).add_events(events)
        names = {event.event for event in events} - self._known_events
        users = {event.user_id for event in events if event.user_id} - self._known_users
        if names:
            self._known_events |= names
            self.query_one(FilterBar).add_event_names(names)
        if users:
            self.note_users(user for user in users if user is not None)
        if any(event.event in _TOKEN_EVENTS for event in events):
            self._load_tokens()
        self._update_header()

    def on_source_status(self, message: SourceStatus) -> None:
        """Remember the source's health for the header.

        Args:
            message: The status.
        """
        if not self.is_running:
            return
        self.source_state = message.state
        self.source_detail = message.detail
        self._update_header()

    # ------------------------------------------------------------------ tokens
    @work(thread=True, group="tokens", exclusive=True, exit_on_error=False, description="tokens")
    def _load_tokens(self) -> None:
        infos = SQLiteEncryptedTokenStore.read_token_infos(self.settings.token_store_path)
        self.post_message(TokensLoaded(tuple(infos)))

    def on_tokens_loaded(self, message: TokensLoaded) -> None:
        """Show a fresh read of the token store.

        Args:
            message: The token metadata.
        """
        if not self.is_running:
            return
        self.query_one(TokensPanel).show_infos(message.infos)
        self.note_users(info.user_id for info in message.infos)

    def note_users(self, users: Iterable[str]) -> None:
        """Remember user ids for the filters and the palette.

        Args:
            users: User ids seen in events or the store.
        """
        fresh = set(users) - self._known_users
        if fresh:
            self._known_users |= fresh
            self.query_one(FilterBar).add_users(fresh)

    def known_users(self) -> list[str]:
        """Return the users seen so far (store and events), sorted.

        Returns:
            User ids.
        """
        return sorted(self._known_users | {self.settings.user})

    def known_events(self) -> list[str]:
        """Return the event names seen so far, sorted.

        Returns:
            Event names.
        """
        return sorted(self._known_events)

    def target_user(self) -> str:
        """Return the user the token actions apply to: the highlighted row, else ``--user``.

        Returns:
            A user id.
        """
        return self.query_one(TokensPanel).selected_user or self.settings.user

    # ------------------------------------------------------------------ timers
    def _tick(self) -> None:
        if not self.is_running:
            return
        self.query_one(TokensPanel).tick()
        self._update_header()

    def _update_header(self) -> None:
        now = self.clock()
        if self.source_kind == "bus":
            where = f"in-process · journal {self.settings.journal_path}"
        else:
            where = f"journal {self.settings.journal_path}"
        warn = False
        if self.source_state == "error":
            state, warn = f"error: {self.source_detail}", True
        elif self.source_state == "waiting":
            state, warn = "journal missing (waiting for it)", True
        elif self.last_event_at is not None and now - self.last_event_at > self.stale_after:
            state, warn = "stale", True
        else:
            state = "live"
        last = "no events yet"
        if self.last_event_at is not None:
            last = f"last event {format_ago(self.last_event_at, now)}"
        self.sub_title = f"{state} · {where} · {last}"
        self.query_one(Header).set_class(warn, "-warning")

    # ------------------------------------------------------------------ filters
    @on(FilterBar.Changed)
    def _filter_changed(self, message: FilterBar.Changed) -> None:
        self.query_one(EventLog).set_filter(message.event_filter)

    @on(Input.Submitted, "#filter-text")
    def _filter_submitted(self) -> None:
        self.query_one(EventLog).focus()

    def set_filter(
        self,
        *,
        level: str | None = None,
        event: str | None = None,
        user: str | None = None,
        text: str | None = None,
    ) -> None:
        """Narrow the current filter (the palette's filter commands use this).

        Args:
            level: Minimum level to set.
            event: Event name to set.
            user: User id to set.
            text: Free text to set.
        """
        bar = self.query_one(FilterBar)
        current = bar.event_filter
        bar.apply(
            current.replace(
                level=level if level is not None else current.level,
                event=event if event is not None else current.event,
                user=user if user is not None else current.user,
                text=text if text is not None else current.text,
            )
        )

    def action_clear_filters(self) -> None:
        """Show every event again."""
        self.query_one(FilterBar).apply(EventFilter())

    # ------------------------------------------------------------------ history
    def on_event_log_older_wanted(self, message: EventLog.OlderWanted) -> None:
        """Read an older page from the journal.

        Args:
            message: Where to read from and with which filter.
        """
        self._load_older(message.before, message.event_filter)

    @work(thread=True, group="history", exclusive=True, exit_on_error=False, description="history")
    def _load_older(self, before: int | None, event_filter: EventFilter) -> None:
        entries, next_before, exhausted = read_history(
            self.tail.reader, before=before, event_filter=event_filter, limit=self.page
        )
        self.post_message(
            OlderEventsLoaded(
                tuple(entries),
                before=before or 0,
                next_before=next_before,
                exhausted=exhausted,
                event_filter=event_filter,
            )
        )

    def on_older_events_loaded(self, message: OlderEventsLoaded) -> None:
        """Add an older page above the view (dropped if the filter changed meanwhile).

        Args:
            message: The page.
        """
        if not self.is_running:
            return
        log = self.query_one(EventLog)
        if message.event_filter == log.event_filter:
            log.prepend_older(
                message.entries, exhausted=message.exhausted, next_before=message.next_before
            )

    def on_event_log_details_wanted(self, message: EventLog.DetailsWanted) -> None:
        """Open the detail view of an event.

        Args:
            message: The event.
        """
        self.push_screen(EventDetailScreen(message.entry))

    def action_follow(self) -> None:
        """Jump the Events panel to the newest event."""
        log = self.query_one(EventLog)
        log.action_follow()
        log.focus()

    # ------------------------------------------------------------------ export
    def action_export(self) -> None:
        """Export the filtered events to a JSONL file (the whole journal, or the window)."""
        log = self.query_one(EventLog)
        window = None if self.source_kind == "journal" else list(log.window_entries)
        self._export(log.event_filter, window)

    @work(thread=True, group="export", exclusive=True, exit_on_error=False, description="export")
    def _export(self, event_filter: EventFilter, window: list[LogEntry] | None) -> None:
        path = default_export_path(self.settings.home, self.clock())
        entries: Iterator[LogEntry] | list[LogEntry]
        if window is None:
            entries = iter_matching(self.tail.reader, event_filter)
        else:
            entries = [entry for entry in window if event_filter.matches(entry.event)]
        count = export_jsonl(entries, path)
        self.post_message(Exported(path, count, event_filter.describe()))

    def on_exported(self, message: Exported) -> None:
        """Say where the export went.

        Args:
            message: The finished export.
        """
        self.notify(f"{message.count:,} events ({message.what}) → {message.path}", title="Exported")

    # ------------------------------------------------------------------ token actions
    def action_refresh_token(self, user: str | None = None) -> None:
        """Refresh a user's token now.

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        self._refresh(user or self.target_user())

    @work(group="refresh", exit_on_error=False, description="refresh token")
    async def _refresh(self, user: str) -> None:
        self.notify(f"Refreshing the token of {user}…")
        try:
            await self.services.refresh(user)
        finally:
            self._load_tokens()  # success or failure (a re-login flag), the store changed
        self.notify(f"Token of {user} refreshed")

    def action_login(self, user: str | None = None) -> None:
        """Sign a user in with a device code (shown in a modal; cancellable).

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        self._login(user or self.target_user())

    @work(group="login", exclusive=True, exit_on_error=False, description="device login")
    async def _login(self, user: str) -> None:
        login = await self.services.start_login(user)
        screen = LoginScreen(
            user_id=user,
            user_code=login.user_code,
            verification_uri=login.verification_uri,
            expires_at=login.expires_at,
            clock=self.clock,
        )
        worker = get_current_worker()

        def closed(approved: bool | None) -> None:
            if not approved and worker.is_running:
                worker.cancel()

        def polled(poll: DevicePoll) -> None:
            screen.set_status(poll.status.replace("_", " "))

        await self.push_screen(screen, closed)
        try:
            info = await self.services.complete_login(login, on_poll=polled)
        finally:
            if screen.is_attached and self.screen is screen:
                screen.dismiss(True)
        expires = format_countdown(info.expires_at, self.clock())
        self.notify(f"{user} signed in (token expires {expires})", title="Logged in")
        self._load_tokens()

    def action_logout(self, user: str | None = None) -> None:
        """Forget a user's stored token, after a confirmation.

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        target = user or self.target_user()

        def answered(yes: bool | None) -> None:
            if yes:
                self._logout(target)

        self.push_screen(
            ConfirmScreen(
                f"Log {target} out? The stored token is deleted.", confirm_label="Log out"
            ),
            answered,
        )

    @work(group="logout", exit_on_error=False, description="log out")
    async def _logout(self, user: str) -> None:
        removed = await self.services.logout(user)
        self.notify(f"{user} logged out" if removed else f"{user} had no stored token")
        self._load_tokens()

    # ------------------------------------------------------------------ prompt
    def on_prompt_bar_send(self, message: PromptBar.Send) -> None:
        """Send a prompt through the engine.

        Args:
            message: The prompt.
        """
        self._ask(message.prompt)

    @work(group="prompt", exclusive=True, exit_on_error=False, description="prompt")
    async def _ask(self, prompt: str) -> None:
        panel = self.query_one(AnswerPanel)
        panel.display = True
        panel.start(prompt)
        async for delta in self.services.ask(prompt, user_id=self.settings.user):
            panel.append(delta)
        result = self.services.last_result()
        if result is None:
            panel.finish("done")
            return
        tokens = result.usage.total_tokens
        panel.finish(
            f"{result.finish_reason or 'done'} · {result.latency_ms / 1000:.1f} s · "
            f"{result.attempts} attempt{'s' if result.attempts != 1 else ''} · {tokens} tokens"
        )

    def action_clear_answer(self) -> None:
        """Hide the answer panel."""
        self.query_one(AnswerPanel).display = False

    # ------------------------------------------------------------------ demo
    @work(group="demo", exit_on_error=False, description="sandbox demo")
    async def _run_demo(self) -> None:
        if self._demo is not None:
            await self._demo(self)

    # ------------------------------------------------------------------ workers
    def on_worker_state_changed(self, message: Worker.StateChanged) -> None:
        """The one place worker failures become notifications.

        Args:
            message: The state change.
        """
        worker = message.worker
        if message.state == WorkerState.CANCELLED and worker.group == "login":
            self.notify("Login cancelled", severity="warning")
        if message.state != WorkerState.ERROR:
            return
        text = describe_error(worker.error)
        if worker.group == "prompt" and self.is_running:
            self.query_one(AnswerPanel).fail(text)
        self.notify(text, title=f"{worker.description} failed", severity="error", timeout=10)

    # ------------------------------------------------------------------ focus & keys
    def action_focus_filter(self) -> None:
        """Focus the filter text box."""
        self.query_one("#filter-text", Input).focus()

    def action_focus_prompt(self) -> None:
        """Focus the prompt bar."""
        self.query_one(PromptBar).focus()

    def action_focus_tokens(self) -> None:
        """Focus the Tokens panel."""
        self.query_one(TokensPanel).focus()

    def action_focus_events(self) -> None:
        """Focus the Events panel."""
        self.query_one(EventLog).focus()

    def action_toggle_keys(self) -> None:
        """Show or hide the key panel."""
        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()
