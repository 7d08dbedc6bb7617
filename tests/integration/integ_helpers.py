"""Helpers for the integration tests (a uniquely named module: there is no tests package).

Everything here talks to a real :class:`~saga_magic.sandbox.Sandbox` over loopback HTTP. The
multi-process worker lives in ``integ_worker`` (it imports the core only, so children start fast).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AIResult, AITask
from saga_magic.sandbox import Sandbox

USER = "default"
PROMPT = "hello sandbox world"
CALL_LIMIT = 5.0
"""Seconds any one call may take before a test calls it a hang."""


class Clock(Protocol):
    """The shape of ``tests/conftest.py``'s ``FakeClock``."""

    now: float
    sleeps: list[float]

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


MakeAuth = Callable[..., EntraIDAuthManager]
MakeEngine = Callable[..., CopilotReasoningEngine]


def no_jitter(_wait: float) -> float:
    """Jitter that adds nothing (exact, assertable waits)."""
    return 0.0


async def seed(
    sb: Sandbox,
    store: SQLiteEncryptedTokenStore,
    *,
    user: str = USER,
    expires_at: float | None = None,
    sandbox_user: str | None = None,
) -> dict[str, Any]:
    """Issue tokens in the sandbox (as if the user had signed in) and save them in the store.

    Args:
        sb: The sandbox.
        store: The real store.
        user: Core user id (row key).
        expires_at: Override the saved expiry (e.g. in the past: an expired token).
        sandbox_user: Directory user in the sandbox.

    Returns:
        The token-endpoint body the sandbox issued.
    """
    body = sb.issue_tokens(sandbox_user)
    record = dict(body)
    if expires_at is not None:
        record.pop("expires_in", None)
        record["expires_at"] = expires_at
    await store.save_token(user, record)
    return body


def issued_secrets(sb: Sandbox) -> set[str]:
    """Every access token, refresh token and device code the sandbox has issued so far."""
    state = sb.state
    with state.lock:
        found = set(state.access_tokens) | set(state.refresh_tokens) | set(state.device_flows)
    if sb.client_secret:
        found.add(sb.client_secret)
    return found


def new_access_tokens(sb: Sandbox, before: set[str]) -> set[str]:
    """Access tokens issued since ``before`` was taken."""
    with sb.state.lock:
        return set(sb.state.access_tokens) - before


def access_tokens(sb: Sandbox) -> set[str]:
    """Every access token issued so far."""
    with sb.state.lock:
        return set(sb.state.access_tokens)


@dataclass
class Capture:
    """An httpx event hook that keeps every token-endpoint answer body (test side only)."""

    bodies: list[Mapping[str, Any]] = field(default_factory=list)

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if "json" in response.headers.get("content-type", ""):
            try:
                payload = response.json()
            except ValueError:
                return
            if isinstance(payload, dict):
                self.bodies.append(payload)

    def values(self) -> set[str]:
        """Secret-bearing values seen in the captured answers."""
        keys = ("access_token", "refresh_token", "id_token", "device_code")
        return {
            str(body[key]) for body in self.bodies for key in keys if isinstance(body.get(key), str)
        }


def make_auth(
    sb: Sandbox,
    store: SQLiteEncryptedTokenStore,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Any] = asyncio.sleep,
    **options: Any,
) -> EntraIDAuthManager:
    """An auth manager pointed at the sandbox (deterministic jitter)."""
    options.setdefault("jitter", no_jitter)
    options.setdefault("timeout", 5.0)
    options.setdefault("tenant_id", sb.tenant_id)
    options.setdefault("client_id", sb.client_id)
    options.setdefault("client_secret", sb.client_secret)
    options.setdefault("authority_host", sb.authority_host)
    return EntraIDAuthManager(store, clock=clock, sleep=sleep, **options)


def make_engine(
    sb: Sandbox,
    auth: EntraIDAuthManager,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Any] = asyncio.sleep,
    **options: Any,
) -> CopilotReasoningEngine:
    """An engine pointed at the sandbox's default deployment (deterministic jitter)."""
    options.setdefault("endpoint", sb.chat_endpoint)
    options.setdefault("jitter", no_jitter)
    options.setdefault("timeout", 5.0)
    options.setdefault("idle_timeout", 2.0)
    return CopilotReasoningEngine(auth, clock=clock, sleep=sleep, **options)


async def reason_within(engine: CopilotReasoningEngine, task: AITask | None = None) -> AIResult:
    """``engine.reason`` (``PROMPT`` by default) under :data:`CALL_LIMIT`: a hang fails."""
    async with asyncio.timeout(CALL_LIMIT):
        return await engine.reason(task or AITask(PROMPT))


async def stream_within(engine: CopilotReasoningEngine, task: AITask | None = None) -> list[str]:
    """Read a whole ``engine.stream`` under :data:`CALL_LIMIT`; return the deltas."""
    deltas: list[str] = []
    async with asyncio.timeout(CALL_LIMIT):
        stream = engine.stream(task or AITask(PROMPT))
        async with stream:
            async for delta in stream:
                deltas.append(delta)
    return deltas
