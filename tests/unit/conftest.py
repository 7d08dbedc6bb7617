"""Fixtures shared by the auth manager's unit tests (harnesses over a fake store and endpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from auth_helpers import FakeStore, Harness, build

from saga_magic.core.events import Event, subscribe

Make = Callable[..., Harness]


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event emitted during the test."""
    seen: list[Event] = []
    unsubscribe = subscribe(seen.append)
    yield seen
    unsubscribe()


@pytest.fixture
async def make(fake_clock: Any) -> AsyncIterator[Make]:
    """Build auth-manager harnesses (closed at the end of the test)."""
    built: list[Harness] = []

    def factory(store: Any = None, **options: Any) -> Harness:
        store = FakeStore() if store is None else store
        manager, entra, client = build(store, fake_clock, **options)
        built.append(Harness(manager, store, entra, fake_clock, client))
        return built[-1]

    yield factory
    for harness in built:
        await harness.manager.close()
        await harness.client.aclose()


@pytest.fixture
def h(make: Make) -> Harness:
    """One harness over a fresh fake store."""
    return make()
