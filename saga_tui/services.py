"""The core's actions as the TUI uses them: refresh, log in, log out, ask.

:class:`CoreServices` builds the auth manager and the engine lazily from :class:`Settings` (so the
TUI starts, and shows the journal, even when Entra is not configured), in a thread (opening the
store and building HTTP clients blocks), and closes them on exit. Logging out needs neither Entra
nor the key: it deletes the row from the store. Tests give the app any object with the same
methods (:class:`Services`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.events import log_with_context, new_op_id
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AIResult, AITask

if TYPE_CHECKING:
    from saga_magic.core.config import Settings
    from saga_magic.core.device import DeviceCodeLogin, DevicePoll
    from saga_magic.core.types import TokenInfo

__all__ = ["CoreServices", "Services"]

_log = logging.getLogger("saga.tui")


class Services(Protocol):
    """What the app needs from the core (a seam for tests)."""

    async def refresh(self, user_id: str) -> str:
        """Refresh a user's access token now; returns the new token (never shown)."""

    async def start_login(self, user_id: str) -> DeviceCodeLogin:
        """Start a device-code login."""

    async def complete_login(
        self, login: DeviceCodeLogin, *, on_poll: Callable[[DevicePoll], None] | None = None
    ) -> TokenInfo:
        """Poll until the login ends (cancellable); saves the token."""

    async def logout(self, user_id: str) -> bool:
        """Forget a user's stored token; True when there was one."""

    def ask(self, prompt: str, *, user_id: str) -> AsyncIterator[str]:
        """Stream the engine's answer to ``prompt`` as text deltas."""

    def last_result(self) -> AIResult | None:
        """The result of the last finished :meth:`ask`."""

    async def aclose(self) -> None:
        """Close HTTP clients and stores."""


class CoreServices:
    """:class:`Services` backed by :class:`EntraIDAuthManager` and :class:`CopilotReasoningEngine`.

    Args:
        settings: Where the store is and how to reach Entra and the chat endpoint.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._auth: EntraIDAuthManager | None = None
        self._engines: dict[str, CopilotReasoningEngine] = {}
        self._result: AIResult | None = None
        self._building = asyncio.Lock()

    async def auth(self) -> EntraIDAuthManager:
        """Return the auth manager, building it (in a thread) on first use.

        Returns:
            The manager.

        Raises:
            ConfigurationError: Entra settings are missing (the message names the variable).
            TokenStorageError: the token store or its key cannot be opened.
        """
        async with self._building:
            if self._auth is None:
                self.settings.require("tenant_id", "client_id")
                self._auth = await asyncio.to_thread(
                    EntraIDAuthManager.from_settings, self.settings
                )
        return self._auth

    async def engine(self, user_id: str) -> CopilotReasoningEngine:
        """Return the engine for a user, building it (in a thread) on first use.

        Args:
            user_id: Whose token the engine sends.

        Returns:
            The engine.

        Raises:
            ConfigurationError: the chat endpoint or Entra settings are missing.
        """
        engine = self._engines.get(user_id)
        if engine is None:
            self.settings.require("copilot_endpoint")
            auth = await self.auth()
            settings = self.settings.with_overrides(user=user_id)
            engine = await asyncio.to_thread(
                CopilotReasoningEngine.from_settings, settings, auth_manager=auth
            )
            self._engines[user_id] = engine  # the app runs one prompt at a time
        return engine

    async def refresh(self, user_id: str) -> str:
        """Refresh a user's access token now.

        Args:
            user_id: The user.

        Returns:
            The new access token (the app never shows it).

        Raises:
            ArcSagaException: the refresh failed (see the error tree).
        """
        return await (await self.auth()).force_refresh(user_id)

    async def start_login(self, user_id: str) -> DeviceCodeLogin:
        """Start a device-code login.

        Args:
            user_id: Whose token the login saves.

        Returns:
            The code and link to show.

        Raises:
            ArcSagaException: Entra refused or could not be reached.
        """
        return await (await self.auth()).start_device_login(user_id)

    async def complete_login(
        self, login: DeviceCodeLogin, *, on_poll: Callable[[DevicePoll], None] | None = None
    ) -> TokenInfo:
        """Poll until the user approves, declines or the code expires; cancellable.

        Args:
            login: The started login.
            on_poll: Called after each unfinished poll.

        Returns:
            The stored token's metadata.

        Raises:
            AuthenticationError: declined or expired.
        """
        return await (await self.auth()).complete_device_login(login, on_poll=on_poll)

    async def logout(self, user_id: str) -> bool:
        """Forget a user's stored token; needs no Entra settings and never decrypts.

        When the auth manager is running (this session refreshed or signed in), it logs out
        (which also stops a refresh in flight); otherwise the row is deleted from the store
        directly and a ``logout`` event is emitted the way the core does.

        Args:
            user_id: The user.

        Returns:
            True when a token was deleted; False when the user had none.

        Raises:
            TokenStorageError: the store (or its key file) could not be opened or changed.
        """
        if self._auth is not None:
            return await self._auth.logout(user_id)
        path = self.settings.token_store_path
        infos = await asyncio.to_thread(SQLiteEncryptedTokenStore.read_token_infos, path)
        if all(info.user_id != user_id for info in infos):
            return False
        store = await asyncio.to_thread(SQLiteEncryptedTokenStore, path, settings=self.settings)
        try:
            deleted = await store.delete_token(user_id)
        finally:
            await store.aclose()
        log_with_context(
            _log, logging.INFO, "logout", user_id=user_id, op_id=new_op_id(), deleted=deleted
        )
        return deleted

    async def ask(self, prompt: str, *, user_id: str) -> AsyncIterator[str]:
        """Stream the answer to a prompt.

        Args:
            prompt: The prompt.
            user_id: Whose token to use.

        Yields:
            Text deltas.

        Raises:
            ArcSagaException: the request failed after its retries.
        """
        self._result = None
        stream = (await self.engine(user_id)).stream(AITask(prompt))
        async for delta in stream:
            yield delta
        self._result = stream.result

    def last_result(self) -> AIResult | None:
        """Return the result of the last finished :meth:`ask`.

        Returns:
            The result, or ``None``.
        """
        return self._result

    async def aclose(self) -> None:
        """Close the engines, then the auth manager (and the store it owns)."""
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.close()
        auth, self._auth = self._auth, None
        if auth is not None:
            await auth.close()
