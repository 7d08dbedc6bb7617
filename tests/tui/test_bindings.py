"""Help that cannot drift: every key binding the user can reach has a description."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.binding import Binding
from tui_helpers import Clock, make_event, seed_tokens, wait_for

from saga_magic.core.config import Settings
from saga_tui.app import SagaApp
from saga_tui.messages import EventsBatch, LogEntry
from saga_tui.widgets.confirm_screen import ConfirmScreen
from saga_tui.widgets.event_detail import EventDetailScreen
from saga_tui.widgets.event_log import EventLog
from saga_tui.widgets.filter_bar import FilterBar, FilterInput
from saga_tui.widgets.login_screen import LoginScreen
from saga_tui.widgets.prompt_bar import PromptBar

MakeApp = Callable[..., SagaApp]

OUR_CLASSES = [
    SagaApp,
    EventLog,
    FilterBar,
    FilterInput,
    PromptBar,
    EventDetailScreen,
    LoginScreen,
    ConfirmScreen,
]


@pytest.mark.parametrize("cls", OUR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_declared_binding_has_a_description(cls: type) -> None:
    bindings = [b for b in cls.BINDINGS if isinstance(b, Binding)]
    assert bindings
    assert len(bindings) == len(cls.BINDINGS)
    for binding in bindings:
        assert binding.description.strip(), f"{cls.__name__}: {binding.key} has no description"


def undescribed(app: SagaApp) -> list[str]:
    return [
        f"{key} -> {active.binding.action}"
        for key, active in app.screen.active_bindings.items()
        if not active.binding.description.strip() and not active.binding.system
    ]


async def test_every_active_binding_has_a_description(
    make_app: MakeApp, settings: Settings, clock: Clock
) -> None:
    await seed_tokens(settings, clock, {"alice": 3600})
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.query_one("#tokens").loaded)
        app.post_message(EventsBatch((LogEntry(None, make_event()),)))
        await pilot.pause()
        for focus in ("e", "t", "p"):
            await pilot.press("escape", focus)
            assert undescribed(app) == [], focus
        await pilot.press("escape", "slash")
        assert undescribed(app) == []
        await pilot.press("escape")
        assert isinstance(app.focused, EventLog)
        await pilot.press("enter")
        assert isinstance(app.screen, EventDetailScreen)
        assert undescribed(app) == []
        await pilot.press("escape", "o")
        assert isinstance(app.screen, ConfirmScreen)
        assert undescribed(app) == []
        await pilot.press("n", "l")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        assert undescribed(app) == []
