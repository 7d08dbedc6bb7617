"""Events: redaction, log_with_context, the in-process bus, the journal sink, Event round trips."""

from __future__ import annotations

import atexit
import enum
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga_magic.core import events
from saga_magic.core.events import (
    MAX_STRING,
    REDACTED,
    Event,
    EventJournal,
    forget_secret,
    get_journal,
    install_journal,
    log_with_context,
    new_op_id,
    redact,
    redact_context,
    register_secret,
    reset_for_tests,
    safe_text,
    scrub_text,
    subscribe,
    subscriber_errors,
)

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
OPAQUE = "0.AAAAvX3kq9-opaque-refresh-token-7f3c9e1d"
LOG = logging.getLogger("saga.test")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    reset_for_tests()
    yield
    reset_for_tests()


@pytest.fixture
def collected() -> Iterator[list[Event]]:
    seen: list[Event] = []
    unsubscribe = subscribe(seen.append)
    yield seen
    unsubscribe()


# -- redaction by key ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "access_token",
        "refresh_token",
        "id_token",
        "ACCESS_TOKEN",
        "accessToken",
        "refreshToken",
        "idToken",
        "access-token",
        "refresh_tokens",
        "client_secret",
        "clientSecret",
        "clientsecret",
        "secret",
        "app_secret",
        "device_code",
        "deviceCode",
        "authorization",
        "Authorization",
        "proxy_authorization",
        "password",
        "db_password",
        "passwd",
        "assertion",
        "client_assertion",
        "api_key",
        "api-key",
        "x-api-key",
        "apiKey",
        "APIKey",
        "cookie",
        "set_cookie",
        "code_verifier",
        "private_key",
        "encryption_key",
    ],
)
def test_secret_keys_are_redacted_whatever_the_value(key: str) -> None:
    assert redact("s3cr3t-value", key) == REDACTED
    assert redact(12345, key) == REDACTED
    assert redact({"nested": "x"}, key) == REDACTED
    assert redact(["a"], key) == REDACTED


@pytest.mark.parametrize("key", ["access_token", "password", "token"])
def test_none_and_bools_under_secret_keys_stay_visible(key: str) -> None:
    assert redact(None, key) is None
    assert redact(True, key) is True


@pytest.mark.parametrize("key", ["token", "rejected_token", "csrfToken", "bearer_token", "Token"])
def test_token_keys_redact_strings_only(key: str) -> None:
    assert redact("opaque", key) == REDACTED
    assert redact(b"opaque", key) == REDACTED
    assert redact(42, key) == 42
    assert redact(["opaque", 3], key) == [REDACTED, 3]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prompt_tokens", 12),
        ("completion_tokens", 7),
        ("total_tokens", 19),
        ("max_tokens", 1024),
        ("reasoning_tokens", 3),
        ("tokens_used", 5),
        ("maxTokens", 10),
        ("prompt_tokens", "12"),
        ("token_type", "Bearer"),
        ("token_status", "valid"),
        ("token_endpoint", "https://login.example/token"),
        ("paid_tokens", "4"),
        ("user_code", "ABCD-EFGH"),
        ("secretary", "Jane"),
        ("status", 429),
        ("reason", "http 503"),
    ],
)
def test_counters_and_harmless_keys_are_kept(key: str, value: Any) -> None:
    assert redact(value, key) == value


@pytest.mark.parametrize("key", ["tokens", "Tokens", "bearer_tokens", "csrfTokens", "all_tokens"])
def test_plural_token_keys_hide_token_strings(key: str) -> None:
    # M5: ``tokens=[...]`` used to pass as a plain key.
    assert redact(["AT-one-opaque", "AT-two-opaque"], key) == [REDACTED, REDACTED]
    assert redact("AT-one-opaque", key) == REDACTED
    assert redact(b"AT", key) == REDACTED
    assert redact({"alice": "AT-one-opaque", "count": 2}, key) == {"alice": REDACTED, "count": 2}


@pytest.mark.parametrize(
    ("key", "value"),
    [("tokens", 5), ("tokens", "12"), ("prompt_tokens", " 3.5 "), ("tokens_used", ["4", 5])],
)
def test_plural_token_keys_keep_counts(key: str, value: Any) -> None:
    assert redact(value, key) == value


