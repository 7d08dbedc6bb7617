"""One extension load's state: settings, the loop thread, the core objects, events, the sandbox.

Nothing of the core is imported or built when the extension loads; the first ``%%copilot``
cell or ``%copilot`` subcommand (except ``help``) calls :meth:`CopilotSession.observe`: it reads
``Settings.from_env()``, installs the event journal (so a ``saga-tui`` in another process can
watch this kernel), and subscribes to the in-process event bus (for ``%copilot log``). The token
store, auth manager and engines are built on the loop thread when first needed. ``close()``
undoes all of it (the core's close is bounded by ``close_timeout``, so a stuck connection cannot
hang ``%unload_ext``).

``--model`` on an Azure *deployments* URL (``.../openai/deployments/{name}/chat/completions``)
names the deployment: the engine for that model gets the URL with the deployment segment
replaced (one engine per user and model).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from .interpolate import ErrorLog
from .memory import ConversationMemory
from .runner import LoopThread

if TYPE_CHECKING:
    import httpx

    from saga_magic.core.auth import EntraIDAuthManager
    from saga_magic.core.config import Settings
    from saga_magic.core.events import Event, EventJournal
    from saga_magic.core.store import SQLiteEncryptedTokenStore
    from saga_magic.core.types import AIResult, AITask

__all__ = ["CopilotSession", "EngineFactory", "LastRequest"]

logger = logging.getLogger("saga.magic")

EngineFactory = Callable[["CopilotSession", str, "str | None"], Any]
"""Builds an engine (``reason(task)``, ``stream(task)``, ``close()``) for a user and model."""
Emit = Callable[[tuple[str, Any]], None]

_DEPLOYMENTS_PATH = re.compile(r"/openai/deployments/[^/]+/chat/completions$")


def deployment_url(endpoint: str, deployment: str) -> str:
    """Return an Azure deployments URL with its deployment segment replaced.

    Args:
        endpoint: ``https://<resource>/openai/deployments/<old>/chat/completions?api-version=``.
        deployment: The deployment to address instead.

    Returns:
        The URL (query kept); ``endpoint`` unchanged when it is not a deployments URL.
    """
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    segment = f"/openai/deployments/{quote(deployment, safe='')}/chat/completions"
    new_path, count = _DEPLOYMENTS_PATH.subn(lambda _: segment, path)
    return urlunsplit(parts._replace(path=new_path)) if count else endpoint


@dataclass(frozen=True, slots=True)
class LastRequest:
    """Summary of the last ``%%copilot`` request, for ``%copilot status``."""

    at: float
    """Unix time it finished."""
    user: str
    """User id."""
    result: AIResult | None
    """The answer, when it succeeded."""
    error: str | None = None
    """The one-line error, when it failed."""


class CopilotSession:
    """Everything one ``%load_ext saga_magic`` owns.

    Args:
        settings_factory: Builds the settings at first use (``Settings.from_env`` by default).
        engine_factory: Builds an engine for ``(session, user, model)``; the real
            :class:`~saga_magic.core.engine.CopilotReasoningEngine` by default (tests pass fakes).
        event_buffer: How many recent events ``%copilot log`` can show.
        clock: Unix-time clock.
        close_timeout: Seconds :meth:`close` waits for the core's connections to close.
    """

    def __init__(
        self,
        *,
        settings_factory: Callable[[], Settings] | None = None,
        engine_factory: EngineFactory | None = None,
        event_buffer: int = 500,
        clock: Callable[[], float] = time.time,
        close_timeout: float = 5.0,
    ) -> None:
        self._settings_factory = settings_factory
        self._engine_factory = engine_factory
        self._close_timeout = close_timeout
        self.clock = clock
        """Unix-time clock."""
        self.runner = LoopThread()
        """The background event loop the core runs on."""
        self.memory = ConversationMemory()
        """Conversations per user."""
        self.errors = ErrorLog()
        """Errors of earlier cells, for ``{Err[n]}``."""
        self.events: deque[Event] = deque(maxlen=event_buffer)
        """Recent events of this process, newest last."""
        self.last: LastRequest | None = None
        """The last request's summary."""
        self.sandbox: Any = None
        """The embedded emulator, once ``%copilot sandbox`` started it."""
        self.base_settings: Settings | None = None
        """The settings from the environment, kept while the sandbox overrides them."""
        self._settings: Settings | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._null_handler: logging.Handler | None = None
        self._journal: EventJournal | None = None
        self._http: httpx.AsyncClient | None = None
        self._store: SQLiteEncryptedTokenStore | None = None
        self._auth: EntraIDAuthManager | None = None
        self._engines: dict[tuple[str, str | None], Any] = {}

    # -- settings and observation -------------------------------------------------------

    def observe(self) -> Settings:
        """Read the settings and start observing (journal, event bus), once; idempotent.

        Returns:
            The effective settings.

        Raises:
            ConfigurationError: an environment variable is malformed.
        """
        if self._settings is None:
            if self._settings_factory is not None:
                settings = self._settings_factory()
            else:
                from saga_magic.core.config import Settings

                settings = Settings.from_env()
            self._settings = settings
            self._observe(settings)
        return self._settings

    @property
    def settings(self) -> Settings:
        """The effective settings (:meth:`observe` on first use)."""
        return self.observe()

    @property
    def default_user(self) -> str:
        """The configured user, or ``"default"`` while the settings are not (or cannot be) read."""
        return self._settings.user if self._settings is not None else "default"

    def _observe(self, settings: Settings) -> None:
        from saga_magic.core import events

        # Without a handler anywhere on "saga", logging's last-resort handler would print every
        # WARNING event into the cell; users who configure logging still get them.
        self._null_handler = logging.NullHandler()
        logging.getLogger("saga").addHandler(self._null_handler)
        self._unsubscribe = events.subscribe(self.events.append)
        if events.get_journal() is None:  # someone else's journal (a test, an app) is kept
            try:
                journal = events.EventJournal(settings.journal_path)
            except Exception as error:  # a broken journal must not break the magic
                logger.warning("event journal unavailable: %s", error)
            else:
                events.install_journal(journal)
                self._journal = journal

    def use_settings(self, settings: Settings) -> None:
        """Switch to other settings (the sandbox): closes the core objects built from the old ones.

        Args:
            settings: The new settings (applied even when closing the old objects fails).
        """
        try:
            self.reset_core()
        finally:
            if self._settings is None:
                self._observe(settings)
            self._settings = settings

    def deployment_for(self, model: str | None) -> str | None:
        """The deployment ``model`` addresses, when the endpoint is an Azure deployments URL.

        Args:
            model: The ``--model`` override, or ``None``.

        Returns:
            ``model`` when it replaces the URL's deployment segment; ``None`` otherwise (no
            override, no endpoint, or a shape that sends ``model`` in the body).
        """
        endpoint = self.settings.copilot_endpoint
        if model is None or endpoint is None:
            return None
        return model if _DEPLOYMENTS_PATH.search(urlsplit(endpoint).path.rstrip("/")) else None

    # -- core objects (built and used on the loop thread) -----------------------------------

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        return self._http

    def store(self) -> SQLiteEncryptedTokenStore:
        """The encrypted token store (built on first use).

        Returns:
            The store.

        Raises:
            TokenStorageError: the key or the database is unusable.
        """
        if self._store is None:
            from saga_magic.core.store import SQLiteEncryptedTokenStore

            settings = self.settings
            self._store = SQLiteEncryptedTokenStore(settings.token_store_path, settings=settings)
        return self._store

    def auth(self) -> EntraIDAuthManager:
        """The Entra ID auth manager (built on first use; call on the loop thread).

        Returns:
            The manager.

        Raises:
            ConfigurationError: tenant or client id missing.
        """
        if self._auth is None:
            from saga_magic.core.auth import EntraIDAuthManager

            settings = self.settings
            settings.require("tenant_id", "client_id")
            self._auth = EntraIDAuthManager.from_settings(
                settings, store=self.store(), http_client=self._http_client()
            )
        return self._auth

    def engine(self, user: str, model: str | None = None) -> Any:
        """The engine for ``user`` and ``model`` (built on first use; call on the loop thread).

        Args:
            user: The user id.
            model: Model override, or ``None`` for the configured one.

        Returns:
            An engine with ``reason``, ``stream`` and ``close``.

        Raises:
            ConfigurationError: endpoint, tenant or client id missing.
        """
        key = (user, model)
        if key not in self._engines:
            if self._engine_factory is not None:
                self._engines[key] = self._engine_factory(self, user, model)
            else:
                from saga_magic.core.engine import CopilotReasoningEngine

                settings = self.settings
                settings.require("copilot_endpoint", "tenant_id", "client_id")
                endpoint = str(settings.copilot_endpoint)
                deployment = self.deployment_for(model)
                if deployment is not None:  # the path names the deployment: no body model
                    endpoint, model_sent = deployment_url(endpoint, deployment), None
                else:
                    model_sent = model or settings.copilot_model
                self._engines[key] = CopilotReasoningEngine(
                    self.auth(),
                    endpoint=endpoint,
                    user_id=user,
                    model=model_sent,
                    http_client=self._http_client(),
                    journal_content=settings.journal_content,
                )
        return self._engines[key]

    async def ask(
        self, task: AITask, *, user: str, model: str | None, stream: bool, emit: Emit
    ) -> AIResult:
        """Run ``task`` (on the loop thread), pushing ``("delta", text)`` items to ``emit``.

        Args:
            task: The task.
            user: The user id.
            model: Model override.
            stream: Stream the answer (deltas) or wait for the whole of it.
            emit: Thread-safe sink for deltas (a queue's ``put``).

        Returns:
            The engine's result.
        """
        engine = self.engine(user, model)
        if not stream:
            result: AIResult = await engine.reason(task)
            return result
        chat_stream = engine.stream(task)
        try:
            async for delta in chat_stream:
                emit(("delta", delta))
        finally:
            await chat_stream.aclose()
        streamed: AIResult | None = chat_stream.result
        if streamed is None:  # pragma: no cover - the engine sets it whenever iteration ends
            raise RuntimeError("the answer stream ended without a result")
        return streamed

    def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``make()`` on the loop thread and wait (an interrupt cancels it).

        Args:
            make: Builds the awaitable (called on the loop thread).

        Returns:
            Its result.
        """

        async def call() -> Any:
            return await make()

        return self.runner.run(call())

    # -- teardown ---------------------------------------------------------------------------

    async def _aclose_core(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        auth, self._auth = self._auth, None
        http, self._http = self._http, None
        for engine in engines:
            await engine.close()
        if auth is not None:
            await auth.close()
        if http is not None:
            await http.aclose()

    def reset_core(self, *, timeout: float | None = None) -> None:
        """Close the engines, auth manager, HTTP client and store (they are rebuilt on use).

        Args:
            timeout: Seconds to wait for the connections to close; ``None`` waits for ever.

        Raises:
            TimeoutError: they did not close in time (the closing was cancelled; the store is
                closed anyway).
        """
        try:
            if self._engines or self._auth is not None or self._http is not None:
                self.runner.run(self._aclose_core(), timeout=timeout)
        finally:
            store, self._store = self._store, None
            if store is not None:
                store.close()

    def close(self) -> None:
        """Close everything this session opened: core objects, sandbox, journal, loop thread.

        A core that does not close within ``close_timeout`` seconds is abandoned (a warning is
        logged) rather than blocking the caller.
        """
        try:
            self.reset_core(timeout=self._close_timeout)
        except TimeoutError:
            logger.warning(
                "closing the Copilot connections took more than %s s; abandoned",
                self._close_timeout,
            )
        finally:
            self.runner.stop()
            sandbox, self.sandbox = self.sandbox, None
            if sandbox is not None:
                sandbox.stop()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self._null_handler is not None:
                logging.getLogger("saga").removeHandler(self._null_handler)
                self._null_handler = None
            journal, self._journal = self._journal, None
            if journal is not None:
                from saga_magic.core import events

                if events.get_journal() is journal:
                    events.install_journal(None)
                journal.close()
