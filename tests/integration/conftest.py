"""Fixtures for the integration tests: a real sandbox on loopback, a real store, the real core.

The core and the sandbox share one fake clock (started at the current wall-clock second, so HTTP
dates and JWT times agree); the core's sleeps are fake, so no real backoff is ever waited.
Real-socket timings (slow headers, stalls) use a few hundred milliseconds at most.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from integ_helpers import Clock, MakeAuth, MakeEngine, make_auth, make_engine, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.events import Event, subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox


@pytest.fixture
def clock(fake_clock: Any) -> Clock:
    """The shared fake clock, set to the current wall-clock second."""
    fake_clock.now = float(int(time.time()))
    clock: Clock = fake_clock
    return clock


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[Sandbox]:
    """A public-client sandbox on the fake clock, with one-hour tokens."""
    with Sandbox(token_lifetime=3600, clock=clock) as sb:
        yield sb


@pytest.fixture
def store_key() -> str:
    """A fresh Fernet key."""
    return SQLiteEncryptedTokenStore.generate_key()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the token store lives."""
    return tmp_path / "store" / "tokens.db"


@pytest.fixture
def store(store_path: Path, store_key: str, clock: Clock) -> Iterator[SQLiteEncryptedTokenStore]:
    """A real encrypted SQLite store (closed after the test)."""
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key, clock=clock) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A shared client for plain-http loopback (no TLS context to build: fast to create)."""
    async with httpx.AsyncClient(verify=False) as client:
        yield client


@pytest.fixture
async def auth_factory(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, clock: Clock, http: httpx.AsyncClient
) -> AsyncIterator[MakeAuth]:
    """Build auth managers on the sandbox (fake clock and sleep); all closed at the end.

    They share the ``http`` client unless a test passes ``http_client`` (``None``: their own).
    """
    made: list[EntraIDAuthManager] = []

    def build(
        sb: Sandbox | None = None, st: SQLiteEncryptedTokenStore | None = None, **options: Any
    ) -> EntraIDAuthManager:
        options.setdefault("http_client", http)
        manager = make_auth(sb or sandbox, st or store, clock=clock, sleep=clock.sleep, **options)
        made.append(manager)
        return manager

    yield build
    for manager in made:
        await manager.close()


@pytest.fixture
async def engine_factory(
    sandbox: Sandbox, clock: Clock, http: httpx.AsyncClient
) -> AsyncIterator[MakeEngine]:
    """Build engines on the sandbox (fake clock and sleep); all closed at the end.

    They share the ``http`` client unless a test passes ``http_client`` (``None``: their own).
    """
    made: list[CopilotReasoningEngine] = []

    def build(
        auth: EntraIDAuthManager, sb: Sandbox | None = None, **options: Any
    ) -> CopilotReasoningEngine:
        options.setdefault("http_client", http)
        engine = make_engine(sb or sandbox, auth, clock=clock, sleep=clock.sleep, **options)
        made.append(engine)
        return engine

    yield build
    for engine in made:
        await engine.close()


@pytest.fixture
def auth(auth_factory: MakeAuth) -> EntraIDAuthManager:
    """The default auth manager."""
    return auth_factory()


@pytest.fixture
def engine(engine_factory: MakeEngine, auth: EntraIDAuthManager) -> CopilotReasoningEngine:
    """The default engine (deployments URL)."""
    return engine_factory(auth)


@pytest.fixture
def quick(engine_factory: MakeEngine, auth: EntraIDAuthManager) -> CopilotReasoningEngine:
    """An engine with 0.5 s attempts and a 0.3 s stream idle limit (real-socket faults; a
    healthy loopback answer takes a few milliseconds, so a busy machine keeps a wide margin)."""
    return engine_factory(auth, timeout=0.5, idle_timeout=0.3)


@pytest.fixture
async def seeded(sandbox: Sandbox, store: SQLiteEncryptedTokenStore) -> dict[str, Any]:
    """A fresh token for the default user, issued by the sandbox and saved in the store."""
    return await seed(sandbox, store)


@pytest.fixture
def events() -> list[Event]:
    """Every event emitted during the test (an in-process subscriber)."""
    seen: list[Event] = []
    subscribe(seen.append)
    return seen