def test_plural_token_key_in_an_event(collected: list[Event]) -> None:
    log_with_context(LOG, logging.INFO, "probe", tokens=["AT-one-opaque"], prompt_tokens=3)
    assert collected[0].context == {"tokens": [REDACTED], "prompt_tokens": 3}


def test_strings_under_a_token_key_stay_hidden_when_nested() -> None:
    assert redact({"type": "Bearer", "value": "opaque"}, "token") == {
        "type": REDACTED,
        "value": REDACTED,
    }
    assert redact({"token_type": "Bearer", "n": 1}, "grant") == {"token_type": "Bearer", "n": 1}


def test_redact_context_uses_each_key() -> None:
    context = {"access_token": "abc", "attempt": 2, "wait_s": 1.5, "prompt_tokens": 9}
    assert redact_context(context) == {
        "access_token": REDACTED,
        "attempt": 2,
        "wait_s": 1.5,
        "prompt_tokens": 9,
    }


# -- redaction by shape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (JWT, REDACTED),
        (f"token was {JWT} today", f"token was {REDACTED} today"),
        (f"{JWT}.AAAA.BBBB", REDACTED),  # JWE-like: five parts
        ("Authorization: Bearer abc.def-ghi~jkl+/==", f"Authorization: {REDACTED}"),
        ("header bearer abc123 sent", f"header bearer {REDACTED} sent"),
        ("token_type=Bearer expires_in=3599", "token_type=Bearer expires_in=3599"),
        ("Basic dXNlcjpwYXNz", f"Basic {REDACTED}"),
        (
            "grant_type=refresh_token&refresh_token=0.AAA-xyz&client_id=c",
            f"grant_type=refresh_token&refresh_token={REDACTED}&client_id=c",
        ),
        ('{"access_token": "opaque-value", "x": 1}', f'{{"access_token": "{REDACTED}", "x": 1}}'),
        ("client_secret=abc device_code: xyz", f"client_secret={REDACTED} device_code: {REDACTED}"),
        ("PASSWORD=hunter2", f"PASSWORD={REDACTED}"),
        ("api-key: k123", f"api-key: {REDACTED}"),
        ("token=abc", f"token={REDACTED}"),
        ("authorization=SharedKey acct:sig", f"authorization={REDACTED}"),
        (
            "prompt_tokens=12 token_type=Bearer max_tokens: 5",
            "prompt_tokens=12 token_type=Bearer max_tokens: 5",
        ),
        (
            "eyJhbGciOiJIUzI1NiJ9 alone is only a header",
            "eyJhbGciOiJIUzI1NiJ9 alone is only a header",
        ),
        ("refresh the page", "refresh the page"),
    ],
)
def test_secret_shapes_are_scrubbed_in_any_string(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(text, "message") == expected


def test_strings_are_truncated_after_scrubbing() -> None:
    long = "a" * 300
    out = redact(long)
    assert len(out) == MAX_STRING
    assert out.endswith("…")
    assert redact("b" * MAX_STRING) == "b" * MAX_STRING
    # A secret straddling the cut is scrubbed before truncation: no fragment of it survives.
    text = "x" * 180 + JWT
    assert redact(text) == "x" * 180 + REDACTED


def test_safe_text_redacts_and_truncates() -> None:
    opaque = "Ab3" * 20
    path = "/openai/deployments/my-deployment-name/chat/completions"
    text = f"Bearer sekret-value {JWT} {opaque} {path}"
    cleaned = safe_text(text, limit=500)
    assert "sekret-value" not in cleaned
    assert JWT not in cleaned
    assert opaque not in cleaned
    assert path in cleaned
    assert "8f1c2a9e-1111-2222-3333-444455556666" in safe_text(
        "id 8f1c2a9e-1111-2222-3333-444455556666"
    )
    short = safe_text("word " * 100, limit=20)
    assert len(short) == 20
    assert short.endswith("…")
    assert len(safe_text("z" * 500)) == MAX_STRING


def test_safe_text_collapses_whitespace() -> None:
    assert safe_text("  a\n\tb   c  ") == "a b c"


def test_safe_text_scrubs_registered_secrets() -> None:
    register_secret("opaque-secret-value-123")
    assert "opaque-secret-value-123" not in safe_text("echo opaque-secret-value-123 back")


def test_safe_text_hides_given_values() -> None:
    # e.g. the Entra ID boundary: the refresh token and client secret the request carried.
    text = "ConnectError: form was grant=x&rt=short1 secret=s3"
    cleaned = safe_text(text, secrets=("short1", None, "", "s3"))
    assert cleaned == f"ConnectError: form was grant=x&rt={REDACTED} secret={REDACTED}"


@pytest.mark.parametrize("limit", [0, -1])
def test_safe_text_rejects_a_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        safe_text("x", limit=limit)


def test_scrub_text_does_not_truncate() -> None:
    text = "y" * 500 + " Bearer abc"
    assert scrub_text(text) == "y" * 500 + f" Bearer {REDACTED}"


# -- registered secrets ----------------------------------------------------------------------------


def test_registered_opaque_secrets_are_scrubbed_inside_longer_strings() -> None:
    assert register_secret(OPAQUE) is True
    error = RuntimeError(f"refresh failed for {OPAQUE}!")
    assert redact(f"prefix{OPAQUE}suffix") == f"prefix{REDACTED}suffix"
    assert redact(error) == f"RuntimeError: refresh failed for {REDACTED}!"
    assert redact({"detail": [f"a {OPAQUE} b {OPAQUE}"]}) == {
        "detail": [f"a {REDACTED} b {REDACTED}"]
    }
    forget_secret(OPAQUE)
    assert redact(f"x {OPAQUE}") == f"x {OPAQUE}"


def test_secrets_sharing_a_prefix_longest_wins() -> None:
    short = "abcdefgh-12345678"
    long = short + "-and-more-characters"
    register_secret(short)
    register_secret(long)
    assert scrub_text(f"1 {long} 2 {short} 3") == f"1 {REDACTED} 2 {REDACTED} 3"
    # a near miss on the shared prefix is left alone
    assert scrub_text("abcdefgh-0000 zz") == "abcdefgh-0000 zz"


def test_short_or_non_string_secrets_are_ignored() -> None:
    assert register_secret("short") is False
    assert register_secret(12345678901234567890) is False  # type: ignore[arg-type]
    assert scrub_text("short and sweet text") == "short and sweet text"
    forget_secret("never-registered-value")


def test_registry_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_MAX_SECRETS", 2)
    values = [f"secret-number-{i}-xxxxxxxx" for i in range(3)]
    for value in values:
        register_secret(value)
    register_secret(values[1])  # re-registering refreshes, no duplicate
    assert scrub_text(" ".join(values)) == f"{values[0]} {REDACTED} {REDACTED}"


def test_registry_is_thread_safe() -> None:
    def worker(n: int) -> None:
        for i in range(50):
            value = f"thread-{n}-secret-{i:04d}-padding"
            register_secret(value)
            assert scrub_text(f"<{value}>") == f"<{REDACTED}>"

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_many_secrets_still_scrub() -> None:
    values = [f"{i:08d}-opaque-token-value" for i in range(500)]
    for value in values:
        register_secret(value)
    assert scrub_text(f"a {values[123]} b {values[499]}") == f"a {REDACTED} b {REDACTED}"


# -- JSON safety -----------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Kind(enum.StrEnum):
    CHAT = "chat"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_become_json_safe() -> None:
    context = {
        "path": Path("/tmp/journal.db"),
        "error": ValueError("bad thing"),
        "color": Color.RED,
        "level": Level.HIGH,
        "kind": Kind.CHAT,
        "nan": math.nan,
        "inf": -math.inf,
        "f": 0.25,
        "blob": b"\x00\x01\x02",
        "tuple": (1, "two"),
        "set": {1},
        "frozen": frozenset({"a"}),
        "none": None,
        "odd": Unprintable(),
        3: "int key",
        "nested": {"deep": [{"x": 1}]},
    }
    out = redact_context(context)
    json.dumps(out, allow_nan=False)
    assert out["path"] == "/tmp/journal.db"
    assert out["error"] == "ValueError: bad thing"
    assert out["color"] == "Color.RED"
    assert out["level"] == 3
    assert type(out["level"]) is int
    assert out["kind"] == "chat"
    assert type(out["kind"]) is str
    assert out["nan"] == "nan"
    assert out["inf"] == "-inf"
    assert out["f"] == 0.25
    assert out["blob"] == "<3 bytes>"
    assert out["tuple"] == [1, "two"]
    assert out["set"] == [1]
    assert out["frozen"] == ["a"]
    assert out["none"] is None
    assert out["odd"] == "<unprintable Unprintable>"
    assert out["3"] == "int key"
    assert out["nested"] == {"deep": [{"x": 1}]}


def test_secret_shaped_keys_are_scrubbed_too() -> None:
    out = redact_context({f"k {JWT}": 1, "a-very-long-key-name-with-dashes": 2})
    assert out == {f"k {REDACTED}": 1, "a-very-long-key-name-with-dashes": 2}


def test_containers_are_capped() -> None:
    out = redact(list(range(120)))
    assert out[:50] == list(range(50))
    assert out[50] == "<70 more>"
    assert len(out) == 51
    mapping = redact({f"k{i}": i for i in range(60)})
    assert len(mapping) == 51
    assert mapping["…"] == "<10 more>"


def test_nesting_is_capped() -> None:
    value: Any = "bottom"
    for _ in range(10):
        value = {"down": value}
    out = redact(value)
    depth = 0
    while isinstance(out, dict):
        out = out["down"]
        depth += 1
    assert out == "<nested too deep>"
    assert depth == 6
    assert redact([[[[[[[["x"]]]]]]]]) == [[[[[["<nested too deep>"]]]]]]


# -- log_with_context ------------------------------------------------------------------------------


def test_no_sink_returns_quickly_with_a_skeleton_event() -> None:
    quiet = logging.getLogger("saga.quiet")
    quiet.setLevel(logging.CRITICAL)
    event = log_with_context(quiet, logging.DEBUG, "copilot_request_start", user_id="u", a=1)
    assert event.event == "copilot_request_start"
    assert event.level == "DEBUG"
    assert event.user_id == "u"
    assert event.context == {}


def test_event_fields_and_redacted_context(collected: list[Event]) -> None:
    op_id = new_op_id()
    event = log_with_context(
        LOG,
        logging.INFO,
        "token_refresh_retry",
        user_id="alice",
        op_id=op_id,
        attempt=2,
        max_attempts=6,
        wait_s=2.0,
        next_attempt_at=1_700_000_002.0,
        reason="http 503",
        refresh_token=OPAQUE,
    )
    assert collected == [event]
    assert event.level == "INFO"
    assert event.user_id == "alice"
    assert event.op_id == op_id
    assert event.pid > 0
    assert event.ts > 1_600_000_000
    assert event.context["attempt"] == 2
    assert event.context["refresh_token"] == REDACTED


def test_user_id_is_scrubbed_and_truncated(collected: list[Event]) -> None:
    event = log_with_context(LOG, logging.INFO, "login_complete", user_id="u" * 300)
    assert event.user_id is not None
    assert len(event.user_id) == MAX_STRING


def test_stdlib_logging_gets_redacted_text_and_the_event(caplog: pytest.LogCaptureFixture) -> None:
    register_secret(OPAQUE)
    with caplog.at_level(logging.DEBUG, logger="saga"):
        event = log_with_context(
            LOG,
            logging.WARNING,
            "token_refresh_failed",
            user_id="bob",
            op_id="abc123",
            access_token=JWT,
            error=RuntimeError(f"server said {OPAQUE}"),
            note="two words",
            status=503,
            extra_info={"a": [1, 2]},
        )
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.saga_event is event  # type: ignore[attr-defined]
    assert record.funcName == "test_stdlib_logging_gets_redacted_text_and_the_event"
    message = record.getMessage()
    assert message == (
        "token_refresh_failed access_token=[REDACTED] "
        'error="RuntimeError: server said [REDACTED]" note="two words" status=503 '
        'extra_info={"a":[1,2]} user_id=bob op_id=abc123'
    )
    assert OPAQUE not in caplog.text
    assert JWT not in caplog.text


def test_message_of_event_without_context(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="saga"):
        log_with_context(LOG, logging.INFO, "engine_closed", empty="")
        log_with_context(LOG, logging.INFO, "engine_closed")
    assert caplog.messages == ['engine_closed empty=""', "engine_closed"]


def test_disabled_logger_still_feeds_subscribers(
    collected: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    quiet = logging.getLogger("saga.quiet2")
    quiet.setLevel(logging.ERROR)
    with caplog.at_level(logging.DEBUG, logger="saga.other"):
        log_with_context(quiet, logging.INFO, "copilot_request_start", prompt_chars=5)
    assert caplog.records == []
    assert collected[0].context == {"prompt_chars": 5}


def test_custom_level_name(collected: list[Event]) -> None:
    log_with_context(LOG, 15, "odd_level")
    assert collected[0].level == "Level 15"


def test_new_op_id_is_short_hex_and_unique() -> None:
    ids = {new_op_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{12}", op_id) for op_id in ids)


def test_pid_follows_fork_hook(collected: list[Event], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 424242)
    events._after_fork()
    try:
        assert log_with_context(LOG, logging.INFO, "forked").pid == 424242
    finally:
        monkeypatch.undo()
        events._after_fork()


def test_fork_hook_gives_the_child_its_own_journal_writer(tmp_path: Path) -> None:
    inherited = EventJournal(tmp_path / "j.db", max_rows=7, batch_size=3)
    install_journal(inherited)
    try:
        events._after_fork()
        child = get_journal()
        assert child is not None
        assert child is not inherited
        assert child.path == inherited.path
        assert child.max_rows == 7
        assert events._inherited == [inherited]
        child.close()
        events._after_fork()  # a closed journal is not copied again
        assert get_journal() is child
        assert events._inherited == [inherited]
    finally:
        events._inherited.clear()
        inherited.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_events_reach_the_journal(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db")
    install_journal(journal)
    log_with_context(LOG, logging.INFO, "from_parent")
    assert journal.flush()
    pid = os.fork()
    if pid == 0:  # the child: emit through its own writer, then leave without cleanup
        log_with_context(LOG, logging.INFO, "from_child")
        child = get_journal()
        os._exit(0 if child is not journal and child is not None and child.flush(10) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    rows = journal.read_after(0)
    assert [row.event.event for row in rows] == ["from_parent", "from_child"]
    assert rows[1].event.pid == pid
    assert rows[0].event.pid == os.getpid()


# -- subscribers -----------------------------------------------------------------------------------


def test_unsubscribe_is_idempotent() -> None:
    seen: list[Event] = []
    unsubscribe = subscribe(seen.append)
    log_with_context(LOG, logging.INFO, "one")
    unsubscribe()
    unsubscribe()
    log_with_context(LOG, logging.INFO, "two")
    assert [e.event for e in seen] == ["one"]


def test_same_callback_twice_gets_two_calls() -> None:
    seen: list[Event] = []
    first = subscribe(seen.append)
    subscribe(seen.append)
    log_with_context(LOG, logging.INFO, "x")
    first()
    log_with_context(LOG, logging.INFO, "y")
    assert [e.event for e in seen] == ["x", "x", "y"]


def test_raising_callback_is_isolated_and_counted(
    collected: list[Event], caplog: pytest.LogCaptureFixture
) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    subscribe(boom)
    with caplog.at_level(logging.DEBUG):
        event = log_with_context(LOG, logging.INFO, "copilot_request_complete")
        log_with_context(LOG, logging.INFO, "copilot_request_complete")
    assert subscriber_errors() == 2
    assert collected[0] is event
    assert len(collected) == 2
    assert "subscriber bug" not in caplog.text
    reset_for_tests()
    assert subscriber_errors() == 0


def test_emitting_inside_a_callback_does_not_recurse(
    collected: list[Event], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = EventJournal(tmp_path / "j.db")
    install_journal(journal)
    calls: list[str] = []

    def echo(event: Event) -> None:
        calls.append(event.event)
        log_with_context(LOG, logging.INFO, "echo_of_" + event.event)

    subscribe(echo)
    with caplog.at_level(logging.INFO, logger="saga"):
        log_with_context(LOG, logging.INFO, "original")
    assert calls == ["original"]
    assert [e.event for e in collected] == ["original"]
    assert caplog.messages == ["original"]
    assert journal.flush()
    assert sorted(row.event.event for row in journal.read_after(0)) == [
        "echo_of_original",
        "original",
    ]


def test_subscribe_and_emit_from_many_threads() -> None:
    received: list[Event] = []
    lock = threading.Lock()

    def keep(event: Event) -> None:
        with lock:
            received.append(event)

    subscribe(keep)
    barrier = threading.Barrier(6)

    def emitter(n: int) -> None:
        barrier.wait()
        for i in range(200):
            log_with_context(LOG, logging.DEBUG, "tick", n=n, i=i)

    def churner() -> None:
        barrier.wait()
        for _ in range(200):
            subscribe(lambda event: None)()

    threads = [threading.Thread(target=emitter, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=churner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(received) == 800
    assert events._callbacks == (keep,)


# -- the journal sink ------------------------------------------------------------------------------


def test_install_and_get_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[object] = []
    monkeypatch.setattr(events, "_atexit_registered", False)
    monkeypatch.setattr(atexit, "register", registered.append)
    first = EventJournal(tmp_path / "a.db")
    second = EventJournal(tmp_path / "b.db")
    try:
        assert get_journal() is None
        assert install_journal(first) is None
        assert install_journal(second) is first
        assert get_journal() is second
        assert registered == [events._close_installed]
        events._close_installed()
        assert second.closed
        assert not first.closed
        install_journal(None)
        events._close_installed()  # nothing installed: no-op
    finally:
        first.close()
        second.close()


def test_reset_for_tests_closes_the_installed_journal(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db")
    install_journal(journal)
    subscribe(lambda event: None)
    register_secret(OPAQUE)
    reset_for_tests()
    assert journal.closed
    assert get_journal() is None
    assert events._callbacks == ()
    assert scrub_text(OPAQUE) == OPAQUE


def test_ten_thousand_emits_land_in_the_journal(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.db", queue_size=20_000)
    install_journal(journal)
    quiet = logging.getLogger("saga.bulk")
    quiet.setLevel(logging.CRITICAL)
    for i in range(10_000):
        log_with_context(quiet, logging.INFO, "copilot_request_complete", user_id="u", i=i)
    assert journal.flush(timeout=30)
    assert journal.count() == 10_000
    assert journal.stats().dropped == 0
    last = journal.read_last(1)[0]
    assert last.event.context == {"i": 9_999}


def test_canary_no_secret_reaches_any_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = EventJournal(tmp_path / "j.db")
    install_journal(journal)
    seen: list[Event] = []
    subscribe(seen.append)
    client_secret = "cs~8Q~abcdefghijklmnopqrstuvwxyz012345"
    register_secret(client_secret)
    register_secret(OPAQUE)  # opaque values are caught in free text only once registered
    with caplog.at_level(logging.DEBUG, logger="saga"):
        log_with_context(
            LOG,
            logging.DEBUG,
            "token_refresh_failed",
            access_token=JWT,
            refresh_token=OPAQUE,
            body=f'{{"error":"invalid_client","detail":"{client_secret}"}}',
            headers={"Authorization": f"Bearer {JWT}"},
            message=f"sent {OPAQUE} and {JWT}",
        )
    assert journal.flush()
    stored = json.dumps([row.event.to_dict() for row in journal.read_after(0)])
    for sink in (caplog.text, stored, json.dumps([e.to_dict() for e in seen])):
        assert JWT not in sink
        assert client_secret not in sink
        assert "opaque-refresh" not in sink


# -- Event -----------------------------------------------------------------------------------------


def test_event_round_trips() -> None:
    event = Event(
        ts=1.5, level="INFO", event="x", user_id="u", op_id="o", pid=7, context={"a": [1, "b"]}
    )
    assert Event.from_dict(event.to_dict()) == event
    assert Event.from_json(event.to_json()) == event
    assert json.loads(event.to_json())["context"] == {"a": [1, "b"]}
    minimal = Event.from_dict({"ts": 2, "event": "y"})
    assert minimal == Event(2.0, "INFO", "y", None, None, 0, {})
    assert (
        Event(1.0, "INFO", "z", None, None, 1, {"p": Path("/x")}).to_json().endswith('"p":"/x"}}')
    )


@pytest.mark.parametrize(
    "data",
    [
        {"event": "x"},
        {"ts": True, "event": "x"},
        {"ts": "1", "event": "x"},
        {"ts": 1},
        {"ts": 1, "event": ""},
        {"ts": 1, "event": "x", "level": 20},
        {"ts": 1, "event": "x", "pid": "7"},
        {"ts": 1, "event": "x", "pid": False},
        {"ts": 1, "event": "x", "context": [1]},
        {"ts": 1, "event": "x", "user_id": 5},
        {"ts": 1, "event": "x", "op_id": ["o"]},
    ],
)
def test_event_from_dict_rejects_bad_fields(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="event"):
        Event.from_dict(data)


def test_event_from_json_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Event.from_json("[1, 2]")
    with pytest.raises(ValueError, match="Expecting"):
        Event.from_json("{not json")
