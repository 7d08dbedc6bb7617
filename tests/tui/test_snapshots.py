"""SVG snapshots of the main screen and the modals, with a frozen clock and a fixed journal path.

Update after an intended visual change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import T0, Clock, FakeServices, make_event, retry_event, seed_tokens, wait_for

from saga_magic.core.config import Settings
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_tui.app import SagaApp
from saga_tui.messages import EventsBatch, LogEntry
from saga_tui.widgets.tokens_panel import TokensPanel

SIZE = (140, 40)


def screen_events() -> tuple[LogEntry, ...]:
    """A plausible minute of traffic ending at T0."""
    events = [
        make_event("device_code_issued", ts=T0 - 60, op="login1", user_code="ABCD-EFGH"),
        make_event("login_complete", ts=T0 - 50, op="login1", expires_at=T0 + 3550),
        make_event("copilot_request_start", ts=T0 - 20, op="chat1", prompt_chars=42),
        retry_event(ts=T0 - 19, op="chat1", attempt=1, wait_s=2.0, reason="429"),
        retry_event(ts=T0 - 17, op="chat1", attempt=2, wait_s=4.0, reason="503"),
        make_event(
            "copilot_request_complete", ts=T0 - 13, op="chat1", latency_ms=7012.5, attempts=3
        ),
        make_event("token_refresh_start", ts=T0 - 5, user="bob", op="tok1", reason="forced"),
        retry_event("token_refresh_retry", ts=T0 - 4, user="bob", op="tok1", wait_s=8.0),
        make_event(
            "token_refresh_failed_auth",
            ts=T0 - 2,
            level="ERROR",
            user="carol",
            op="tok2",
            status=400,
            code="invalid_grant",
        ),
    ]
    return tuple(LogEntry(None, event) for event in events)


async def _seed(settings: Settings, clock: Clock) -> None:
    await seed_tokens(settings, Clock(T0 - 600), {"alice": 4200, "bob": 800, "carol": 3600})
    store = SQLiteEncryptedTokenStore(
        settings.token_store_path, key_path=settings.home / ".token_key", clock=clock
    )
    try:
        await store.set_relogin_required("carol", True)
    finally:
        store.close()


@pytest.fixture
def snap_app(settings: Settings) -> SagaApp:
    """The app on a seeded store, a frozen clock and a journal path that reads the same anywhere."""
    clock = Clock()
    asyncio.run(_seed(settings, clock))
    fixed = settings.with_overrides(journal_path=Path("/home/ada/.arc_saga/journal.db"))
    return SagaApp(
        fixed,
        source="bus",
        services=FakeServices(clock),
        clock=clock,
        write_journal=False,
        token_poll=3600,
    )


async def _populate(pilot: Any) -> None:
    app = pilot.app
    app.post_message(EventsBatch(screen_events()))
    await wait_for(pilot, lambda: app.query_one(TokensPanel).row_count == 3)
    await pilot.pause()


def test_main_screen(snap_compare: Any, snap_app: SagaApp) -> None:
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=_populate)


def test_main_screen_at_80x24(snap_compare: Any, snap_app: SagaApp) -> None:
    """The smallest usual terminal: events get most of the height, the path is cut last."""
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=_populate)


def test_detail_modal(snap_compare: Any, snap_app: SagaApp) -> None:
    async def run_before(pilot: Any) -> None:
        await _populate(pilot)
        await pilot.press("up", "up", "up", "enter")

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_login_modal(snap_compare: Any, snap_app: SagaApp) -> None:
    async def run_before(pilot: Any) -> None:
        await _populate(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "LoginScreen")
        await pilot.pause()

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_filtered_and_missing_journal(snap_compare: Any, snap_app: SagaApp) -> None:
    async def run_before(pilot: Any) -> None:
        from saga_tui.messages import SourceStatus

        await _populate(pilot)
        pilot.app.post_message(SourceStatus("waiting"))
        pilot.app.set_filter(level="WARNING")
        await pilot.pause()

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)
