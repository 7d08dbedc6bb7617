"""The core's actions as the TUI uses them: refresh, log in, log out, ask.

:class:`CoreServices` builds the auth manager and the engine lazily from :class:`Settings` (so the
TUI starts, and shows the journal, even when Entra is not configured) and closes them on exit.
Tests give the app any object with the same methods (:class:`Services`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.types import AIResult, AITask

if TYPE_CHECKING:
    from saga_magic.core.config import Settings
    from saga_magic.core.device import DeviceCodeLogin, DevicePoll
    from saga_magic.core.types import TokenInfo

__all__ = ["CoreServices", "Services"]


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

    def auth(self) -> EntraIDAuthManager:
        """Return the auth manager, building it on first use.

        Returns:
            The manager.

        Raises:
            ConfigurationError: Entra settings are missing (the message names the variable).
        """
        if self._auth is None:
            self.settings.require("tenant_id", "client_id")
            self._auth = EntraIDAuthManager.from_settings(self.settings)
        return self._auth

    def engine(self, user_id: str) -> CopilotReasoningEngine:
        """Return the engine for a user, building it on first use.

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
            settings = self.settings.with_overrides(user=user_id)
            engine = CopilotReasoningEngine.from_settings(settings, auth_manager=self.auth())
            self._engines[user_id] = engine
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
        return await self.auth().force_refresh(user_id)

    async def start_login(self, user_id: str) -> DeviceCodeLogin:
        """Start a device-code login.

        Args:
            user_id: Whose token the login saves.

        Returns:
            The code and link to show.

        Raises:
            ArcSagaException: Entra refused or could not be reached.
        """
        return await self.auth().start_device_login(user_id)

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
        return await self.auth().complete_device_login(login, on_poll=on_poll)

    async def logout(self, user_id: str) -> bool:
        """Forget a user's stored token.

        Args:
            user_id: The user.

        Returns:
            True when a token was deleted.

        Raises:
            ArcSagaException: the store could not be changed.
        """
        return await self.auth().logout(user_id)

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
        stream = self.engine(user_id).stream(AITask(prompt))
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
