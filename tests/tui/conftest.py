"""Fixtures for the TUI tests: settings in a temp home, a frozen clock, a fake core, UTC time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import Clock, FakeServices

from saga_magic.core import events as core_events
from saga_magic.core.config import Settings
from saga_tui.app import SagaApp


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Render wall-clock times in UTC so screens and snapshots do not depend on the machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def clean_bus() -> Iterator[None]:
    """Leave no subscriber or installed journal behind."""
    yield
    core_events.reset_for_tests()


@pytest.fixture
def clock() -> Clock:
    """A clock frozen at ``T0`` until advanced."""
    return Clock()


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    """Settings from the isolated environment (home in a temp folder), user ``alice``."""
    return Settings.from_env().with_overrides(user="alice")


@pytest.fixture
def services(clock: Clock) -> FakeServices:
    """A fake core."""
    return FakeServices(clock)


@pytest.fixture
def make_app(settings: Settings, clock: Clock, services: FakeServices) -> Callable[..., SagaApp]:
    """Build an app on the fake core and the frozen clock (bus source unless told otherwise)."""

    def build(**options: Any) -> SagaApp:
        options.setdefault("source", "bus")
        options.setdefault("services", services)
        options.setdefault("clock", clock)
        options.setdefault("write_journal", False)
        return SagaApp(options.pop("settings", settings), **options)

    return build
