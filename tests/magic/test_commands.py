"""``%copilot`` subcommands and ``%%copilot`` end to end: real core, sandbox, loopback HTTP."""

from __future__ import annotations

import re
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
    assert captured.stderr == "note: inserted {city}\n"  # substitution is never silent
    status = _out(sandboxed, "%copilot status")
    assert "(sandbox)" in status
    assert "* default  valid" in status
    assert "expires in" in status
    assert "last request:" in status
    assert "1 attempt(s)" in status
    assert "conversation: 1 of 20 turns kept for 'default' (30 of 100000 characters)" in status


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
    assert out.startswith("CopilotError: unknown chat fault 'no_such_fault'")
    out = _out(live, "%copilot sandbox --script chat 429:retry_afte=1", ok=False)
    assert out.startswith("CopilotError: bad sandbox script: fault '429' has no parameter")
    assert out.strip().endswith("-> %copilot help sandbox lists the faults")
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
    config = _out(sandboxed, "%copilot config")
    assert "copilot_endpoint = http://127.0.0.1:" in config
    assert "client_secret    = (not set)" in config
    assert "(sandbox:" in config
    memory = _out(sandboxed, "%copilot memory --turns 5")
    assert "keeping at most 5 turns and 100000 characters per user" in memory
    assert "default: 1 turns, 6 characters" in memory
    assert "--turns must be 0 or more" in _out(sandboxed, "%copilot memory --turns -1", ok=False)
    assert "--chars must be 0 or more" in _out(sandboxed, "%copilot memory --chars -1", ok=False)
    assert "(1 turns forgotten)" in _out(sandboxed, "%copilot reset")
    _out(sandboxed, "%%copilot\nthree")
    assert "5 turns and 4 characters per user" in _out(sandboxed, "%copilot memory --chars 4")
    assert "no conversation yet" in _out(sandboxed, "%copilot memory --chars 100000")
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
    assert "client_secret    = set" in out  # never a character of it (not "su****23")
    assert "encryption_key   = set" in out
    status = _out(live, "%copilot status")
    assert "endpoint: not set (ARC_SAGA_COPILOT_ENDPOINT)" in status
    assert (
        "no token stored; set AZURE_TENANT_ID and AZURE_CLIENT_ID (then %copilot login), "
        "or try the local emulator with %copilot sandbox"
    ) in status
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


def test_model_names_the_deployment_of_an_azure_url(sandboxed: Harness) -> None:
    result, captured = sandboxed.run("%%copilot --model o4-mini\nwho answers?")
    assert result.success, captured.stdout
    sandbox = sandboxed.session.sandbox
    assert len(sandbox.requests("chat", deployment="o4-mini")) == 1
    assert sandbox.requests("chat", deployment="gpt-4o") == []
    assert sandboxed.shell.user_ns["_copilot"].response_text == "who answers?"
    out = _out(sandboxed, "%%copilot --model nope\nhi", ok=False).strip()
    assert out.startswith(
        "CopilotError: configuration: deployment 'nope' (from --model) was not found: "
    )
    assert out.endswith(
        "-> check the --model name (a deployment of this resource), or drop --model"
    )
    assert "\n" not in out
    assert "failed: configuration: deployment 'nope'" in _out(sandboxed, "%copilot status")
    assert "1 attempt(s)" not in _out(sandboxed, "%copilot status")


