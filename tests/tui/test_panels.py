"""Pilot tests of the panels: tokens, retries, events (follow, scroll, filters, detail, export)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from textual import events
from textual.widgets import Footer, Header, Input, Select
from tui_helpers import T0, Clock, make_event, retry_event, seed_tokens, wait_for, write_journal

from saga_magic.core.config import Settings
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import TokenStatus
from saga_tui.app import SagaApp
from saga_tui.filters import EventFilter
from saga_tui.messages import EventsBatch, LogEntry, SourceStatus
from saga_tui.widgets.event_detail import EventDetailScreen
from saga_tui.widgets.event_log import EventLog, summarize_context
from saga_tui.widgets.filter_bar import FilterBar
from saga_tui.widgets.retries_panel import RetriesPanel, RetryRow
from saga_tui.widgets.source_header import SourceHealth
from saga_tui.widgets.tokens_panel import TokensPanel

MakeApp = Callable[..., SagaApp]


def batch(*events: object, start: int | None = None) -> EventsBatch:
    """An EventsBatch of events (rowids from ``start`` when given)."""
    return EventsBatch(
        tuple(
            LogEntry(None if start is None else start + i, event)  # type: ignore[arg-type]
            for i, event in enumerate(events)
        )
    )


def cell(table: TokensPanel, user: str, column: str) -> str:
    return str(table.get_cell(user, column))


async def delete_tokens(settings: Settings, *users: str) -> None:
    async with SQLiteEncryptedTokenStore(
        settings.token_store_path, key_path=settings.home / ".token_key"
    ) as store:
        for user in users:
            await store.delete_token(user)


# -- tokens ---------------------------------------------------------------------------------------


async def test_tokens_panel_lists_users_with_a_live_countdown(
    make_app: MakeApp, settings: Settings, clock: Clock
) -> None:
    await seed_tokens(settings, clock, {"alice": 3600, "bob": 200})
    clock.advance(30)
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(TokensPanel)
        await wait_for(pilot, lambda: table.row_count == 2)
        assert cell(table, "alice", "status") == "valid"
        assert cell(table, "alice", "expires") == "in 59m 30s"
        assert cell(table, "alice", "refreshed") == "30s ago"
        assert cell(table, "alice", "scopes") == "cognitiveservices/.default"
        assert cell(table, "bob", "status") == "expiring"
        assert table.status_of("bob") is TokenStatus.EXPIRING
        assert table.status_of("nobody") is None
        clock.advance(200)
        app._tick()
        assert cell(table, "bob", "status") == "expired"
        assert cell(table, "bob", "expires") == "expired 30s ago"
        assert table.border_subtitle == "alice: r refresh · l log in · o log out"
        # the cursor stays on its user when the store is re-read
        table.move_cursor(row=1)
        await pilot.pause()
        assert app.target_user() == "bob"
        assert table.border_subtitle == "bob: r refresh · l log in · o log out"
        await seed_tokens(settings, clock, {"aaron": 3600})
        app.reload_tokens()
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.selected_user == "bob"
        assert app.known_users() == ["aaron", "alice", "bob"]
        # its user logged out elsewhere: the cursor goes to the configured user, not row 0
        await delete_tokens(settings, "bob")
        app.reload_tokens()
        await wait_for(pilot, lambda: table.row_count == 2)
        assert table.selected_user == "alice"
        table.primary_user = None
        await delete_tokens(settings, "alice")
        app.reload_tokens()
        await wait_for(pilot, lambda: table.row_count == 1)
        assert table.selected_user == "aaron"  # no configured user: the row now in its place


async def test_tokens_panel_empty_state_and_reload_on_token_events(
    make_app: MakeApp, settings: Settings, clock: Clock
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(TokensPanel)
        await pilot.pause()
        assert table.row_count == 1  # the configured user, not signed in
        assert cell(table, "alice", "status") == "not signed in"
        assert table.status_of("alice") is None
        assert app.target_user() == "alice"
        assert table.border_subtitle == "no stored tokens · l logs in"
        await seed_tokens(settings, clock, {"bob": 3600})
        app.post_message(batch(make_event("token_stored")))
        await wait_for(pilot, lambda: table.row_count == 2)
        assert table.selected_user == "alice"
        # a broken store: said in the panel, notified once per distinct error, recovered from
        settings.token_store_path.rename(settings.home / "saved.db")
        settings.token_store_path.write_bytes(b"not a token store" * 100)
        for _ in range(3):
            app.reload_tokens()
            await wait_for(pilot, lambda: bool(table.error))
        assert str(table.border_subtitle).startswith("store unreadable: cannot read the token")
        assert table.row_count == 2  # the last good read stays
        assert [n.title for n in app._notifications].count("Token store") == 1
        (settings.home / "saved.db").replace(settings.token_store_path)
        app.reload_tokens()
        await wait_for(pilot, lambda: not table.error)
        assert table.border_subtitle == "alice: r refresh · l log in · o log out"


# -- retries --------------------------------------------------------------------------------------


async def test_retries_panel_counts_down_and_marks_the_end(make_app: MakeApp, clock: Clock) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        panel = app.query_one(RetriesPanel)
        assert panel.query_one("#retries-empty").display
        app.post_message(
            batch(retry_event(op="a", wait_s=4), retry_event("token_refresh_retry", op="b"))
        )
        await wait_for(pilot, lambda: len(panel.rows) == 2)
        assert not panel.query_one("#retries-empty").display
        assert panel.border_subtitle == "2 in flight"
        row = panel.rows["a"]
        label = row.text
        assert label == "429 · attempt 1/6 · chat request · alice · 4.0s"
        clock.advance(3)
        panel.tick()
        assert row.fraction == 0.75
        assert row.text.endswith("· 1.0s")
        clock.advance(2)
        panel.tick()
        assert row.text.endswith("· now")
        app.post_message(batch(retry_event(op="a", attempt=2, wait_s=120, ts=clock())))
        await pilot.pause()
        assert "attempt 2/6" in row.text
        assert row.text.endswith("· 2m 00s")
        app.post_message(batch(make_event("copilot_request_complete", op="a", ts=clock())))
        await pilot.pause()
        assert row.has_class("-succeeded")
        assert row.text == "succeeded · attempt 3/6 · chat request · alice · done"
        assert panel.border_subtitle == "1 in flight"
        app.post_message(batch(make_event("token_refresh_failed", op="b", ts=clock())))
        await pilot.pause()
        assert panel.rows["b"].has_class("-failed")
        # an operation that goes silent (its process died, a prompt was cancelled) goes stale
        app.post_message(batch(retry_event("device_code_retry", op="c", ts=clock(), wait_s=1)))
        await wait_for(pilot, lambda: "c" in panel.rows)
        clock.advance(panel.tracker.linger)
        panel.tick()
        await wait_for(pilot, lambda: set(panel.rows) == {"c"})
        clock.advance(panel.tracker.grace)
        panel.tick()
        await pilot.pause()
        assert panel.rows["c"].has_class("-stale")
        assert panel.rows["c"].text.startswith("no news (stale) · attempt 1/6 · device code")
        assert panel.rows["c"].text.endswith("· stale")
        assert panel.border_subtitle == "0 in flight"
        clock.advance(panel.tracker.linger)
        panel.tick()
        await wait_for(pilot, lambda: not panel.query(RetryRow))
        assert panel.query_one("#retries-empty").display
        panel.focus()  # the panel scrolls with the keys
        await pilot.pause()
        assert app.focused is panel


# -- events ---------------------------------------------------------------------------------------


def numbered(count: int, *, start: int = 0, name: str = "token_refresh_start") -> list[object]:
    return [make_event(name, ts=T0 + start + i, seq=start + i) for i in range(count)]


async def test_events_follow_the_tail_until_the_user_scrolls(make_app: MakeApp) -> None:
    app = make_app(window=60)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        app.post_message(batch(*numbered(40)))
        await pilot.pause()
        assert len(log.entries) == 40
        assert log.follow
        assert log.cursor == 39
        assert log.scroll_offset.y == log.max_scroll_y > 0
        app.post_message(batch(*numbered(40, start=40)))
        await pilot.pause()
        assert len(log.entries) == 60  # bounded window
        assert log.entries[0].event.context["seq"] == 20
        assert log.cursor == 59
        assert log.scroll_offset.y == log.max_scroll_y
        assert log.border_subtitle == "following · 60 shown"
        await pilot.press("up", "up", "k")
        assert not log.follow
        assert log.cursor == 56
        await pilot.press("pageup")
        top = log.scroll_offset.y
        cursor = log.cursor
        selected = log.selected
        assert selected is not None
        app.post_message(batch(*numbered(10, start=80)))
        await pilot.pause()
        # the user is reading: rows, cursor and scroll stay put; the new events are counted
        assert (log.cursor, log.selected, log.scroll_offset.y) == (cursor, selected, top)
        assert log.entries[-1].event.context["seq"] == 79
        assert log.unseen == 10
        assert log.border_subtitle.startswith("paused · 10 new")
        await pilot.press("enter")
        assert isinstance(app.screen, EventDetailScreen)
        assert app.screen.entry == selected
        await pilot.press("escape", "c")
        assert json.loads(app.clipboard)["context"] == selected.event.context
        # coming back to the bottom brings in what came meanwhile, then follows again
        while log.cursor < len(log.entries) - 1:
            await pilot.press("pagedown")
        assert log.entries[-1].event.context["seq"] == 89
        assert (log.unseen, log.follow) == (0, True)
        await pilot.press("end")
        assert log.follow
        assert log.cursor == 59
        assert log.unseen == 0
        await pilot.press("pageup", "pagedown", "j", "down")
        assert log.cursor == 59
        assert log.follow
        # more arrived while paused than the window holds: end rebuilds from the window
        await pilot.press("up")
        app.post_message(batch(*numbered(70, start=90)))
        await pilot.pause()
        assert log.unseen == 70
        await pilot.press("end")
        assert [e.event.context["seq"] for e in log.entries] == list(range(100, 160))
        # a short view (no scrolling): down at the last row brings the new rows in
        app.set_filter(event="copilot_retry")
        app.post_message(batch(retry_event(op="r1"), retry_event(op="r2")))
        await pilot.pause()
        await pilot.press("up")
        app.post_message(batch(retry_event(op="r3"), retry_event(op="r4")))
        await pilot.pause()
        assert [e.event.op_id for e in log.entries] == ["r1", "r2"]
        await pilot.press("down", "down")
        assert [e.event.op_id for e in log.entries] == ["r1", "r2", "r3", "r4"]
        assert (log.cursor, log.follow) == (2, False)
        await pilot.press("down")
        assert (log.cursor, log.follow) == (3, True)


async def test_mouse_scroll_and_click(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        app.post_message(batch(*numbered(80)))
        await pilot.pause()
        await pilot._post_mouse_events([events.MouseScrollUp], EventLog, (10, 5))
        await pilot.pause()
        assert not log.follow
        await pilot.click(EventLog, offset=(10, 1))
        clicked = log.scroll_offset.y + 0
        assert log.cursor == clicked
        await pilot.click(EventLog, offset=(10, 1), times=2)
        await wait_for(pilot, lambda: isinstance(app.screen, EventDetailScreen))
        await pilot.press("escape")
        log.scroll_to(y=0, animate=False, immediate=True)
        await pilot._post_mouse_events([events.MouseScrollUp], EventLog, (10, 5))
        await pilot.pause()
        assert log.loading_older is False  # no journal behind the bus source
        log.scroll_to(y=log.max_scroll_y, animate=False, immediate=True)
        await pilot.pause()
        assert log.follow


async def test_filter_bar_filters_the_view(make_app: MakeApp) -> None:
    app = make_app(filter_debounce=30)  # typing applies on enter (or after the pause)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        bar = app.query_one(FilterBar)
        app.post_message(
            batch(
                make_event("token_refresh_start", user="alice"),
                retry_event(user="bob", reason="429"),
                make_event("copilot_error", level="ERROR", user="bob", status=500),
                make_event("brand_new_event", user="carol"),
            )
        )
        await pilot.pause()
        assert len(log.entries) == 4
        assert "brand_new_event" in app.known_events()
        level: Select[str] = app.query_one("#filter-level", Select)
        level.value = "WARNING"
        await pilot.pause()
        assert [e.event.event for e in log.entries] == ["copilot_retry", "copilot_error"]
        assert log.border_title == "Events · level>=WARNING"
        user: Select[str] = app.query_one("#filter-user", Select)
        user.value = "bob"
        event: Select[str] = app.query_one("#filter-event", Select)
        event.value = "copilot_error"
        await pilot.pause()
        assert [e.event.event for e in log.entries] == ["copilot_error"]
        event.clear()
        level.clear()
        await pilot.pause()
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        assert [key for key, _ in app.screen.active_bindings.items() if key in "/rx"] == []
        await pilot.press("4", "2", "9")
        assert bar.event_filter == EventFilter(user="bob")  # still typing: nothing scanned yet
        await pilot.press("enter")
        assert [e.event.event for e in log.entries] == ["copilot_retry"]
        assert bar.event_filter == EventFilter(user="bob", text="429")
        assert app.focused is log
        # escape leaves and keeps the filters; ctrl+x clears them
        bar.debounce = 0.01
        await pilot.press("slash", "end", "backspace")
        await wait_for(pilot, lambda: bar.event_filter.text == "42")
        await pilot.press("9", "escape")
        assert bar.event_filter == EventFilter(user="bob", text="429")
        assert app.focused is log
        await pilot.press("slash", "ctrl+x")
        assert bar.event_filter.is_empty
        assert "Filters cleared" in [n.message for n in app._notifications]
        await pilot.press("escape")
        assert app.focused is log
        assert len(log.entries) == 4
        app.set_filter(level="ERROR", event="copilot_error", user="bob", text="500")
        await pilot.pause()
        assert [e.event.event for e in log.entries] == ["copilot_error"]
        app.action_clear_filters()
        await pilot.pause()
        assert len(log.entries) == 4


async def test_detail_view_copy_and_close(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        event = retry_event(op="op-42")
        app.post_message(batch(event))
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, EventDetailScreen)
        body = str(app.screen.query_one("#detail-json").render())
        assert '"op_id": "op-42"' in body
        assert '"reason": "429"' in body
        assert app.screen.query(Footer)
        await pilot.press("c")
        assert json.loads(app.clipboard) == event.to_dict()
        assert app._notifications  # says what happened, and how to get a file instead
        [note] = [n.message for n in app._notifications]
        assert note.startswith("Sent copilot_retry as JSON to the terminal clipboard (OSC 52")
        assert "x exports a file" in note
        await pilot.click("#detail-copy")
        await pilot.click("#detail-close")
        assert not isinstance(app.screen, EventDetailScreen)
        await pilot.press("c")
        assert json.loads(app.clipboard)["op_id"] == "op-42"
        await pilot.press("enter")
        await pilot.press("q")
        assert not isinstance(app.screen, EventDetailScreen)


async def test_copy_and_details_without_events(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("c", "enter", "up", "home", "pageup")
        assert app.clipboard == ""
        assert not isinstance(app.screen, EventDetailScreen)
        assert [n.message for n in app._notifications] == ["No event selected"]


def test_summarize_context() -> None:
    event = retry_event(wait_s=1.5)
    assert summarize_context(event) == "reason=429 attempt=1/6 wait=1.5s"
    useful_first = make_event(
        task_id="task-0123456789abcdef",
        request_id="r-1",
        expires_at=T0 + 3600,
        code="invalid_grant",
        status=400,
        flag=None,
    )
    assert summarize_context(useful_first) == (
        "status=400 code=invalid_grant expires_at=23:13:20 flag=null task_id=task-012… "
        "request_id=r-1"
    )
    long = make_event(note="x " * 200, nested={"a": [1, 2]})
    text = summarize_context(long, limit=40)
    assert len(text) == 40
    assert text.endswith("…")
    assert summarize_context(make_event(nested={"a": 1}, ok=True)) == 'nested={"a":1} ok=true'


async def test_export_writes_the_filtered_window(make_app: MakeApp, tmp_path: Path) -> None:
    real_home = tmp_path / "real-home"  # --sandbox: not the throwaway home
    app = make_app(export_home=real_home)
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(batch(make_event(user="alice"), make_event(user="bob")))
        await pilot.pause()
        app.set_filter(user="bob")
        await pilot.pause()
        assert app.actions.export() is not None
        assert app.actions.export() is None  # one at a time
        await wait_for(pilot, lambda: any(n.title == "Exported" for n in app._notifications))
        [path] = (real_home / "exports").iterdir()
        assert real_home.stat().st_mode & 0o777 == 0o700
        lines = path.read_text().splitlines()
        assert [json.loads(line)["user_id"] for line in lines] == ["bob"]
        notes = [n.message for n in app._notifications]
        assert "Exporting 1 events (user=bob)…" in notes
        assert "An export is already running" in notes
        [note] = [n for n in app._notifications if n.title == "Exported"]
        assert note.message == f"1 events (user=bob) → {path}"
        app.set_filter(user="nobody")
        app.clear_notifications()
        await pilot.press("x")
        await wait_for(pilot, lambda: any(n.title == "Exported" for n in app._notifications))
        assert [n.message for n in app._notifications if n.title == "Exported"] == [
            "Nothing to export: no events match (user=nobody); no file written."
        ]
        assert len(list((real_home / "exports").iterdir())) == 1


# -- header ---------------------------------------------------------------------------------------


async def test_header_shows_the_source_and_warns(make_app: MakeApp, clock: Clock) -> None:
    app = make_app(stale_after=60)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.query_one(Header)
        log = app.query_one(EventLog)
        assert app.sub_title.startswith("live · no events yet · in-process · journal ")
        assert app.sub_title.endswith("journal.db")  # the path last: a narrow screen cuts it
        assert log.render_line(0).text.startswith(" no events yet")
        app.set_filter(level="ERROR")
        await pilot.pause()
        assert log.render_line(0).text.startswith(" no events match level>=ERROR")
        app.action_clear_filters()
        app.post_message(batch(make_event(ts=clock() - 2)))
        await pilot.pause()
        assert app.sub_title.startswith("live · last event 2s ago · in-process")
        assert not header.has_class("-warning")
        app.bus.dropped = 3  # the bus buffer overflowed between two drains
        await wait_for(pilot, lambda: "3 dropped" in app.sub_title)
        assert header.has_class("-warning")
        app.bus.dropped = app.health.dropped = 0
        clock.advance(120)
        app._tick()
        assert app.sub_title.startswith("stale · ")
        assert header.has_class("-warning")
        app.post_message(SourceStatus("waiting"))
        await pilot.pause()
        assert app.sub_title.startswith("journal missing")
        app.post_message(SourceStatus("error", "DatabaseError: file is not a database"))
        await pilot.pause()
        assert app.sub_title.startswith("error: DatabaseError")


def test_source_health_words() -> None:
    health = SourceHealth(journal_path=Path("/j.db"))
    assert health.describe(T0) == ("connecting… · no events yet · journal /j.db", False)
    health.state, health.last_event_at = "live", T0 - 5
    assert health.describe(T0) == ("live · last event 5s ago · journal /j.db", False)


async def test_a_corrupt_journal_is_reported_and_recovered_from(
    make_app: MakeApp, settings: Settings
) -> None:
    settings.journal_path.parent.mkdir(parents=True, exist_ok=True)
    settings.journal_path.write_bytes(b"this is not a database" * 100)
    app = make_app(source="journal", poll_interval=0.01)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        await wait_for(pilot, lambda: app.source_state == "error")
        assert app.sub_title.startswith("error: DatabaseError")
        assert log.render_line(0).text.startswith(" waiting for events in the journal ")
        settings.journal_path.unlink()
        write_journal(settings.journal_path, [make_event(ts=T0 + i, seq=i) for i in range(3)])
        await wait_for(pilot, lambda: len(log.entries) == 3)
        await wait_for(pilot, lambda: app.sub_title.startswith("live · last event"))
        assert not [n for n in app._notifications if n.severity == "error"]


# -- journal source and history -------------------------------------------------------------------


async def test_journal_source_pages_history_with_filters(
    make_app: MakeApp, settings: Settings
) -> None:
    write_journal(
        settings.journal_path,
        [
            make_event(ts=T0 + i, level="ERROR" if i % 10 == 0 else "INFO", seq=i)
            for i in range(300)
        ],
    )
    app = make_app(source="journal", window=40, page=20, poll_interval=0.01)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        await wait_for(pilot, lambda: len(log.entries) == 40)
        assert log.history_enabled
        assert app.sub_title.startswith("live · last event")
        assert log.entries[0].rowid == 261
        await pilot.press("home")
        await wait_for(pilot, lambda: len(log.entries) == 60)
        assert log.entries[0].rowid == 241
        assert log.cursor == 20
        await pilot.press("home")
        await wait_for(pilot, lambda: log.detached)
        assert len(log.entries) == 60
        assert log.entries[0].rowid == 221
        assert log.border_subtitle.startswith("history · 0 newer")
        write_journal(settings.journal_path, [make_event("login_complete", ts=T0 + 999)])
        await wait_for(pilot, lambda: log.unseen == 1)
        assert log.entries[-1].event.event != "login_complete"
        await pilot.press("end")
        assert not log.detached
        assert log.entries[-1].event.event == "login_complete"
        # a filter pulls matching history from the journal to fill the screen
        app.set_filter(level="ERROR")
        await wait_for(pilot, lambda: log.history_exhausted)
        assert [e.event.context["seq"] for e in log.entries] == list(range(0, 300, 10))
        await pilot.press("home")
        await pilot.pause()
        assert len(log.entries) == 30
        # key=value matches exactly, confirmed in Python: empty pages still move the cursor on
        app.query_one(FilterBar).apply(EventFilter(text="seq=17"))
        await wait_for(pilot, lambda: log.event_filter.text == "seq=17")
        await wait_for(pilot, lambda: log.history_exhausted)
        assert [e.event.context["seq"] for e in log.entries] == [17]
        log.history_exhausted = False
        log.request_older()  # while a page is read, the subtitle says how far the scan got
        assert log.border_subtitle.startswith("searching… rowid ")


async def test_stale_history_pages_are_dropped(make_app: MakeApp, settings: Settings) -> None:
    write_journal(settings.journal_path, [make_event(ts=T0 + i) for i in range(10)])
    app = make_app(source="journal", window=5, page=5)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        await wait_for(pilot, lambda: len(log.entries) == 5)
        log.set_filter(EventFilter(text="zzz"))
        from saga_tui.messages import OlderEventsLoaded

        app.post_message(
            OlderEventsLoaded(
                (LogEntry(1, make_event()),),
                before=5,
                next_before=1,
                exhausted=False,
                event_filter=EventFilter(),
            )
        )
        await pilot.pause()
        assert all(entry.rowid != 1 for entry in log.entries)


async def test_export_from_the_journal_covers_all_history(
    make_app: MakeApp, settings: Settings
) -> None:
    write_journal(settings.journal_path, [make_event(ts=T0 + i, seq=i) for i in range(50)])
    app = make_app(source="journal", window=10)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        await wait_for(pilot, lambda: len(log.entries) == 10)
        app.action_export()
        await wait_for(pilot, lambda: any(n.title == "Exported" for n in app._notifications))
        [path] = (settings.home / "exports").iterdir()
        assert len(path.read_text().splitlines()) == 50
        assert "Exporting the journal's events (all events; 50 to scan)…" in [
            n.message for n in app._notifications
        ]


async def test_app_writes_its_own_journal(make_app: MakeApp, settings: Settings) -> None:
    from saga_magic.core.events import get_journal

    app = make_app(source="journal", write_journal=True)
    async with app.run_test(size=(160, 48)):
        journal = get_journal()
        assert journal is not None
        assert journal.path == settings.journal_path
    assert get_journal() is None
    assert isinstance(settings.journal_path, Path)


async def test_token_status_colours_follow_the_theme(
    make_app: MakeApp, settings: Settings, clock: Clock
) -> None:
    await seed_tokens(settings, clock, {"alice": 3600})
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(TokensPanel)
        await wait_for(pilot, lambda: table.status_of("alice") is TokenStatus.VALID)
        app.theme = "ansi-light"
        await pilot.pause()
        status = table.get_cell("alice", "status")
        assert status.style.color.name == "color(2)"  # type: ignore[union-attr]
        app.theme_variables["text-success"] = "auto 60%"  # not a colour: plain bold
        table.tick()
        status = table.get_cell("alice", "status")
        assert status.style.color is None  # type: ignore[union-attr]
        assert status.style.bold  # type: ignore[union-attr]
