"""Pilot tests of the actions: refresh, log in (modal, cancel), log out, prompt, palette, keys."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from textual.command import CommandPalette
from textual.widgets import Footer, HelpPanel, Input, Static
from tui_helpers import Clock, FakeServices, retry_event, seed_tokens, wait_for

from saga_magic.core.config import Settings
from saga_magic.core.errors import AuthenticationError, ConfigurationError
from saga_magic.core.events import log_with_context
from saga_tui.app import SagaApp, describe_error
from saga_tui.commands import SagaCommands, palette_commands
from saga_tui.messages import EventsBatch, LogEntry
from saga_tui.widgets.answer_panel import AnswerPanel
from saga_tui.widgets.confirm_screen import ConfirmScreen
from saga_tui.widgets.event_detail import EventDetailScreen
from saga_tui.widgets.event_log import EventLog
from saga_tui.widgets.login_screen import LoginScreen
from saga_tui.widgets.prompt_bar import PromptBar
from saga_tui.widgets.retries_panel import RetriesPanel
from saga_tui.widgets.tokens_panel import TokensPanel

MakeApp = Callable[..., SagaApp]


def messages(app: SagaApp) -> list[str]:
    return [notification.message for notification in app._notifications]


async def test_refresh_uses_the_configured_user(make_app: MakeApp, services: FakeServices) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: "Token of alice refreshed" in messages(app))
        assert services.calls == [("refresh", "alice")]
        app.action_refresh_token("bob")
        await wait_for(pilot, lambda: ("refresh", "bob") in services.calls)


async def test_worker_errors_become_notifications(
    make_app: MakeApp, services: FakeServices
) -> None:
    services.fail["refresh"] = AuthenticationError("refresh token revoked", hint="log in again")
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications))
        [error] = [n for n in app._notifications if n.severity == "error"]
        assert error.title == "refresh token failed"
        assert "refresh token revoked" in error.message
        assert "log in again" in error.message
        assert app.is_running


def test_describe_error() -> None:
    assert describe_error(None) == "unknown error"
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    text = describe_error(ConfigurationError("AZURE_TENANT_ID is not set", hint="set it"))
    assert text == "AZURE_TENANT_ID is not set\n→ set it"
    revoked = AuthenticationError(
        "refresh refused",
        status=400,
        code="invalid_grant",
        request_id="r-1",
        hint="run %copilot login to sign in again",
    )
    assert describe_error(revoked) == (
        "refresh refused [400 invalid_grant]\n→ press l (log in) to sign in again"
    )
    missing = ConfigurationError(
        "AZURE_TENANT_ID is not set",
        hint="set AZURE_TENANT_ID, or run %copilot sandbox to try the local emulator",
    )
    assert describe_error(missing).endswith("or run saga-tui --sandbox to try the local emulator")
    stuck = ConfigurationError("bad key", hint="delete it (%copilot logout) and sign in again")
    assert describe_error(stuck).endswith("delete it (press o (log out)) and sign in again")


async def test_login_shows_the_code_and_completes(
    make_app: MakeApp, services: FakeServices, clock: Clock
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        screen = app.screen
        assert isinstance(screen, LoginScreen)
        assert str(screen.query_one("#login-code").render()) == "ABCD-EFGH"
        assert "microsoft.com/devicelogin" in str(screen.query_one("#login-link").render())
        await wait_for(pilot, lambda: screen.status == "authorization pending")
        status = str(screen.query_one("#login-status").render())
        assert status == "authorization pending · code expires in 15m 00s"
        await pilot.press("c")
        assert app.clipboard == "ABCD-EFGH"
        await pilot.click("#login-copy")
        clock.advance(901)
        screen.tick()
        assert str(screen.query_one("#login-status").render()).endswith("code expired")
        services.login_gate.set()
        await wait_for(pilot, lambda: not isinstance(app.screen, LoginScreen))
        await wait_for(pilot, lambda: any("alice signed in" in m for m in messages(app)))
        assert ("complete_login", "alice") in services.calls


async def test_login_can_be_cancelled(make_app: MakeApp, services: FakeServices) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        app.action_login("bob")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: "Login cancelled" in messages(app))
        assert not isinstance(app.screen, LoginScreen)
        app.action_login("bob")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        await pilot.pause()  # laid out: the click lands on the button
        assert app.screen.query(Footer)
        await pilot.click("#login-cancel")
        await wait_for(pilot, lambda: messages(app).count("Login cancelled") == 2)


async def test_login_failure_closes_the_modal(make_app: MakeApp, services: FakeServices) -> None:
    services.fail["complete_login"] = AuthenticationError("the user declined", code="declined")
    services.login_gate.set()
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("l")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications))
        await wait_for(pilot, lambda: not isinstance(app.screen, LoginScreen))
        assert any("the user declined" in m for m in messages(app))


async def test_logout_asks_first(
    make_app: MakeApp, services: FakeServices, settings: Settings, clock: Clock
) -> None:
    await seed_tokens(settings, clock, {"alice": 3600, "bob": 3600})
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.query_one(TokensPanel).row_count == 2)
        await pilot.press("o")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.query(Footer)
        assert app.focused is app.screen.query_one("#confirm-no")  # enter is the safe answer
        await pilot.press("enter")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("o")
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("o", "y")
        await wait_for(pilot, lambda: "alice logged out" in messages(app))
        app.action_logout("nobody")  # no stored token: nothing to confirm
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "nobody has no stored token: nothing to log out" in messages(app)
        app.actions.logout("nobody")  # the store changed meanwhile: said all the same
        await wait_for(
            pilot, lambda: "nobody had no stored token: nothing to log out" in messages(app)
        )
        app.action_logout("bob")
        await pilot.pause()
        assert "deleted from" in str(app.screen.query_one(".dialog-title", Static).render())
        await pilot.click("#confirm-no")
        await pilot.pause()
        assert services.calls == [("logout", "alice"), ("logout", "nobody")]


async def test_prompt_streams_the_answer_and_shows_its_retries(
    make_app: MakeApp, services: FakeServices, clock: Clock
) -> None:
    logger = logging.getLogger("saga.engine.test")

    async def retries() -> None:
        log_with_context(
            logger,
            logging.WARNING,
            "copilot_retry",
            user_id="alice",
            op_id="chat-1",
            attempt=1,
            max_attempts=6,
            wait_s=2.0,
            next_attempt_at=clock() + 2,
            reason="429",
        )

    services.before_answer = retries
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        panel = app.query_one(AnswerPanel)
        assert not panel.display
        await pilot.press("p")
        assert isinstance(app.focused, PromptBar)
        await pilot.press("enter")  # blank: nothing sent
        await pilot.press(*"hi there", "enter")
        await wait_for(
            pilot, lambda: panel.border_subtitle == "stop · 1.2 s · 2 attempts · 7 tokens"
        )
        assert panel.display
        assert panel.text == "Hello, world"
        assert "hi there" in str(panel.query_one("#answer-text").render())
        assert ("ask", "hi there") in services.calls
        assert app.query_one(PromptBar).value == ""
        await wait_for(pilot, lambda: "chat-1" in app.query_one(RetriesPanel).rows)
        panel.focus()  # a long answer scrolls with the keys
        await pilot.pause()
        assert app.focused is panel
        await pilot.press("escape")
        assert isinstance(app.focused, EventLog)
        await pilot.press("ctrl+l")
        assert not panel.display


async def test_a_superseded_prompt_drops_its_retry_rows(
    make_app: MakeApp, services: FakeServices, clock: Clock
) -> None:
    logger = logging.getLogger("saga.engine.test")
    stuck = asyncio.Event()

    async def retry_then_hang() -> None:
        services.before_answer = None  # the next prompt answers at once
        log_with_context(
            logger,
            logging.WARNING,
            "copilot_retry",
            user_id="alice",
            op_id="chat-1",
            attempt=1,
            max_attempts=6,
            wait_s=30.0,
            next_attempt_at=clock() + 30,
            reason="429",
        )
        await stuck.wait()  # the engine waits out its back-off; the user asks again meanwhile

    services.before_answer = retry_then_hang
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        retries = app.query_one(RetriesPanel)
        first = app.actions.ask("first")
        await wait_for(pilot, lambda: "chat-1" in retries.rows)
        app.actions.ask("second")  # supersedes the first: no event will end chat-1
        await wait_for(pilot, lambda: first.is_cancelled and "chat-1" not in retries.rows)
        await wait_for(pilot, lambda: app.query_one(AnswerPanel).text == "Hello, world")


async def test_token_actions_are_exclusive_per_user(
    make_app: MakeApp, services: FakeServices
) -> None:
    gate = asyncio.Event()
    services.before_refresh = gate.wait
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        alice = app.actions.refresh("alice")
        bob = app.actions.refresh("bob")
        again = app.actions.refresh("alice")  # supersedes the first refresh of alice only
        await wait_for(pilot, lambda: alice.is_cancelled)
        assert not bob.is_cancelled
        gate.set()
        await wait_for(pilot, lambda: again.is_finished and bob.is_finished)
        assert messages(app).count("Token of alice refreshed") == 1
        assert "Token of bob refreshed" in messages(app)


async def test_prompt_failure_is_shown_in_the_answer(
    make_app: MakeApp, services: FakeServices
) -> None:
    services.fail["ask"] = ConfigurationError("ARC_SAGA_COPILOT_ENDPOINT is not set")
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(PromptBar.Send("hello"))
        panel = app.query_one(AnswerPanel)
        await wait_for(pilot, lambda: panel.has_class("-error"))
        assert panel.border_subtitle == "failed"
        assert "ARC_SAGA_COPILOT_ENDPOINT is not set" in panel.text
        panel.append("partial")
        panel.fail("later error")
        assert panel.text.endswith("later error")


async def test_prompt_without_a_result(make_app: MakeApp, services: FakeServices) -> None:
    services.answer = ()
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        services.last_result = lambda: None  # type: ignore[method-assign]
        app.post_message(PromptBar.Send("hello"))
        panel = app.query_one(AnswerPanel)
        await wait_for(pilot, lambda: panel.border_subtitle == "done")


async def test_command_palette_offers_actions_and_filters(
    make_app: MakeApp, services: FakeServices
) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(EventsBatch((LogEntry(None, retry_event(user="bob")),)))
        await pilot.pause()
        names = [command.name for command in palette_commands(app)]
        assert "Refresh token now (alice)" in names
        assert "Log out (bob)" in names
        assert "Filter: user = bob" in names
        assert "Filter: event = copilot_retry" in names
        assert "Filter: level >= ERROR" in names
        provider = SagaCommands(app.screen)
        hits = [hit async for hit in provider.search("level >= ERROR")]
        best = max(hits, key=lambda hit: hit.score)
        assert best.text == "Filter: level >= ERROR"
        best.command()
        await wait_for(pilot, lambda: app.query_one(EventLog).event_filter.level == "ERROR")
        discovered = [hit.text async for hit in provider.discover()]
        assert discovered[0] == "Refresh token now (alice)"
        assert {"Clear filters", "Filter by text…", "Show event details", "Show keys"} <= set(
            discovered
        )
        assert "Copy event as JSON" in discovered
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"bob)")
        await pilot.pause(0.3)
        await pilot.press("escape")
        assert not isinstance(app.screen, CommandPalette)
        [refresh_bob] = [c for c in palette_commands(app) if c.name == "Refresh token now (bob)"]
        refresh_bob.run()
        await wait_for(pilot, lambda: ("refresh", "bob") in services.calls)
        by_name = {command.name: command for command in palette_commands(app)}
        by_name["Clear filters"].run()
        await pilot.pause()
        by_name["Copy event as JSON"].run()
        assert json.loads(app.clipboard)["event"] == "copilot_retry"
        by_name["Show event details"].run()
        await pilot.pause()
        assert isinstance(app.screen, EventDetailScreen)
        await pilot.press("escape")
        by_name["Show keys"].run()
        await pilot.pause()
        assert app.screen.query(HelpPanel)
        by_name["Filter by text…"].run()
        await pilot.pause()
        assert app.focused is app.query_one("#filter-text")
        for name in ("Follow the tail", "Clear filters", "Ask Copilot"):
            by_name[name].run()
        await pilot.pause()
        assert app.query_one(EventLog).event_filter.is_empty
        assert isinstance(app.focused, PromptBar)


async def test_focus_keys_and_key_panel(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        assert isinstance(app.focused, EventLog)
        await pilot.press("t")
        assert isinstance(app.focused, TokensPanel)
        await pilot.press("e")
        assert isinstance(app.focused, EventLog)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press("tab")
        await pilot.press("escape")
        await pilot.press("f1")
        assert app.screen.query(HelpPanel)
        await pilot.press("f1")
        await pilot.pause()
        assert not app.screen.query(HelpPanel)
        await pilot.press("ctrl+q")
    assert not app.is_running


async def test_services_are_closed_on_exit(make_app: MakeApp, services: FakeServices) -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: services.calls != [])
    assert services.closed