def test_a_failed_sandbox_start_leaves_nothing_behind(
    live: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_magic.sandbox.sandbox import Sandbox

    started: list[Sandbox] = []
    real_start = Sandbox.start

    def start(self: Sandbox) -> Sandbox:
        started.append(self)
        return real_start(self)

    def broken_issue(self: Sandbox, **_: object) -> dict[str, object]:
        raise RuntimeError("cannot issue")

    monkeypatch.setattr(Sandbox, "start", start)
    monkeypatch.setattr(Sandbox, "issue_tokens", broken_issue)
    result, _ = live.run("%copilot sandbox")
    assert isinstance(result.error_in_exec, RuntimeError)
    assert live.session.sandbox is None
    assert live.session.base_settings is None
    assert live.session.settings.copilot_endpoint is None  # the environment's settings are back
    assert len(started) == 1
    assert not started[0].running  # the half-started emulator was stopped
    monkeypatch.undo()
    assert "emulator running" in _out(live, "%copilot sandbox")  # and a retry works


def test_sandbox_ignores_a_broken_encryption_key_and_restarts_clean(
    live: Harness, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("ARC_SAGA_TOKEN_ENCRYPTION_KEY", "not-a-fernet-key")
    assert "signed in 'default'" in _out(live, "%copilot sandbox")
    assert live.session.settings.encryption_key not in (None, "not-a-fernet-key")
    _out(live, "%%copilot\nfirst")
    _out(live, "%copilot sandbox --stop")
    assert (isolated_env / "sandbox_tokens.db").exists()
    # another sandbox, another key: the old demo store is replaced, not unreadable
    assert "signed in 'default'" in _out(live, "%copilot sandbox")
    assert live.shell.run_cell("%%copilot\nsecond").success


def test_sandbox_stop_stops_the_emulator_even_if_closing_fails(
    sandboxed: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = sandboxed.session
    sandbox = session.sandbox
    _out(sandboxed, "%%copilot\nbuild the core objects")

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("close failed")

    monkeypatch.setattr(session, "reset_core", broken)
    result, _ = sandboxed.run("%copilot sandbox --stop")
    assert isinstance(result.error_in_exec, RuntimeError)
    assert not sandbox.running
    assert session.sandbox is None
    assert session.settings.copilot_endpoint is None
    monkeypatch.undo()


def test_unknown_faults_get_close_matches(sandboxed: Harness) -> None:
    out = _out(sandboxed, "%copilot sandbox --script chat 429_quot", ok=False).strip()
    assert out.startswith("CopilotError: unknown chat fault '429_quot'; did you mean 429_quota")
    assert out.endswith("-> %copilot help sandbox lists the faults")
    out = _out(sandboxed, "%copilot sandbox --script chat zzzzzz", ok=False).strip()
    assert out == (
        "CopilotError: unknown chat fault 'zzzzzz'; -> %copilot help sandbox lists the faults"
    )
    out = _out(sandboxed, "%copilot sandbox --script chaat ok", ok=False).strip()
    assert out == (
        "CopilotError: unknown sandbox endpoint 'chaat'; did you mean 'chat'? "
        "one of chat, devicecode, token"
    )
    out = _out(sandboxed, "%copilot sandbox --script bogus ok", ok=False).strip()
    assert out == "CopilotError: unknown sandbox endpoint 'bogus'; one of chat, devicecode, token"
    assert sandboxed.session.sandbox.pending("chat") == {}
    help_text = _out(sandboxed, "%copilot help sandbox")
    assert help_text.startswith("  %copilot sandbox [--script ITEM [ITEM ...]]")
    assert "::" not in help_text
    assert "  chat: 400_context, " in help_text
    assert "  token: " in help_text


def test_log_filters_formats_and_validates(sandboxed: Harness) -> None:
    _out(sandboxed, "%copilot sandbox --script chat 429:retry_after=1 ok")
    _out(sandboxed, "%%copilot\nretry me")
    retries = _out(sandboxed, "%copilot log -n 5 --event retry").strip().splitlines()
    assert len(retries) == 1
    line = retries[0]
    assert " WARNING copilot_retry user=default " in line
    assert "reason=429" in line
    assert re.search(r"next_attempt_at=\d\d:\d\d:\d\d", line)  # a local time, not a float
    assert "=None" not in line
    assert len(line) <= 160
    assert "no 'nothing_like_this' events yet" in _out(
        sandboxed, "%copilot log --event nothing_like_this"
    )
    for bad in ("0", "-1"):
        result, captured = sandboxed.run(f"%copilot log -n {bad}")
        assert not result.success
        assert f"UsageError: -n must be 1 or more, got {bad}" in plain(
            captured.stdout + captured.stderr
        )


def test_every_subcommand_but_help_starts_the_journal(live: Harness) -> None:
    from saga_magic.core import events

    _out(live, "%copilot help")
    assert events.get_journal() is None
    assert live.session._journal is None
    _out(live, "%copilot memory")
    assert events.get_journal() is live.session._journal is not None
    assert "installs the event journal" in _out(live, "%copilot help")
