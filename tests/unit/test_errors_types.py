"""The error tree and the value types."""

from __future__ import annotations

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
from saga_magic.core.types import (
    AIProvider,
    AIResult,
    AITask,
    ChatMessage,
    TokenInfo,
    TokenStatus,
    TokenUsage,
)


@pytest.mark.parametrize(
    ("child", "parents"),
    [
        (AuthenticationError, (ArcSagaException,)),
        (PermissionDeniedError, (AuthenticationError,)),
        (ConfigurationError, (ArcSagaException,)),
        (InputValidationError, (ArcSagaException, ValueError)),
        (TokenStorageError, (ArcSagaException,)),
        (TokenPersistenceError, (AuthenticationError, TokenStorageError)),
        (TransientError, (ArcSagaException,)),
        (RateLimitError, (TransientError,)),
        (RequestTimeoutError, (TransientError, TimeoutError)),
    ],
)
def test_tree(child: type[Exception], parents: tuple[type[Exception], ...]) -> None:
    for parent in parents:
        assert issubclass(child, parent)


def test_context_and_str() -> None:
    error = RateLimitError(
        "rate limited",
        retry_after=7.0,
        status=429,
        code="429",
        error_codes=(50196, 90055),
        request_id="req-1",
        correlation_id="corr-1",
        attempts=6,
        hint="try again in 7 s",
    )
    assert error.context() == {
        "status": 429,
        "code": "429",
        "error_codes": [50196, 90055],
        "request_id": "req-1",
        "correlation_id": "corr-1",
        "attempts": 6,
        "retry_after": 7.0,
    }
    text = str(error)
    assert text.startswith("rate limited (status=429, code=429, request_id=req-1")
    assert "AADSTS50196,90055" in text
    assert text.endswith("-> try again in 7 s")
    assert error.args == ("rate limited",)


def test_plain_error_has_no_suffix() -> None:
    error = ConfigurationError("AZURE_TENANT_ID is not set")
    assert str(error) == "AZURE_TENANT_ID is not set"
    assert error.context() == {}


def test_timeout_catchable_both_ways() -> None:
    with pytest.raises(TimeoutError):
        raise RequestTimeoutError("timed out", status=504)
    with pytest.raises(TransientError) as caught:
        raise RequestTimeoutError("timed out", partial_text="abc")
    assert caught.value.partial_text == "abc"
    assert caught.value.retry_after is None


def test_input_validation_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        raise InputValidationError("prompt too long", status=400, code="context_length_exceeded")


def test_task_defaults() -> None:
    task = AITask("hello", system_prompt="be brief", history=(ChatMessage("user", "hi"),))
    other = AITask("hello")
    assert task.task_id != other.task_id
    assert len(task.task_id) == 32
    assert (other.max_tokens, other.temperature, other.history) == (None, None, ())
    with pytest.raises(TypeError):
        AITask("x", "positional system prompt")  # type: ignore[misc]


def test_result_and_provider() -> None:
    result = AIResult(
        response_text="hi",
        finish_reason="stop",
        usage=TokenUsage(1, 2, 3),
        provider=AIProvider.COPILOT_CHAT,
        task_id="t",
        latency_ms=1.5,
    )
    assert AIProvider.COPILOT_CHAT == "copilot_chat"
    assert result.attempts == 1
    assert result.usage.total_tokens == 3
    assert result.usage.reasoning_tokens is None


@pytest.mark.parametrize(
    ("expires_at", "relogin", "status"),
    [
        (None, False, TokenStatus.EXPIRED),
        (999.0, False, TokenStatus.EXPIRED),
        (1000.0, False, TokenStatus.EXPIRED),
        (1200.0, False, TokenStatus.EXPIRING),
        (1301.0, False, TokenStatus.VALID),
        (5000.0, True, TokenStatus.RELOGIN),
    ],
)
def test_token_status(expires_at: float | None, relogin: bool, status: TokenStatus) -> None:
    info = TokenInfo("ada", expires_at, 1.0, 2.0, ("s",), relogin_required=relogin)
    assert info.status(now=1000.0) is status


def test_token_status_uses_wall_clock_by_default() -> None:
    assert TokenInfo("ada", 1.0, 0.0, 0.0).status() is TokenStatus.EXPIRED
