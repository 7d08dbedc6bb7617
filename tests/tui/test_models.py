"""The TUI's pure parts: filters, the retry tracker, time formatting, export, journal sources."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from tui_helpers import T0, make_event, retry_event, write_journal

from saga_magic.core.events import JournalReader, log_with_context, subscribe
from saga_tui.export import default_export_path, export_jsonl
from saga_tui.filters import EventFilter, level_rank
from saga_tui.messages import LogEntry
from saga_tui.retries import RetryTracker
from saga_tui.sources import BusSource, JournalTail, iter_matching, read_history
from saga_tui.timefmt import format_ago, format_clock_time, format_countdown, format_duration

# -- time formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.9, "42s"), (185, "3m 05s"), (3720, "1h 02m"), (183600, "2d 03h"), (-5, "5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_countdown_and_ago() -> None:
    assert format_countdown(None, T0) == "unknown"
    assert format_countdown(T0 + 65, T0) == "in 1m 05s"
    assert format_countdown(T0 - 12, T0) == "expired 12s ago"
    assert format_ago(None, T0) == "never"
    assert format_ago(T0 - 0.5, T0) == "just now"
    assert format_ago(T0 - 130, T0) == "2m 10s ago"


def test_format_clock_time_is_local_time() -> None:
    assert format_clock_time(T0) == "22:13:20"
    assert format_clock_time(T0 + 0.25, millis=True) == "22:13:20.250"


# -- filters --------------------------------------------------------------------------------------


def test_empty_filter_passes_everything() -> None:
    flt = EventFilter()
    assert flt.is_empty
    assert flt.matches(make_event())
    assert flt.describe() == "all events"
    assert flt.query_kwargs() == {"levels": None, "events": None, "user_id": None, "text": None}


def test_level_is_a_minimum() -> None:
    flt = EventFilter(level="WARNING")
    assert not flt.matches(make_event(level="INFO"))
    assert flt.matches(make_event(level="WARNING"))
    assert flt.matches(make_event(level="ERROR"))
    assert flt.query_kwargs()["levels"] == ("WARNING", "ERROR", "CRITICAL")
    assert level_rank("nonsense") == level_rank("INFO")


def test_event_user_and_text_filters() -> None:
    flt = EventFilter(event="copilot_retry", user="bob", text=" 429 ")
    assert flt.matches(retry_event(user="bob"))
    assert not flt.matches(retry_event(user="alice"))
    assert not flt.matches(retry_event(user="bob", reason="503"))
    assert not flt.matches(make_event("copilot_error", user="bob", reason="429"))
    assert flt.describe() == "event=copilot_retry · user=bob · text='429'"
    kwargs = flt.query_kwargs()
    assert kwargs["events"] == ("copilot_retry",)
    assert kwargs["user_id"] == "bob"
    assert kwargs["text"] == "429"


def test_text_matches_name_user_op_and_compact_context() -> None:
    assert EventFilter(text="REFRESH").matches(make_event("token_refresh_start"))
    assert EventFilter(text="op1").matches(make_event())
    assert EventFilter(text='"attempt":2').matches(retry_event(attempt=2))
    assert not EventFilter(text="nothing-like-it").matches(make_event())


def test_key_value_text_matches_what_the_panel_shows() -> None:
    retry = retry_event(reason="429", wait_s=1.5)
    assert EventFilter(text="reason=429").matches(retry)
    assert EventFilter(text="REASON=42").matches(retry)
    assert EventFilter(text="wait_s=1.5").matches(retry)
    assert not EventFilter(text="reason=503").matches(retry)
    assert not EventFilter(text="missing=1").matches(retry)
    assert EventFilter(text="op_id=op1").matches(retry)
    assert EventFilter(text="level=warn").matches(retry)
    assert not EventFilter(text="user_id=bob").matches(retry)
    assert not EventFilter(text="user_id=x").matches(make_event(user=None))
    assert EventFilter(text="reason=429").query_kwargs()["text"] == '"reason":'
    assert EventFilter(text="event=retry").query_kwargs()["text"] == "retry"
    assert EventFilter(text="event=").query_kwargs()["text"] is None
    assert EventFilter(text="level=error").query_kwargs()["text"] is None
    assert EventFilter(text="reason=429").needs_recheck
    assert not EventFilter(text="429").needs_recheck


def test_render_value() -> None:
    from saga_tui.filters import render_value

    assert render_value(1.50) == "1.5"
    assert render_value(2.0) == "2"
    assert render_value("a b") == '"a b"'
    assert render_value("ab") == "ab"
    assert render_value({"k": [1, None]}) == '{"k":[1,null]}'


def test_filter_replace_keeps_the_rest() -> None:
    flt = EventFilter(level="ERROR").replace(user="bob")
    assert (flt.level, flt.user) == ("ERROR", "bob")


# -- retry tracker --------------------------------------------------------------------------------


def test_tracker_follows_an_operation_to_its_end() -> None:
    tracker = RetryTracker(linger=5)
    assert tracker.apply([make_event("copilot_request_start", op="a")]) is False
    assert tracker.apply([retry_event(op="a", attempt=1, wait_s=4)])
    state = tracker.get("a")
    assert state is not None
    assert (state.kind, state.attempt, state.max_attempts, state.reason) == (
        "chat request",
        1,
        6,
        "429",
    )
    assert state.remaining(T0 + 1) == 3
    assert state.elapsed_fraction(T0 + 1) == pytest.approx(0.25)
    assert state.elapsed_fraction(T0 + 10) == 1.0
    tracker.apply([retry_event(op="a", attempt=2, wait_s=8, ts=T0 + 4)])
    assert tracker.get("a").attempt == 2  # type: ignore[union-attr]
    assert tracker.apply([make_event("copilot_request_complete", op="a", ts=T0 + 12)])
    assert tracker.get("a").outcome == "succeeded"  # type: ignore[union-attr]
    assert tracker.get("a").elapsed_fraction(T0) == 1.0  # type: ignore[union-attr]
    assert not tracker.apply([make_event("copilot_error", op="a")])  # already ended
    assert not tracker.prune(T0 + 16)
    assert tracker.prune(T0 + 17)
    assert tracker.states == []


def test_tracker_marks_failures_and_ignores_unrelated_events() -> None:
    tracker = RetryTracker()
    tracker.apply([retry_event("token_refresh_retry", op="t", reason="503")])
    tracker.apply([make_event("token_refresh_failed", op="t"), make_event("logout", op=None)])
    tracker.apply([make_event("token_refresh_success", op="unknown")])
    [state] = tracker.states
    assert (state.kind, state.outcome) == ("token refresh", "failed")


def test_tracker_tolerates_odd_context() -> None:
    tracker = RetryTracker()
    tracker.apply([make_event("copilot_retry", op="x", attempt="2", wait_s=True)])
    [state] = tracker.states
    assert (state.attempt, state.wait_s, state.reason) == (0, 0.0, "unknown")
    assert state.next_attempt_at == T0
    assert state.elapsed_fraction(T0) == 1.0


# -- export ---------------------------------------------------------------------------------------


def test_export_writes_one_json_object_per_line(tmp_path: Path) -> None:
    path = default_export_path(tmp_path, T0)
    assert path == tmp_path / "exports" / "events-20231114-221320.jsonl"
    entries = [LogEntry(1, make_event()), LogEntry(None, retry_event())]
    assert export_jsonl(entries, path) == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["token_refresh_start", "copilot_retry"]
    assert path.stat().st_mode & 0o777 == 0o600
    second = default_export_path(tmp_path, T0)
    assert second.name == "events-20231114-221320-2.jsonl"
    with pytest.raises(FileExistsError):
        export_jsonl([], path)


def test_export_falls_back_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    assert default_export_path(blocker, T0).parent == tmp_path


# -- journal tail ---------------------------------------------------------------------------------


def test_tail_reads_backlog_then_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    tail = JournalTail(path, batch_limit=3)
    try:
        assert not tail.exists()
        assert tail.backlog(10) == []
        assert tail.poll() == []
        write_journal(path, [make_event(ts=T0 + i) for i in range(5)])
        assert tail.exists()
        assert tail.label == f"journal {path}"
        backlog = tail.backlog(2)
        assert [entry.rowid for entry in backlog] == [4, 5]
        write_journal(path, [make_event("logout", ts=T0 + 9)])
        [entry] = tail.poll()
        assert (entry.rowid, entry.event.event) == (6, "logout")
        assert tail.poll() == []
    finally:
        tail.close()


def test_tail_follows_a_recreated_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    write_journal(path, [make_event(ts=T0 + i) for i in range(4)])
    tail = JournalTail(path)
    try:
        assert len(tail.backlog(10)) == 4
        tail.reader.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        tail.reader = JournalReader(path)
        write_journal(path, [make_event("login_complete")])
        [entry] = tail.poll()
        assert (entry.rowid, entry.event.event) == (1, "login_complete")
    finally:
        tail.close()


def test_tail_run_batches_and_reports_status(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    tail = JournalTail(path, batch_limit=2)
    batches: list[list[int]] = []
    states: list[tuple[str, str]] = []
    done = threading.Event()

    def deliver(batch: list[LogEntry]) -> None:
        batches.append([entry.rowid or 0 for entry in batch])
        if sum(len(b) for b in batches) >= 3:
            tail.stop()
            done.set()

    def status(state: str, detail: str) -> None:
        states.append((state, detail))
        if state == "waiting":
            write_journal(path, [make_event(ts=T0 + i) for i in range(3)])

    thread = threading.Thread(target=tail.run, args=(deliver, status), kwargs={"interval": 0.01})
    thread.start()
    assert done.wait(10)
    thread.join(10)
    tail.close()
    assert batches == [[1, 2], [3]]
    assert [state for state, _ in states] == ["waiting", "live"]


def test_tail_run_reports_errors_and_stops_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database" * 100)
    tail = JournalTail(path)
    states: list[tuple[str, str]] = []
    calls = iter([False, False, True])
    tail.run(
        lambda batch: None,
        lambda state, detail: states.append((state, detail)),
        interval=0.001,
        cancelled=lambda: next(calls),
    )
    tail.close()
    assert [state for state, _ in states] == ["error", "error"]
    assert "DatabaseError" in states[0][1]


def test_history_pages_filter_in_sql(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    write_journal(
        path,
        [make_event(ts=T0 + i, level="ERROR" if i % 3 == 0 else "INFO", seq=i) for i in range(10)],
    )
    reader = JournalReader(path)
    try:
        errors = EventFilter(level="ERROR")
        page, after, exhausted = read_history(reader, before=None, event_filter=errors, limit=2)
        assert [entry.rowid for entry in page] == [7, 10]
        assert (after, exhausted) == (7, False)
        page, after, exhausted = read_history(reader, before=7, event_filter=errors, limit=2)
        assert [entry.rowid for entry in page] == [1, 4]
        assert (after, exhausted) == (1, False)
        page, after, exhausted = read_history(reader, before=1, event_filter=errors, limit=2)
        assert (page, after, exhausted) == ([], 1, True)
        # key=value: narrowed in SQL, confirmed in Python; the cursor moves even on empty pages
        seq = EventFilter(text="seq=7")
        page, after, exhausted = read_history(reader, before=None, event_filter=seq, limit=2)
        assert (page, after, exhausted) == ([], 9, False)
        page, after, exhausted = read_history(reader, before=9, event_filter=seq, limit=2)
        assert [entry.event.context["seq"] for entry in page] == [7]
        assert [e.rowid for e in iter_matching(reader, seq, page=3)] == [8]
        everything = list(iter_matching(reader, EventFilter(), page=3))
        assert [entry.rowid for entry in everything] == list(range(1, 11))
        assert len(list(iter_matching(reader, errors, page=2))) == 4
    finally:
        reader.close()


# -- in-process bus -------------------------------------------------------------------------------


def test_bus_source_batches_events_from_any_thread() -> None:
    import logging

    bus = BusSource(subscribe, limit=3)
    assert bus.drain() == []
    bus.start()
    bus.start()  # idempotent
    logger = logging.getLogger("saga.test_tui")
    thread = threading.Thread(
        target=lambda: [log_with_context(logger, logging.INFO, f"e{i}") for i in range(5)]
    )
    thread.start()
    thread.join()
    drained = bus.drain()
    assert [entry.event.event for entry in drained] == ["e2", "e3", "e4"]
    assert all(entry.rowid is None for entry in drained)
    assert bus.dropped == 2
    bus.stop()
    bus.stop()
    log_with_context(logger, logging.INFO, "after")
    assert bus.drain() == []
