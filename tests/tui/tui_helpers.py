"""Helpers for the TUI tests: events, journals, token seeding, a fake core, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_magic.core.config import Settings
from saga_magic.core.device import DeviceCodeLogin, DevicePoll
from saga_magic.core.events import Event, EventJournal
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AIProvider, AIResult, TokenInfo, TokenUsage

T0 = 1_700_000_000.0
"""The frozen 'now' of the TUI tests (2023-11-14 22:13:20 UTC)."""


class Clock:
    """A settable unix clock (the TUI only reads time)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_event(
    name: str = "token_refresh_start",
    *,
    ts: float = T0,
    level: str = "INFO",
    user: str | None = "alice",
    op: str | None = "op1",
    **context: Any,
) -> Event:
    """Build an event like the core would."""
    return Event(ts=ts, level=level, event=name, user_id=user, op_id=op, pid=4242, context=context)


def retry_event(
    name: str = "copilot_retry",
    *,
    ts: float = T0,
    op: str = "op1",
    attempt: int = 1,
    wait_s: float = 4.0,
    reason: str = "429",
    user: str = "alice",
) -> Event:
    """A retry event with the context the core's retry policy emits."""
    return make_event(
        name,
        ts=ts,
        level="WARNING",
        user=user,
        op=op,
        attempt=attempt,
        max_attempts=6,
        wait_s=wait_s,
        next_attempt_at=ts + wait_s,
        reason=reason,
    )


def write_journal(path: Path, events: Iterable[Event]) -> None:
    """Append events to a journal file and wait until they are written."""
    journal = EventJournal(path)
    try:
        for event in events:
            journal.append(event)
        assert journal.flush(10.0)
    finally:
        journal.close()


async def seed_tokens(settings: Settings, clock: Clock, users: dict[str, float]) -> None:
    """Store tokens for users; the value is the access token's lifetime in seconds."""
    store = SQLiteEncryptedTokenStore(
        settings.token_store_path, key_path=settings.home / ".token_key", clock=clock
    )
    try:
        for user, lifetime in users.items():
            await store.save_token(
                user,
                {
                    "access_token": f"at-{user}",
                    "refresh_token": f"rt-{user}",
                    "expires_in": lifetime,
                    "scope": "https://cognitiveservices.azure.com/.default offline_access",
                    "token_type": "Bearer",
                },
            )
    finally:
        store.close()


@dataclass
class FakeServices:
    """A scriptable stand-in for the core's actions."""

    clock: Clock
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    answer: tuple[str, ...] = ("Hello", ", ", "world")
    before_answer: Callable[[], Awaitable[None]] | None = None
    before_refresh: Callable[[], Awaitable[object]] | None = None
    login_gate: asyncio.Event = field(default_factory=asyncio.Event)
    polls: int = 0
    closed: bool = False
    result: AIResult | None = None

    def _maybe_fail(self, action: str) -> None:
        error = self.fail.get(action)
        if error is not None:
            raise error

    async def refresh(self, user_id: str) -> str:
        self.calls.append(("refresh", user_id))
        if self.before_refresh is not None:
            await self.before_refresh()
        self._maybe_fail("refresh")
        return "new-token"

    async def start_login(self, user_id: str) -> DeviceCodeLogin:
        self.calls.append(("start_login", user_id))
        self._maybe_fail("start_login")
        return DeviceCodeLogin(
            user_id=user_id,
            user_code="ABCD-EFGH",
            verification_uri="https://microsoft.com/devicelogin",
            message="To sign in, use a web browser...",
            expires_at=self.clock() + 900,
            interval=5,
        )

    async def complete_login(
        self, login: DeviceCodeLogin, *, on_poll: Callable[[DevicePoll], None] | None = None
    ) -> TokenInfo:
        self.calls.append(("complete_login", login.user_id))
        if on_poll is not None:
            now = self.clock()
            on_poll(DevicePoll(1, "authorization_pending", 5, now + 5, login.expires_at))
        await self.login_gate.wait()
        self._maybe_fail("complete_login")
        now = self.clock()
        return TokenInfo(login.user_id, now + 3600, now, now, ("scope",))

    async def logout(self, user_id: str) -> bool:
        self.calls.append(("logout", user_id))
        self._maybe_fail("logout")
        return user_id != "nobody"

    async def ask(self, prompt: str, *, user_id: str) -> AsyncIterator[str]:
        self.calls.append(("ask", prompt))
        self.result = None
        if self.before_answer is not None:
            await self.before_answer()
        self._maybe_fail("ask")
        for delta in self.answer:
            yield delta
        self.result = AIResult(
            response_text="".join(self.answer),
            finish_reason="stop",
            usage=TokenUsage(3, 4, 7),
            provider=AIProvider.COPILOT_CHAT,
            task_id="t1",
            latency_ms=1234.0,
            attempts=2,
        )

    def last_result(self) -> AIResult | None:
        return self.result

    async def aclose(self) -> None:
        self.closed = True


async def wait_for(pilot: Any, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``predicate()`` holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)
