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
from saga_magic.magic.failure import CopilotError, CopilotInterrupted, describe_error
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
        (RateLimitError("quota", retry_after=90.0), f"rate limited; retry after 90 s (at {AT})"),
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
