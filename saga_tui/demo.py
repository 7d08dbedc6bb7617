"""``saga-tui --sandbox``: the embedded emulator, a demo sign-in and a little scripted traffic.

Everything happens in a throwaway home folder (key, token store, journal), removed on exit (also
when the terminal closes: SIGHUP, or on SIGTERM), so a first try never touches the user's real
tokens. Exports go to the real ``ARC_SAGA_HOME/exports`` (they would vanish with the throwaway
home). The script:

1. signs the configured user in with a device code (the emulator approves it on the first poll;
   the modal shows the code meanwhile),
2. seeds two more users: one whose token expires in a few minutes (watch the countdown turn to
   *expiring*) and one whose sessions were revoked (a refresh ends in *re-login needed*),
3. asks Copilot once, then again through a 429 storm (429, 429, 503, then an answer: watch the
   Retries panel count down each wait),
4. refreshes the token through a throttled token endpoint (one 429, then a new token).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.worker import Worker, WorkerCancelled, WorkerFailed

from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox

if TYPE_CHECKING:
    from saga_magic.core.config import Settings

    from .app import SagaApp

__all__ = ["DemoScript", "run_sandbox", "sandbox_settings"]

EXPIRING_USER = "bob"
"""Seeded with a token that expires in a few minutes."""
REVOKED_USER = "carol"
"""Seeded, then revoked at the emulator: refreshing ends in re-login needed."""


def sandbox_settings(settings: Settings, sandbox: Sandbox, home: Path) -> Settings:
    """Point the settings at the emulator and a throwaway home (key, store and journal in it).

    Args:
        settings: The user's settings (their ``user`` is kept).
        sandbox: The running emulator.
        home: The throwaway home folder.

    Returns:
        The settings the app runs with.
    """
    env = sandbox.env()
    return settings.with_overrides(
        home=home,
        token_store_path=home / "tokens.db",
        journal_path=home / "journal.db",
        encryption_key=None,
        tenant_id=env["AZURE_TENANT_ID"],
        client_id=env["AZURE_CLIENT_ID"],
        client_secret=None,
        authority_host=env["AZURE_AUTHORITY_HOST"],
        copilot_endpoint=env["ARC_SAGA_COPILOT_ENDPOINT"],
        copilot_model=None,
    )


async def _finish(worker: Worker[Any]) -> None:
    """Wait for a worker; its failure is already a notification, the demo goes on."""
    with contextlib.suppress(WorkerCancelled, WorkerFailed):
        await worker.wait()


class DemoScript:
    """The scripted traffic; run by the app in a worker (``demo=DemoScript(...).run``).

    Args:
        sandbox: The running emulator (faults are queued on it).
        settings: The app's settings (store path, key location, user).
        pause: Awaitable sleep between steps (tests pass a fast one).
        storm: Chat outcomes queued for the second prompt.
        token_faults: Token-endpoint outcomes queued for the refresh.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        settings: Settings,
        *,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
        storm: Sequence[str] = ("429_both", "429_seconds_only", "503", "ok"),
        token_faults: Sequence[str] = ("token_429:2", "ok"),
    ) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self._pause = pause
        self._storm = list(storm)
        self._token_faults = list(token_faults)
        self.steps: list[str] = []
        """Steps completed, in order (for tests and the final notification)."""

    async def run(self, app: SagaApp) -> None:
        """Drive the demo.

        Args:
            app: The running app.
        """
        user = self.settings.user
        await self._pause(1.0)
        app.notify(f"Sandbox: signing {user} in with a device code (auto-approved)")
        await _finish(app.actions.login(user))
        self.steps.append("login")
        await self._seed_users()
        app.reload_tokens()
        self.steps.append("seed")
        await self._pause(2.0)
        await _finish(app.actions.ask("Hello from the sandbox! What can you do?"))
        self.steps.append("ask")
        await self._pause(2.0)
        app.notify(f"Sandbox: a 429 storm on the chat endpoint ({', '.join(self._storm)})")
        self.sandbox.script("chat", self._storm)
        await _finish(app.actions.ask("Tell me about retries."))
        self.steps.append("storm")
        await self._pause(2.0)
        app.notify("Sandbox: refreshing the token through a throttled token endpoint")
        self.sandbox.script("token", self._token_faults)
        await _finish(app.actions.refresh(user))
        self.steps.append("refresh")
        await self._pause(1.0)
        await _finish(app.actions.refresh(REVOKED_USER))
        self.steps.append("revoked")
        app.notify(
            "Demo done. Try: p to ask, r to refresh, l to log in, / to filter, enter on an "
            "event, F1 for every key.",
            title="Sandbox",
            timeout=15,
        )

    async def _seed_users(self) -> None:
        # Opening the store reads (or creates) the key file: a thread, not the UI's loop.
        store = await asyncio.to_thread(
            SQLiteEncryptedTokenStore,
            self.settings.token_store_path,
            encryption_key=self.settings.encryption_key,
            key_path=self.settings.home / ".token_key",
        )
        try:
            expiring = self.sandbox.issue_tokens(EXPIRING_USER, expires_in=330)
            await store.save_token(EXPIRING_USER, expiring)
            revoked = self.sandbox.issue_tokens(REVOKED_USER, expires_in=60)
            await store.save_token(REVOKED_USER, revoked)
            self.sandbox.revoke_user(REVOKED_USER)
        finally:
            await store.aclose()


def run_sandbox(settings: Settings, *, demo: bool = True) -> int:
    """Start the emulator, run the app on it with the scripted demo, stop everything.

    The throwaway home is removed when the app ends, also after SIGHUP or SIGTERM (the app
    exits cleanly on those). Exports go to ``settings.home`` (the real home).

    Args:
        settings: The user's settings.
        demo: Drive the scripted traffic.

    Returns:
        The exit status.
    """
    from .app import SagaApp

    sandbox = Sandbox(auto_approve=True, device_poll_interval=2, stream_chunk_delay=0.03)
    with tempfile.TemporaryDirectory(prefix="saga-sandbox-") as folder:
        sandbox.start()
        try:
            effective = sandbox_settings(settings, sandbox, Path(folder))
            script = DemoScript(sandbox, effective)
            app = SagaApp(
                effective,
                source="bus",
                demo=script.run if demo else None,
                title_suffix="sandbox",
                export_home=settings.home,
                exit_on_signals=True,
            )
            app.run()
        finally:
            sandbox.stop()
    return 0
