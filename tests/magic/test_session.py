"""Session wiring: settings, the journal it installs (or leaves alone), status helpers."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from magic_helpers import Harness

from saga_magic.core import events
from saga_magic.core.config import Settings
from saga_magic.core.events import Event
from saga_magic.core.types import TokenInfo
from saga_magic.magic.commands import _token_line, format_duration, format_event
from saga_magic.magic.session import CopilotSession, deployment_url
from saga_magic.magic.timefmt import moment
from saga_magic.magics import load_ipython_extension, unload_ipython_extension


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.4, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (4320, "1 h 12 min"),
        (47 * 3600, "47 h"),
        (48 * 3600, "2 d"),
        (51 * 3600, "2 d 3 h"),
        (-90, "1 min"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _info(**changes: Any) -> TokenInfo:
    fields: dict[str, Any] = {
        "user_id": "bob",
        "expires_at": 2000.0,
        "created_at": 0.0,
        "updated_at": 940.0,
    }
    fields.update(changes)
    return TokenInfo(**fields)


def test_token_lines() -> None:
    line = _token_line(_info(), now=1000.0, default_user="default", width=5)
    assert line.startswith("    bob    valid            expires in 16 min (at ")
    assert line.endswith("; saved 1 min ago")
    line = _token_line(_info(user_id="default"), now=1000.0, default_user="default", width=7)
    assert line.startswith("  * default")
    relogin = _token_line(_info(relogin_required=True), now=1000.0, default_user="x", width=3)
    assert "re-login needed  run %copilot login --user bob" in relogin
    relogin = _token_line(
        _info(user_id="x", relogin_required=True), now=1000.0, default_user="x", width=1
    )
    assert relogin.split(";")[0].endswith("run %copilot login")
    unknown = _token_line(_info(expires_at=None), now=1000.0, default_user="x", width=3)
    assert "expiry unknown" in unknown
    expired = _token_line(_info(expires_at=400.0), now=1000.0, default_user="x", width=3)
    assert "expired 10 min ago (refreshed on next use)" in expired


def test_format_event() -> None:
    event = Event(
        ts=1_700_000_000.25,
        level="WARNING",
        event="copilot_retry",
        user_id="bob",
        op_id="0123456789ab",
        pid=1,
        context={"attempt": 1, "reason": "429"},
    )
    line = format_event(event)
    assert line.endswith(".250 WARNING copilot_retry user=bob op=01234567 attempt=1 reason=429")
    bare = Event(ts=0.0, level="INFO", event="x", user_id=None, op_id=None, pid=1, context={})
    assert format_event(bare).endswith(".000 INFO    x")


def test_settings_factory_and_a_foreign_journal_is_kept(tmp_path: Path) -> None:
    foreign = events.EventJournal(tmp_path / "foreign.db")
    previous = events.install_journal(foreign)
    try:
        settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path / "home")})
        session = CopilotSession(settings_factory=lambda: settings)
        assert session.settings is settings
        assert session._journal is None  # someone else's journal stays installed
        session.close()
        assert events.get_journal() is foreign
        assert not foreign.closed
    finally:
        events.install_journal(previous)
        foreign.close()


def test_a_broken_journal_does_not_break_the_magic(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise OSError("read-only folder")

    monkeypatch.setattr(events, "EventJournal", broken)
    with caplog.at_level(logging.WARNING, logger="saga.magic"):
        result, _ = harness.run("%%copilot\nhi")
    assert result.success
    assert "event journal unavailable: read-only folder" in caplog.text
    assert events.get_journal() is None


def test_journal_replaced_by_someone_else_is_not_uninstalled(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    session = CopilotSession()
    load_ipython_extension(shell, session=session)
    session.settings  # noqa: B018 - installs the journal
    mine = session._journal
    assert mine is not None
    other = events.EventJournal(tmp_path / "other.db")
    events.install_journal(other)
    try:
        unload_ipython_extension(shell)
        assert events.get_journal() is other
        assert mine.closed
    finally:
        events.install_journal(None)
        other.close()


def test_use_settings_before_first_use(tmp_path: Path) -> None:
    session = CopilotSession()
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path / "home")})
    session.use_settings(settings)
    assert session.settings is settings
    assert session._journal is not None
    session.close()
    assert events.get_journal() is None


def test_unload_leaves_a_foreign_copilot_magic_alone(shell: InteractiveShell) -> None:
    session = CopilotSession()
    load_ipython_extension(shell, session=session)

    def other(line: str) -> str:
        return "mine"

    shell.register_magic_function(other, "line", "copilot")
    unload_ipython_extension(shell)
    assert shell.magics_manager.magics["line"]["copilot"] is other
    assert "copilot" not in shell.magics_manager.magics["cell"]
    del shell.magics_manager.magics["line"]["copilot"]


def test_format_event_is_compact() -> None:
    event = Event(
        ts=1_700_000_000.5,
        level="INFO",
        event="token_stored",
        user_id=None,
        op_id=None,
        pid=1,
        context={
            "expires_at": 1_700_003_600.0,
            "hint": None,
            "wait_s": 2.0,
            "latency_ms": 12.3456,
            "scopes": ["a", "b"],
            "request_id": "0123456789abcdef-long",
            "ok": True,
        },
    )
    line = format_event(event)
    at = time.strftime("%H:%M:%S", time.localtime(1_700_003_600.0))
    assert line.endswith(
        f"INFO    token_stored expires_at={at} wait_s=2 latency_ms=12.346 "
        'scopes=["a","b"] request_id=01234567 ok=True'
    )
    assert "hint" not in line
    long = Event(
        ts=0.0, level="INFO", event="x", user_id=None, op_id=None, pid=1, context={"m": "y" * 300}
    )
    assert len(format_event(long)) == 160
    assert format_event(long).endswith("\N{HORIZONTAL ELLIPSIS}")


def test_deployment_url_and_deployment_for(tmp_path: Path) -> None:
    url = "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=1"
    assert deployment_url(url, "o4 mini/x") == (
        "https://r.openai.azure.com/openai/deployments/o4%20mini%2Fx/chat/completions?api-version=1"
    )
    v1 = "https://r.openai.azure.com/openai/v1/chat/completions"
    assert deployment_url(v1, "o4-mini") == v1
    home = {"ARC_SAGA_HOME": str(tmp_path)}
    for endpoint, model, expected in [
        (url, "o4-mini", "o4-mini"),
        (url, None, None),
        (v1, "o4-mini", None),
        (None, "o4-mini", None),
    ]:
        env = dict(home, ARC_SAGA_COPILOT_ENDPOINT=endpoint) if endpoint else home
        session = CopilotSession(settings_factory=lambda env=env: Settings.from_env(env))
        assert session.deployment_for(model) == expected
        session.close()


def test_explicit_observe_is_idempotent(tmp_path: Path) -> None:
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path)})
    session = CopilotSession(settings_factory=lambda: settings)
    assert session.observe() is settings
    journal = session._journal
    assert session.observe() is settings
    assert session._journal is journal
    session.close()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (42.2, "43 s"),
        (60, "1 min"),
        (61, "2 min"),
        (3601, "1 h 1 min"),
        (86_400, "24 h"),
        (47 * 3600 + 1, "47 h 1 min"),
        (48 * 3600 + 1, "2 d 1 h"),
    ],
)
def test_format_duration_rounding_up(seconds: float, text: str) -> None:
    assert format_duration(seconds, round_up=True) == text


def test_moment_adds_the_date_when_not_today() -> None:
    now = time.mktime((2025, 6, 4, 12, 0, 0, 0, 0, -1))
    assert moment(now + 60, now=now) == "12:01:00"
    assert moment(now + 86_400, now=now) == "2025-06-05 12:00"
