"""``%copilot`` subcommands and ``%%copilot`` end to end: real core, sandbox, loopback HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from magic_helpers import Harness, plain, texts

from saga_magic.core.events import EventJournal
from saga_magic.magic.failure import CopilotError, CopilotInterrupted
from saga_magic.magic.runner import Job


def _out(harness: Harness, source: str, *, ok: bool = True) -> str:
    result, captured = harness.run(source)
    assert result.success is ok, plain(captured.stdout + captured.stderr)
    return plain(captured.stdout)


def test_sandbox_then_ask_streams_the_echo(sandboxed: Harness, isolated_env: Path) -> None:
    settings = sandboxed.session.settings
    assert settings.authority_host.startswith("http://127.0.0.1:")
    assert settings.token_store_path == isolated_env / "sandbox_tokens.db"
    sandboxed.shell.user_ns["city"] = "Lyon"
    result, captured = sandboxed.run("%%copilot\nweather in {city}")
    assert result.success, captured.stdout
    answer = sandboxed.shell.user_ns["_copilot"]
    assert answer.response_text == "weather in Lyon"
    assert answer.attempts == 1
    assert texts(captured)[-1] == "weather in Lyon"
    assert captured.stderr == ""
    status = _out(sandboxed, "%copilot status")
    assert "(sandbox)" in status
    assert "* default  valid" in status
    assert "expires in" in status
    assert "last request:" in status
    assert "1 attempt(s)" in status
    assert "conversation: 1 of 20 turns kept for 'default'" in status


def test_sandbox_output_and_its_options(live: Harness) -> None:
    out = _out(live, "%copilot sandbox --script chat ok", ok=False)
    assert "CopilotError: the sandbox is not running" in out
    out = _out(live, "%copilot sandbox --stop")
    assert "sandbox: not running" in out
    out = _out(live, "%copilot sandbox")
    assert "emulator running on http://127.0.0.1:" in out
    assert "os.environ is unchanged" in out
    assert "ARC_SAGA_COPILOT_ENDPOINT=http://127.0.0.1:" in out
    assert "signed in 'default'" in out
    assert "already running" in _out(live, "%copilot sandbox")
    assert "next chat answers: 500_json, ok" in _out(
        live, "%copilot sandbox --script chat 500_json ok"
    )
    assert "scripts and recorded requests cleared" in _out(live, "%copilot sandbox --reset")
    assert live.session.sandbox.pending("chat") == {}
    out = _out(live, "%copilot sandbox --script chat no_such_fault", ok=False)
    assert out.startswith("CopilotError: bad sandbox script")
    out = _out(live, "%copilot sandbox --script chat", ok=False)
    assert "needs an endpoint then faults" in out
    assert "stopped; settings restored" in _out(live, "%copilot sandbox --stop")
    assert live.session.settings.copilot_endpoint is None
    out = _out(live, "%%copilot\nhi", ok=False)
    assert out.startswith(
        "CopilotError: configuration: ARC_SAGA_COPILOT_ENDPOINT is not set -> set "
        "ARC_SAGA_COPILOT_ENDPOINT, or run %copilot sandbox"
    )


def test_scripted_429_is_ridden_out_with_a_live_line(sandboxed: Harness) -> None:
    _out(sandboxed, "%copilot sandbox --script chat 429:retry_after=1 ok")
    result, captured = sandboxed.run("%%copilot\nslow down")
    assert result.success, captured.stdout
    assert sandboxed.shell.user_ns["_copilot"].attempts == 2
    lines = [line for line in texts(captured) if "retrying" in line]
    assert lines
    assert lines[0].startswith("rate limited (429), retrying in ")
    assert lines[0].endswith("attempt 2 of 6")
    assert captured.stderr == ""  # WARNING events do not leak through logging's last resort


def test_server_rejection_is_one_line(sandboxed: Harness) -> None:
    _out(sandboxed, "%copilot sandbox --script chat 400_context")
    out = _out(sandboxed, "%%copilot\ntoo much", ok=False).strip()
    assert out.startswith("CopilotError: request rejected: ")
    assert "\n" not in out
    assert "Traceback" not in out
    assert "failed: request rejected" in _out(sandboxed, "%copilot status")


def test_login_logout_and_relogin_hint(sandboxed: Harness) -> None:
    out = _out(sandboxed, "%copilot login --user bob")
    assert "enter the code" in out
    assert "waiting for the sign-in of 'bob'" in out
    assert "signed in: user 'bob', token valid for" in out
    status = _out(sandboxed, "%copilot status")
    assert "  bob" in status
    assert "* default" in status
    assert "signed out: 'bob'" in _out(sandboxed, "%copilot logout --user bob")
    assert "no token was stored for 'bob'" in _out(sandboxed, "%copilot logout --user bob")
    out = _out(sandboxed, "%%copilot --user bob\nhello", ok=False)
    assert out.startswith("CopilotError: re-login needed for user 'bob'")
    assert out.strip().endswith("run %copilot login --user bob")
    _out(sandboxed, "%copilot logout")
    out = _out(sandboxed, "%%copilot\nhello", ok=False)
    assert out.strip().endswith("run %copilot login")
    assert "no token stored" in _out(sandboxed, "%copilot status")


def test_login_can_be_interrupted(sandboxed: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    sandboxed.session.sandbox.auto_approve = False
    real_wait = Job.wait
    jobs: list[Job[Any]] = []

    def wait(self: Job[Any], timeout: float | None = None) -> bool:
        if self not in jobs:
            jobs.append(self)
        if len(jobs) == 2:  # the second job is complete_device_login: Ctrl-C while it polls
            raise KeyboardInterrupt
        return real_wait(self, timeout)

    monkeypatch.setattr(Job, "wait", wait)
    result, captured = sandboxed.run("%copilot login --user carol")
    monkeypatch.setattr(Job, "wait", real_wait)
    assert isinstance(result.error_in_exec, CopilotInterrupted)
    assert "KeyboardInterrupt: login cancelled; nothing was saved" in plain(captured.stdout)
    assert jobs[1].done()  # cancelled on its loop before the cell returned
    assert "carol" not in _out(sandboxed, "%copilot status")
    assert "signed out" in _out(sandboxed, "%copilot logout")


def test_log_config_memory_reset_help(sandboxed: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _out(sandboxed, "%%copilot\none")
    _out(sandboxed, "%%copilot --user bob\ntwo", ok=False)  # no token for bob: still logged
    log = _out(sandboxed, "%copilot log -n 3")
    assert len(log.strip().splitlines()) == 3
    assert "copilot_auth_failed user=bob" in log
    assert _out(sandboxed, "%copilot log -n 0").strip() == "no events yet in this kernel"
    config = _out(sandboxed, "%copilot config")
    assert "copilot_endpoint = http://127.0.0.1:" in config
    assert "client_secret    = (not set)" in config
    assert "(sandbox:" in config
    memory = _out(sandboxed, "%copilot memory --turns 5")
    assert "keeping at most 5 turns per user" in memory
    assert "default: 1 turns" in memory
    assert "--turns must be 0 or more" in _out(sandboxed, "%copilot memory --turns -1", ok=False)
    assert "(1 turns forgotten)" in _out(sandboxed, "%copilot reset")
    assert "no conversation yet" in _out(sandboxed, "%copilot memory")
    assert "every user (0 turns forgotten)" in _out(sandboxed, "%copilot reset --all")
    assert "conversation reset for 'bob'" in _out(sandboxed, "%copilot reset --user bob")
    overview = _out(sandboxed, "%copilot help")
    assert all(name in overview for name in ("status", "login", "sandbox", "memory"))
    assert "  %copilot login [--user USER]" in _out(sandboxed, "%copilot login --help")
    assert "  %copilot log [-n N]" in _out(sandboxed, "%copilot help log")
    assert "no subcommand 'bogus'" in _out(sandboxed, "%copilot help bogus", ok=False)
    assert "%copilot SUBCOMMAND" in _out(sandboxed, "%copilot")
    _result, captured = sandboxed.run("%copilot bogus")
    assert "UsageError: unknown subcommand 'bogus'" in plain(captured.stdout + captured.stderr)


def test_config_masks_secrets(live: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 43 + "="
    monkeypatch.setenv("ARC_SAGA_TOKEN_ENCRYPTION_KEY", key)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "super-secret-value-123")
    out = _out(live, "%copilot config")
    assert key not in out
    assert "super-secret-value-123" not in out
    assert "client_secret    = su****23" in out
    status = _out(live, "%copilot status")
    assert "endpoint: not set (ARC_SAGA_COPILOT_ENDPOINT)" in status
    assert "no token stored; run %copilot login" in status
    assert "last request: none yet" in status


def test_events_reach_the_journal(sandboxed: Harness, isolated_env: Path) -> None:
    _out(sandboxed, "%%copilot\njournal me")
    journal = sandboxed.session._journal
    assert journal is not None
    journal.flush()
    with EventJournal.open_reader(isolated_env / "journal.db") as reader:
        names = [row.event.event for row in reader.read_last(50)]
    assert "copilot_stream_complete" in names


def test_unconfigured_login_names_the_setting(live: Harness) -> None:
    out = _out(live, "%copilot login", ok=False)
    assert out.startswith("CopilotError: configuration: AZURE_TENANT_ID is not set")
    out = _out(live, "%copilot logout")
    assert "no token was stored for 'default'" in out


def test_errors_without_a_one_liner_keep_their_traceback(live: Harness) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("bug in a subcommand")

    from saga_magic.magic import commands

    original = commands.COMMANDS["status"]
    commands.COMMANDS["status"] = broken
    try:
        result, captured = live.run("%copilot status")
    finally:
        commands.COMMANDS["status"] = original
    assert isinstance(result.error_in_exec, RuntimeError)
    assert "Traceback" in plain(captured.stdout)


def test_generic_interrupt_of_a_subcommand(live: Harness) -> None:
    def slow(*_: object) -> None:
        raise KeyboardInterrupt

    from saga_magic.magic import commands

    original = commands.COMMANDS["status"]
    commands.COMMANDS["status"] = slow
    try:
        result, captured = live.run("%copilot status")
    finally:
        commands.COMMANDS["status"] = original
    assert isinstance(result.error_in_exec, CopilotInterrupted)
    assert "KeyboardInterrupt: %copilot status interrupted" in plain(captured.stdout)
    assert not isinstance(result.error_in_exec, CopilotError)
