"""The ``saga-tui`` application: token state, retry progress and the live event log on one screen.

Layout (top to bottom): header (source and freshness), Tokens | Retries, the filter bar, the
Events panel, the answer panel (after a first prompt), the prompt bar, the footer.

Blocking work (sqlite reads, exports) runs in thread workers that talk back through messages;
network actions run in async workers (:mod:`saga_tui.actions`); one handler turns every worker
error into a notification. The clock is injected so tests and snapshots can freeze time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, HelpPanel, Input
from textual.worker import Worker, WorkerState, get_current_worker

from saga_magic.core.errors import ArcSagaException
from saga_magic.core.events import (
    EventJournal,
    JournalReader,
    get_journal,
    install_journal,
    subscribe,
)
from saga_magic.core.store import SQLiteEncryptedTokenStore

from .actions import Actions
from .commands import SagaCommands
from .event_names import TOKEN_EVENTS
from .filters import EventFilter
from .messages import (
    EventsBatch,
    Exported,
    LogEntry,
    OlderEventsLoaded,
    SourceStatus,
    TokensLoaded,
)
from .sources import BusSource, JournalTail, read_history
from .widgets.answer_panel import AnswerPanel
from .widgets.event_detail import EventDetailScreen
from .widgets.event_log import EventLog
from .widgets.filter_bar import FilterBar
from .widgets.prompt_bar import PromptBar
from .widgets.retries_panel import RetriesPanel
from .widgets.source_header import SourceHeader, SourceHealth
from .widgets.tokens_panel import TokensPanel

if TYPE_CHECKING:
    from saga_magic.core.config import Settings

    from .services import Services
    from .timefmt import Clock

__all__ = ["SagaApp", "describe_error"]

SourceKind = Literal["journal", "bus"]

_HINTS = re.compile(r"(?:run )?%copilot (login|logout|sandbox)\b")
_HINT_HERE = {
    "login": "press l (log in)",
    "logout": "press o (log out)",
    "sandbox": "run saga-tui --sandbox",
}
_TYPING_ACTIONS = frozenset(
    {
        "refresh_token",
        "login",
        "logout",
        "focus_filter",
        "focus_prompt",
        "export",
        "focus_tokens",
        "focus_events",
    }
)
"""App actions on printable keys: a text box takes those keys, so the footer hides them there."""


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
            # The core's hints name the notebook magic; say what to press or run here instead.
            text += "\n→ " + _HINTS.sub(lambda found: _HINT_HERE[found.group(1)], error.hint)
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
        filter_debounce: Seconds of quiet typing before the text filter applies.
        export_home: Exports go to ``<export_home>/exports``; ``settings.home`` by default.
        demo: An optional coroutine factory run in a worker after mount (``--sandbox`` traffic).
        title_suffix: Added to the header title (e.g. ``sandbox``).
        exit_on_signals: Exit cleanly (closing what the app opened, letting the caller clean up)
            on SIGHUP (the terminal went away) and SIGTERM.
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "ARC SAGA"
    COMMANDS = App.COMMANDS | {SagaCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh_token", "Refresh", tooltip="Refresh the token now"),
        Binding("l", "login", "Log in"),
        Binding("o", "logout", "Log out"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("p", "focus_prompt", "Prompt", show=False),
        Binding("x", "export", "Export"),
        Binding("f1", "toggle_keys", "Keys"),
        Binding("ctrl+q", "quit", "Quit"),
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
        filter_debounce: float = 0.3,
        export_home: Path | None = None,
        demo: Callable[[SagaApp], Awaitable[None]] | None = None,
        title_suffix: str = "",
        exit_on_signals: bool = False,
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
        self.token_poll = token_poll
        self.filter_debounce = filter_debounce
        self._demo = demo
        self.exit_on_signals = exit_on_signals
        """Exit cleanly on SIGHUP and SIGTERM."""
        self._signals: list[signal.Signals] = []
        self.tail = JournalTail(settings.journal_path)
        """The journal follower (its reader serves the tail only)."""
        self.history_reader = JournalReader(settings.journal_path)
        """The reader of history pages (exports open one of their own)."""
        self.bus = BusSource(subscribe)
        """The in-process bus collector (used when ``source == "bus"``)."""
        self.health = SourceHealth(
            journal_path=settings.journal_path, in_process=source == "bus", stale_after=stale_after
        )
        """The source's health, shown in the header."""
        self.events_seen = 0
        """Events received since start."""
        self.actions = Actions(self, export_home=export_home or settings.home)
        """The user's actions (refresh, log in, log out, ask, export) as workers."""
        self._store_error = ""
        self._known_users: set[str] = set()
        self._known_events: set[str] = set()
        self.title = f"ARC SAGA · {title_suffix}" if title_suffix else "ARC SAGA"

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Lay out the panels."""
        yield SourceHeader(icon="◆")
        with Horizontal(id="top"):
            yield TokensPanel(clock=self.clock, primary_user=self.settings.user, id="tokens")
            yield RetriesPanel(clock=self.clock, id="retries")
        yield FilterBar(debounce=self.filter_debounce, id="filters")
        yield EventLog(window=self.window, page=self.page, id="events")
        yield AnswerPanel(id="answer")
        yield PromptBar(id="prompt")
        yield Footer(show_command_palette=False)

    @property
    def services(self) -> Services:
        """The core actions (built from the settings on first use)."""
        if self._services is None:
            from .services import CoreServices

            self._services = CoreServices(self.settings)
        return self._services

    @property
    def source_state(self) -> str:
        """``starting``, ``live``, ``waiting`` (journal missing) or ``error``."""
        return self.health.state

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
            log.placeholder = f"waiting for events in the journal {self.settings.journal_path}"
            self._tail_journal()
        else:
            log.placeholder = "no events yet: act (r, l, p) or let another part of this process"
            self.bus.start()
            self.health.state = "live"
            self.set_interval(self.poll_interval, self._drain_bus, name="drain-bus")
        self.set_interval(1.0, self._tick, name="tick")
        self.set_interval(0.25, self.query_one(RetriesPanel).tick, name="retries")
        self.set_interval(self.token_poll, self.reload_tokens, name="tokens")
        self.reload_tokens()
        self._tick()
        log.focus()
        if self.exit_on_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGHUP, signal.SIGTERM):
                loop.add_signal_handler(signum, self.exit)
                self._signals.append(signum)
        if self._demo is not None:
            self._run_demo()

    async def on_unmount(self) -> None:
        """Stop the sources and close what the app opened."""
        loop = asyncio.get_running_loop()
        while self._signals:
            loop.remove_signal_handler(self._signals.pop())
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
        self.history_reader.close()
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

        def deliver(batch: list[LogEntry]) -> None:
            self.post_message(EventsBatch(tuple(batch)))

        def status(state: str, detail: str) -> None:
            self.post_message(SourceStatus(state, detail))

        self.tail.run(
            deliver,
            status,
            backlog=self.window,
            interval=self.poll_interval,
            cancelled=lambda: worker.is_cancelled,
        )

    def _drain_bus(self) -> None:
        if not self.is_running:
            return
        entries = self.bus.drain()
        if entries:
            self.post_message(EventsBatch(tuple(entries)))
        if self.bus.dropped != self.health.dropped:
            self.health.dropped = self.bus.dropped
            self._update_header()

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
        self.health.last_event_at = max(self.health.last_event_at or 0.0, events[-1].ts)
        self.query_one(EventLog).add_entries(entries)
        self.query_one(RetriesPanel).add_events(events)
        names = {event.event for event in events} - self._known_events
        users = {event.user_id for event in events if event.user_id} - self._known_users
        if names:
            self._known_events |= names
            self.query_one(FilterBar).add_event_names(names)
        if users:
            self.note_users(user for user in users if user is not None)
        if any(event.event in TOKEN_EVENTS for event in events):
            self.reload_tokens()
        self._update_header()

    def on_source_status(self, message: SourceStatus) -> None:
        """Remember the source's health for the header.

        Args:
            message: The status.
        """
        if not self.is_running:
            return
        self.health.state = message.state
        self.health.detail = message.detail
        self._update_header()

    # ------------------------------------------------------------------ tokens
    def reload_tokens(self) -> None:
        """Re-read the token store's clear metadata (in a thread) and show it."""
        self._load_tokens()

    @work(thread=True, group="tokens", exclusive=True, exit_on_error=False, description="tokens")
    def _load_tokens(self) -> None:
        try:
            infos = SQLiteEncryptedTokenStore.read_token_infos(self.settings.token_store_path)
        except ArcSagaException as error:
            self.post_message(TokensLoaded((), error=describe_error(error)))
            return
        self.post_message(TokensLoaded(tuple(infos)))

    def on_tokens_loaded(self, message: TokensLoaded) -> None:
        """Show a fresh read of the token store (or why it failed: said once per new error).

        Args:
            message: The token metadata, or the error.
        """
        if not self.is_running:
            return
        panel = self.query_one(TokensPanel)
        if message.error:
            panel.show_error(message.error.splitlines()[0])
            if message.error != self._store_error:
                self.notify(message.error, title="Token store", severity="error", timeout=10)
            self._store_error = message.error
            return
        self._store_error = ""
        panel.show_infos(message.infos)
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
        self.query_one(SourceHeader).show(self.health, self.clock())

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
        worker = get_current_worker()

        def cancelled() -> bool:  # a newer request (another filter) superseded this one
            return worker.is_cancelled

        if cancelled():
            return
        entries, next_before, exhausted = read_history(
            self.history_reader, before=before, event_filter=event_filter, limit=self.page
        )
        if cancelled():
            return
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

    def action_details(self) -> None:
        """Open the detail view of the highlighted event."""
        self.query_one(EventLog).action_details()

    def action_copy_event(self) -> None:
        """Send the highlighted event as JSON to the terminal clipboard."""
        self.query_one(EventLog).action_copy()

    # ------------------------------------------------------------------ actions
    def action_export(self) -> None:
        """Export the filtered events to a JSONL file (the whole journal, or the window)."""
        self.actions.export()

    def on_exported(self, message: Exported) -> None:
        """Say where the export went.

        Args:
            message: The finished export.
        """
        self.notify(self.actions.exported_note(message), title="Exported", timeout=10)

    def action_refresh_token(self, user: str | None = None) -> None:
        """Refresh a user's token now.

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        self.actions.refresh(user or self.target_user())

    def action_login(self, user: str | None = None) -> None:
        """Sign a user in with a device code (shown in a modal; cancellable).

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        self.actions.login(user or self.target_user())

    def action_logout(self, user: str | None = None) -> None:
        """Forget a user's stored token, after a confirmation.

        Args:
            user: The user; the highlighted one (or ``--user``) by default.
        """
        self.actions.confirm_logout(user or self.target_user())

    def on_prompt_bar_send(self, message: PromptBar.Send) -> None:
        """Send a prompt through the engine.

        Args:
            message: The prompt.
        """
        self.actions.ask(message.prompt)

    def action_clear_answer(self) -> None:
        """Hide the answer panel."""
        self.query_one(AnswerPanel).display = False

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
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the single-key actions while a text box has the focus (it takes those keys).

        Args:
            action: The action name.
            parameters: Its parameters.

        Returns:
            False to hide (and disable) the binding, True otherwise.
        """
        if action in _TYPING_ACTIONS and isinstance(self.focused, Input):
            return action == "focus_events"  # escape still leaves the box
        return True

    def on_descendant_focus(self) -> None:
        """Refresh the footer: which keys work depends on the focus."""
        self.refresh_bindings()

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
