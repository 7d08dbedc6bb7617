"""One-line failures for every core error, and the bounded conversation memory."""

from __future__ import annotations

import time

import pytest

from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TokenPersistenceError,
    TokenStorageError,
    TransientError,
)
from saga_magic.magic.failure import (
    CopilotError,
    CopilotInterrupted,
    describe_error,
    failure,
    login_command,
)
from saga_magic.magic.memory import ConversationMemory

NOW = 1_700_000_000.0
AT = time.strftime("%H:%M:%S", time.localtime(NOW + 90))


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            AuthenticationError("refresh token revoked"),
            "re-login needed for user 'bob' (refresh token revoked): run %copilot login --user bob",
        ),
        (
            PermissionDeniedError("no role", hint="assign the role"),
            "permission denied for user 'bob': no role -> assign the role",
        ),
        (
            TokenPersistenceError("could not save", hint="free disk space"),
            "token store: could not save -> free disk space",
        ),
        (TokenStorageError("wrong key"), "token store: wrong key"),
        (
            ConfigurationError("DeploymentNotFound: gpt-x"),
            "configuration: DeploymentNotFound: gpt-x",
        ),
        (
            InputValidationError("filtered", code="content_filter"),
            "request rejected: filtered -> rephrase the prompt (the content filter blocked it)",
        ),
        (
            InputValidationError("413 too large"),
            "request rejected: 413 too large -> change the prompt or the options and run the cell "
            "again",
        ),
        (
            InputValidationError("too long", hint="shorten it"),
            "request rejected: too long -> shorten it",
        ),
        (RateLimitError("quota", retry_after=90.0), f"rate limited; retry after 2 min (at {AT})"),
        (
            RateLimitError("slow", attempts=6),
            "rate limited after 6 attempts; wait a minute and run the cell again",
        ),
        (
            RequestTimeoutError("no answer in 60 s", attempts=6),
            "timed out after 6 attempts: no answer in 60 s -> run the cell again, or ask for less "
            "(--max-tokens)",
        ),
        (
            TransientError("502 bad gateway", attempts=1),
            "request failed: 502 bad gateway -> run the cell again later",
        ),
        (ArcSagaException("odd", hint="do x"), "odd -> do x"),
    ],
)
def test_describe_error(error: Exception, line: str) -> None:
    assert describe_error(error, user="bob", default_user="default", now=NOW) == line


def test_describe_error_defaults_and_foreign_errors() -> None:
    assert describe_error(ValueError("x"), user="u") is None
    line = describe_error(RateLimitError("q", retry_after=1.0), user="u")
    assert line is not None
    assert line.startswith("rate limited; retry after 1 s (at ")


def test_copilot_error_renders_one_line() -> None:
    error = CopilotError("first line\nsecond   line " + "x" * 300)
    assert "\n" not in error.line
    assert len(error.line) == 240
    assert error.line.endswith("\N{HORIZONTAL ELLIPSIS}")
    assert error._render_traceback_() == [f"CopilotError: {error.line}"]
    assert str(error) == error.line
    interrupted = CopilotInterrupted()
    assert isinstance(interrupted, KeyboardInterrupt)
    assert interrupted._render_traceback_() == [
        "KeyboardInterrupt: interrupted: the request was cancelled; the kernel is ready"
    ]


def test_memory_is_bounded_per_user() -> None:
    memory = ConversationMemory(max_turns=2)
    for index in range(3):
        memory.add("ann", f"q{index}", f"a{index}")
    memory.add("bob", "hello", "hi")
    assert [m.content for m in memory.history("ann")] == ["q1", "a1", "q2", "a2"]
    assert [m.role for m in memory.history("ann")] == ["user", "assistant"] * 2
    assert memory.turns("ann") == 2
    assert memory.history("nobody") == ()
    assert memory.users() == ["ann", "bob"]
    memory.max_turns = 1
    assert [m.content for m in memory.history("ann")] == ["q2", "a2"]
    assert memory.reset("ann") == 1
    assert memory.reset("ann") == 0
    assert memory.reset() == 1
    assert memory.users() == []
    with pytest.raises(ValueError, match="max_turns"):
        memory.max_turns = -1
    memory.max_turns = 0
    memory.add("ann", "q", "a")
    assert memory.history("ann") == ()


