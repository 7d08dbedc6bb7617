"""Shared fixtures: an isolated environment and home folder for every test, and a fake clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

_PREFIXES = ("ARC_SAGA_", "AZURE_")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Clear every product variable and point ``ARC_SAGA_HOME`` at a fresh folder."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "arc_saga_home"
    monkeypatch.setenv("ARC_SAGA_HOME", str(home))
    yield home
    # Subscribers and the installed journal are process-wide: leave none behind.
    from saga_magic.core import events

    events.reset_for_tests()


class FakeClock:
    """A unix-time clock that only moves when a (fake) sleep is awaited."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`FakeClock`; pass ``fake_clock`` as clock and ``fake_clock.sleep`` as sleep."""
    return FakeClock()
