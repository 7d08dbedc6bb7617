"""The TUI's pure parts: filters, the retry tracker, time formatting, export, journal sources."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_helpers import T0, make_event, retry_event, write_journal

from saga_magic.core.events import JournalReader, log_with_context, subscribe
from saga_tui.export import ExportCancelled, default_export_path, export_jsonl
from saga_tui.filters import EventFilter, level_rank
from saga_tui.messages import LogEntry
from saga_tui.retries import RetryTracker
from saga_tui.sources import BusSource, JournalTail, iter_matching, read_history
from saga_tui.timefmt import format_ago, format_clock_time, format_countdown, format_duration
from saga_tui.widgets.tokens_panel import short_scopes

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


def test_key_value_text_matches_exactly() -> None:
    retry = retry_event(reason="429", wait_s=2.0)
    assert EventFilter(text="reason=429").matches(retry)
    assert EventFilter(text="REASON='429'").matches(retry)
    assert not EventFilter(text="reason=42").matches(retry)  # not a substring match
    assert EventFilter(text="wait_s=2").matches(retry)  # numbers compare as numbers
    assert EventFilter(text="wait_s=2.00").matches(retry)
    assert not EventFilter(text="wait_s=abc").matches(retry)
    assert not EventFilter(text="reason=503").matches(retry)
    assert not EventFilter(text="missing=1").matches(retry)
    assert EventFilter(text="op_id=op1").matches(retry)
    assert not EventFilter(text="op_id=op").matches(retry)
    assert EventFilter(text="level=warning").matches(retry)
    assert not EventFilter(text="level=warn").matches(retry)
    assert not EventFilter(text="user_id=bob").matches(retry)
    assert not EventFilter(text="user_id=x").matches(make_event(user=None))
    assert EventFilter(text="n=12345").matches(make_event(n=12345))
    assert not EventFilter(text="n=12345").matches(make_event(n=912345))
    assert EventFilter(text="ok=true").matches(make_event(ok=True))
    assert not EventFilter(text="ok=1").matches(make_event(ok=True))
    assert EventFilter(text='reason="a b"').matches(make_event(reason="A b"))
    assert EventFilter(text='x={"a":1}').matches(make_event(x={"a": 1}))
    assert not EventFilter(text="nan=nan").matches(make_event(nan=1.0))


def test_key_value_text_narrows_in_sql() -> None:
    def sql(text: str) -> object:
        return EventFilter(text=text).query_kwargs()["text"]

    assert sql("reason=timeout") == '"reason":"timeout'
    assert sql("n=12345") == "12345"  # a number, or a string of digits ("429")
    assert sql("wait_s=2.0") == "2"
    assert sql("wait_s=1.5") == "1.5"
    assert sql("ok=true") == '"ok":true'
    assert sql('reason=a"b') == '"reason":'
    assert sql("reason=") == '"reason":'
    assert sql("event=copilot_retry") == "copilot_retry"
    assert sql("event=") is None
    assert sql("level=error") is None
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


def test_short_scopes() -> None:
    assert short_scopes(["https://cognitiveservices.azure.com/.default", "offline_access"]) == (
        "cognitiveservices/.default"
    )
    assert short_scopes(["openid", "profile"]) == "-"
    long = short_scopes(["api://a-very-long-application-id/.default", "User.Read"], limit=20)
    assert (len(long), long[-1]) == (20, "…")


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


def test_tracker_marks_silent_operations_stale_then_drops_them() -> None:
    tracker = RetryTracker(linger=5, grace=30)
    tracker.apply([retry_event(op="gone", wait_s=4)])  # next attempt at T0 + 4
    assert not tracker.prune(T0 + 33)
    tracker.apply([make_event("copilot_request_adapted", op="gone", ts=T0 + 10)])  # news
    assert not tracker.prune(T0 + 39)
    assert tracker.prune(T0 + 40)
    [state] = tracker.states
    assert (state.outcome, state.ended_at) == ("unknown", T0 + 40)
    assert not tracker.apply([make_event("copilot_request_complete", op="gone", ts=T0 + 41)])
    assert tracker.prune(T0 + 45)
    assert tracker.states == []


def test_tracker_knows_every_retry_event_and_lease_handovers() -> None:
    tracker = RetryTracker()
    tracker.apply(
        [
            retry_event("device_code_retry", op="d"),
            retry_event("future_thing_retry", op="f"),
            retry_event("token_refresh_retry", op="t"),
            make_event("token_refresh_failed", op="t", code="lease_lost"),
        ]
    )
    kinds = {state.op_id: (state.kind, state.outcome) for state in tracker.states}
    assert kinds == {
        "d": ("device code", None),
        "f": ("future thing", None),
        "t": ("token refresh", None),  # another process took the refresh over: still waiting
    }
    tracker.apply([make_event("device_code_issued", op="d")])
    assert tracker.get("d").outcome == "succeeded"  # type: ignore[union-attr]


def test_tracker_counts_the_attempt_that_ended_the_operation() -> None:
    tracker = RetryTracker()
    tracker.apply(
        [
            retry_event(op="ok", attempt=2, wait_s=4),
            retry_event(op="told", attempt=2, wait_s=4),
            retry_event(op="late", attempt=2, wait_s=4),
            retry_event(op="early", attempt=2, wait_s=4),
        ]
    )
    tracker.apply(
        [
            make_event("copilot_request_complete", op="ok", ts=T0 + 5),
            make_event("copilot_request_complete", op="told", ts=T0 + 5, attempts=7),
            make_event("copilot_error", op="late", ts=T0 + 5),
            make_event("copilot_error", op="early", ts=T0 + 1),  # deadline during the wait
        ]
    )
    attempts = {state.op_id: state.attempt for state in tracker.states}
    assert attempts == {"ok": 3, "told": 7, "late": 3, "early": 2}


def test_tracker_discards_the_apps_own_cancelled_call() -> None:
    tracker = RetryTracker()
    tracker.apply(
        [
            retry_event(op="mine", ts=T0 + 5),
            retry_event(op="older", ts=T0 - 60),
            retry_event("token_refresh_retry", op="token", ts=T0 + 5),
            make_event("copilot_retry", op="other", ts=T0 + 5, user="bob"),
        ]
    )
    assert tracker.discard(pid=4242, kind="chat request", since=T0, user_id="alice")
    assert {state.op_id for state in tracker.states} == {"older", "token", "other"}
    assert not tracker.discard(pid=1, kind="chat request", since=T0)


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
        export_jsonl(entries, path)
    assert export_jsonl([], second) == 0  # nothing to write: no file
    assert not second.exists()


def test_export_creates_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    path = default_export_path(home, T0)
    assert (home.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o700, 0o700)


def test_export_removes_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    entries = [LogEntry(i, make_event(seq=i)) for i in range(5)]
    checks = iter([False, False, True])
    with pytest.raises(ExportCancelled):
        export_jsonl(entries, path, cancelled=lambda: next(checks))
    assert not path.exists()

    def failing() -> Iterator[LogEntry]:
        yield entries[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        export_jsonl(failing(), path)
    assert not path.exists()
    ends = iter([False, True])  # the source stopped early because it was cancelled
    with pytest.raises(ExportCancelled):
        export_jsonl(entries[:1], path, cancelled=lambda: next(ends))
    assert not path.exists()


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


def test_tail_run_retries_the_backlog_until_the_journal_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database" * 100)
    tail = JournalTail(path)
    batches: list[list[int]] = []
    states: list[str] = []

    def status(state: str, detail: str) -> None:
        states.append(state)
        if state == "error" and states.count("error") == 2:
            path.unlink()  # the user fixes it: a valid journal appears in its place
            write_journal(path, [make_event(ts=T0 + i) for i in range(6)])

    def deliver(batch: list[LogEntry]) -> None:
        batches.append([entry.rowid or 0 for entry in batch])
        tail.stop()

    tail.run(deliver, status, backlog=4, interval=0.001)
    tail.close()
    assert states == ["error", "error", "live"]
    assert batches == [[3, 4, 5, 6]]  # the backlog, read once the file was fixed


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
        seq = EventFilter(text="seq=1")  # SQL finds "1" in every row (op_id "op1"): Python checks
        page, after, exhausted = read_history(reader, before=None, event_filter=seq, limit=2)
        assert (page, after, exhausted) == ([], 9, False)
        page, after, exhausted = read_history(reader, before=9, event_filter=seq, limit=8)
        assert [entry.event.context["seq"] for entry in page] == [1]
        assert [e.rowid for e in iter_matching(reader, seq, page=3)] == [2]
        assert list(iter_matching(reader, EventFilter(), cancelled=lambda: True)) == []
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