def test_long_messages_are_shortened_never_the_hint() -> None:
    long = "the server said: " + "blah " * 200
    line = describe_error(AuthenticationError(long), user="bob", default_user="default")
    assert line is not None
    assert line.endswith("\N{HORIZONTAL ELLIPSIS}): run %copilot login --user bob")
    assert len(line) <= 240
    hint = "set ARC_SAGA_COPILOT_ENDPOINT to https://<resource>.openai.azure.com/openai/" + "x" * 60
    line = describe_error(ConfigurationError(long, hint=hint), user="u")
    assert line is not None
    assert line.endswith(f" -> {hint}")
    assert CopilotError(line).line == line  # nothing left to cut
    error = CopilotError("m" * 300 + " -> do this exact thing")
    assert error.line.endswith("\N{HORIZONTAL ELLIPSIS} -> do this exact thing")
    assert len(error.line) == 240
    huge_hint = CopilotError("short -> " + "h" * 300)
    assert huge_hint.line.endswith("h" * 300)  # a hint longer than the line is kept whole


def test_daily_quota_says_hours_and_the_date() -> None:
    now = 1_700_000_000.0
    line = describe_error(RateLimitError("quota", retry_after=86_400.0), user="u", now=now)
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + 86_400))
    assert line == f"rate limited; retry after 24 h (at {at})"
    soon = describe_error(RateLimitError("q", retry_after=42.2), user="u", now=now)
    clock = time.strftime("%H:%M:%S", time.localtime(now + 42.2))
    assert soon == f"rate limited; retry after 43 s (at {clock})"


def test_context_length_hint_is_the_magics_own() -> None:
    error = InputValidationError("too long", code="context_length_exceeded", hint="reduce input")
    assert describe_error(error, user="u") == (
        "request rejected: too long -> shorten the prompt, or start over with --new "
        "(or %copilot reset)"
    )


def test_a_missing_deployment_from_model_is_named() -> None:
    error = ConfigurationError("The chat endpoint was not found (404)", status=404, hint="check X")
    line = describe_error(error, user="u", deployment="gpt-x")
    assert line == (
        "configuration: deployment 'gpt-x' (from --model) was not found: The chat endpoint was "
        "not found (404) -> check the --model name (a deployment of this resource), or drop --model"
    )
    assert describe_error(error, user="u") == (
        "configuration: The chat endpoint was not found (404) -> check X"
    )
    unset = ConfigurationError("AZURE_TENANT_ID is not set")
    assert describe_error(unset, user="u", deployment="gpt-x") == (
        "configuration: AZURE_TENANT_ID is not set"
    )


def test_login_command_and_failure_helper() -> None:
    assert login_command("default", "default") == "%copilot login"
    assert login_command("bob", "default") == "%copilot login --user bob"
    wrapped = failure(AuthenticationError("expired"), user="bob")
    assert wrapped is not None
    assert wrapped.line.endswith("run %copilot login --user bob")
    assert failure(ValueError("x"), user="bob") is None


def test_memory_has_a_character_budget() -> None:
    memory = ConversationMemory(max_turns=10, max_chars=20)
    memory.add("ann", "q1", "a" * 8)  # 10
    memory.add("ann", "q2", "b" * 8)  # 20
    assert memory.turns("ann") == 2
    memory.add("ann", "q3", "c" * 3)  # 25 > 20: the oldest goes
    assert [m.content for m in memory.history("ann")] == ["q2", "b" * 8, "q3", "c" * 3]
    assert memory.chars("ann") == 15
    memory.add("ann", "q" * 30, "too big")  # a single turn over the budget is not kept
    assert memory.turns("ann") == 0
    memory.add("bob", "q", "a" * 9)
    memory.max_chars = 5  # lowering the budget trims every conversation
    assert memory.turns("bob") == 0
    assert memory.chars("nobody") == 0
    with pytest.raises(ValueError, match="max_chars"):
        memory.max_chars = -1
    assert ConversationMemory().max_chars == 100_000
