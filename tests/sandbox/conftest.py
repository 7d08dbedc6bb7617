"""Fixtures for the sandbox tests: a running sandbox (real or fake clock) and httpx clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sbx_helpers import FakeClock

from saga_magic.sandbox import Sandbox


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(token_lifetime=3600) as sb:
        yield sb


@pytest.fixture
def clocked(clock: FakeClock) -> Iterator[Sandbox]:
    """A sandbox on a fake clock."""
    with Sandbox(token_lifetime=3600, clock=clock) as sb:
        yield sb


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, verify=False) as c:  # plain http: no TLS context
        yield c


@pytest.fixture
async def aclient() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, verify=False) as c:
        yield c
