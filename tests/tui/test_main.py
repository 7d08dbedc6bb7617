"""The command line, the real core services, and the ``--sandbox`` demo against the emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import Clock, seed_tokens, wait_for

from saga_magic.core.config import Settings
from saga_magic.core.errors import ConfigurationError
from saga_magic.core.events import subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import TokenStatus
from saga_magic.sandbox import Sandbox
from saga_tui import SagaApp, demo
from saga_tui import __main__ as cli
from saga_tui.services import CoreServices
from saga_tui.widgets.answer_panel import AnswerPanel
from saga_tui.widgets.retries_panel import RetriesPanel
from saga_tui.widgets.tokens_panel import TokensPanel


def test_overrides_apply_on_top_of_the_environment(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(
        ["--journal", str(tmp_path / "j.db"), "--store", str(tmp_path / "t.db"), "--user", "bob"]
    )
    settings = cli.settings_from_args(args)
    assert settings.journal_path == tmp_path / "j.db"
    assert settings.token_store_path == tmp_path / "t.db"
    assert settings.user == "bob"
    base = Settings.from_env()
    assert cli.settings_from_args(cli.build_parser().parse_args([]), base) is base


def test_main_runs_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[SagaApp] = []
    monkeypatch.setattr(SagaApp, "run", lambda self, *a, **k: ran.append(self))
    assert cli.main(["--user", "carol"]) == 0
    [app] = ran
    assert app.settings.user == "carol"
    assert app.source_kind == "journal"
    assert app.exit_on_signals


def test_main_reports_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARC_SAGA_COPILOT_ENDPOINT", "http://example.com/chat")
    assert cli.main([]) == 2
    assert "plain http://" in capsys.readouterr().err


def test_main_sandbox_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(settings: Settings, **kwargs: Any) -> int:
        seen.update(kwargs, user=settings.user)
        return 7

    monkeypatch.setattr(demo, "run_sandbox", fake_run)
    assert cli.main(["--sandbox", "--user", "dana"]) == 7
    assert seen == {"user": "dana"}


def test_main_sandbox_refuses_real_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--sandbox", "--store", str(tmp_path / "t.db")]) == 2
    assert "cannot use --journal or --store" in capsys.readouterr().err
    assert cli.main(["--sandbox", "--journal", "~/j.db"]) == 2


def test_paths_expand_the_home_folder() -> None:
    args = cli.build_parser().parse_args(["--journal", "~/j.db", "--store", "~/t.db"])
    settings = cli.settings_from_args(args)
    assert settings.journal_path == Path.home() / "j.db"
    assert settings.token_store_path == Path.home() / "t.db"


def test_module_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "saga_tui", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "--sandbox" in done.stdout


def test_run_sandbox_points_the_app_at_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[SagaApp] = []

    def run(self: SagaApp, *args: Any, **kwargs: Any) -> None:
        assert self.settings.home.is_dir()  # the throwaway home exists while the app runs
        ran.append(self)

    monkeypatch.setattr(SagaApp, "run", run)
    real = Settings.from_env().with_overrides(user="erin")
    assert demo.run_sandbox(real, demo=False) == 0
    [app] = ran
    assert app.source_kind == "bus"
    assert app.settings.authority_host.startswith("http://127.0.0.1:")
    assert app.settings.copilot_endpoint is not None
    assert app.settings.user == "erin"
    assert app.settings.journal_path.name == "journal.db"
    assert app.title == "ARC SAGA · sandbox"
    assert app.actions.export_home == real.home  # exports outlive the throwaway home
    assert app.exit_on_signals
    assert not app.settings.home.exists()  # removed on exit


async def test_the_app_exits_cleanly_on_sigterm(make_app: Callable[..., SagaApp]) -> None:
    app = make_app(exit_on_signals=True)
    async with app.run_test(size=(80, 24)) as pilot:
        loop = asyncio.get_running_loop()
        assert signal.SIGTERM in loop._signal_handlers  # type: ignore[attr-defined]
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_for(pilot, lambda: not app.is_running)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_core_services_log_out_without_entra(settings: Settings, clock: Clock) -> None:
    await seed_tokens(settings, clock, {"alice": 3600})
    services = CoreServices(settings)  # no tenant, no client id: logging out needs neither
    seen: list[str] = []
    unsubscribe = subscribe(lambda event: seen.append(event.event))
    try:
        assert await services.logout("nobody") is False
        assert await services.logout("alice") is True
        assert await services.logout("alice") is False
    finally:
        unsubscribe()
    assert seen == ["logout"]
    assert SQLiteEncryptedTokenStore.read_token_infos(settings.token_store_path) == []
    await services.aclose()


async def test_core_services_need_configuration(settings: Settings) -> None:
    services = CoreServices(settings)
    with pytest.raises(ConfigurationError, match="AZURE_TENANT_ID"):
        await services.refresh("alice")
    configured = settings.with_overrides(tenant_id="t", client_id="c")
    services = CoreServices(configured)
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_ENDPOINT"):
        async for _ in services.ask("hi", user_id="alice"):
            pass  # pragma: no cover - never reached
    assert services.last_result() is None
    await services.aclose()


async def fast(_seconds: float) -> None:
    await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_sandbox_demo_moves_every_panel(settings: Settings, tmp_path: Path) -> None:
    sandbox = Sandbox(auto_approve=True, device_poll_interval=1).start()
    try:
        effective = demo.sandbox_settings(settings, sandbox, tmp_path / "home")
        script = demo.DemoScript(
            sandbox,
            effective,
            pause=fast,
            storm=("500_json", "ok"),
            token_faults=("token_429:1", "ok"),
        )
        app = SagaApp(effective, source="bus", demo=script.run, title_suffix="sandbox")
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: "revoked" in script.steps, timeout=60)
            tokens = app.query_one(TokensPanel)
            await wait_for(pilot, lambda: tokens.status_of("carol") is TokenStatus.RELOGIN)
            assert tokens.row_count == 3
            assert str(tokens.get_cell("bob", "status")) == "valid"
            tracker = app.query_one(RetriesPanel).tracker

            def ended() -> set[tuple[str, str | None]]:
                return {(state.kind, state.outcome) for state in tracker.states}

            await wait_for(pilot, lambda: ("token refresh", "succeeded") in ended())
            assert ("chat request", "succeeded") in ended()
            answer = app.query_one(AnswerPanel)
            assert answer.text == "Tell me about retries."
            assert "2 attempts" in str(answer.border_subtitle)
            app.actions.logout("bob")  # the auth manager is running: it logs out
            await wait_for(pilot, lambda: tokens.row_count == 2)
            assert sandbox.post_count("devicecode") == 1
    finally:
        sandbox.stop()
