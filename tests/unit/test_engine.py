"""CopilotReasoningEngine.reason(): the seed's Task 8 list, our departures, PROTOCOLS 2.7 rows."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from saga_magic.core import events
from saga_magic.core.config import Settings
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.protocols import IReasoningEngine
from saga_magic.core.types import AIProvider, AITask, ChatMessage, TokenUsage

DEPLOYMENTS = (
    "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
)
V1 = "https://res.openai.azure.com/openai/v1/chat/completions"
COMPAT = "http://127.0.0.1:9/v1/chat/completions"
TOKEN_STEM = "opaque0Canary0Access0Token0"


class FakeTokens:
    """A small ITokenProvider: numbered opaque tokens, optional failures."""

    def __init__(
        self,
        *,
        error: Exception | None = None,
        refresh_error: Exception | None = None,
    ) -> None:
        self.number = 1
        self.error = error
        self.refresh_error = refresh_error
        self.calls: list[str] = []
        self.rejected: list[str | None] = []
        self.op_ids: list[str | None] = []
        self.closed = False

    @property
    def current(self) -> str:
        return f"{TOKEN_STEM}{self.number:04d}"

    async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
        self.calls.append(f"get:{user_id}")
        self.op_ids.append(op_id)
        if self.error is not None:
            raise self.error
        return self.current

    async def force_refresh(
        self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
    ) -> str:
        self.calls.append(f"force:{user_id}")
        self.rejected.append(rejected_token)
        self.op_ids.append(op_id)
        if self.refresh_error is not None:
            raise self.refresh_error
        self.number += 1
        return self.current


class ClosableTokens(FakeTokens):
    async def close(self) -> None:
        self.closed = True


Reply = httpx.Response | Exception | Callable[[httpx.Request], Any]


class Script:
    """MockTransport handler answering from a list, recording requests."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        result = reply(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, httpx.Response)
        return result

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


def completion(
    text: str | None = "hello",
    *,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-11-20",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(200, json=body, headers=headers or {"apim-request-id": "req-ok"})


def error(
    status: int,
    payload: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if raw is not None:
        return httpx.Response(status, content=raw, headers=headers or {})
    return httpx.Response(status, json=payload or {}, headers=headers or {})


def api_error(code: str | None, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


@pytest.fixture
def captured() -> Iterator[list[events.Event]]:
    got: list[events.Event] = []
    unsubscribe = events.subscribe(got.append)
    yield got
    unsubscribe()


def names(got: list[events.Event]) -> list[str]:
    return [event.event for event in got]


def one(got: list[events.Event], name: str) -> events.Event:
    matches = [event for event in got if event.event == name]
    assert len(matches) == 1, names(got)
    return matches[0]


Make = Callable[..., tuple[CopilotReasoningEngine, Script, FakeTokens]]


@pytest.fixture
async def make(fake_clock: Any) -> AsyncIterator[Make]:
    made: list[tuple[CopilotReasoningEngine, httpx.AsyncClient]] = []

    def build(
        *replies: Reply,
        tokens: FakeTokens | None = None,
        endpoint: str = DEPLOYMENTS,
        **options: Any,
    ) -> tuple[CopilotReasoningEngine, Script, FakeTokens]:
        script = Script(list(replies))
        client = httpx.AsyncClient(transport=httpx.MockTransport(script))
        tokens = tokens or FakeTokens()
        options.setdefault("clock", fake_clock)
        options.setdefault("sleep", fake_clock.sleep)
        options.setdefault("jitter", lambda wait: 0.0)
        engine = CopilotReasoningEngine(tokens, endpoint=endpoint, http_client=client, **options)
        made.append((engine, client))
        return engine, script, tokens

    yield build
    for engine, client in made:
        await engine.close()
        await client.aclose()


# --------------------------------------------------------------------------- success


async def test_success(make: Make, captured: list[events.Event], fake_clock: Any) -> None:
    engine, script, tokens = make(
        completion(usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6})
    )
    task = AITask("What is 2+2?", max_tokens=50, temperature=0.3)
    result = await engine.reason(task)
    assert result.response_text == "hello"
    assert result.finish_reason == "stop"
    assert result.usage == TokenUsage(5, 1, 6)
    assert result.provider is AIProvider.COPILOT_CHAT
    assert result.task_id == task.task_id
    assert result.request_id == "req-ok"
    assert result.model == "gpt-4o-2024-11-20"
    assert result.attempts == 1
    assert result.latency_ms == 0.0
    (request,) = script.requests
    assert str(request.url) == DEPLOYMENTS
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {tokens.current}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    uuid.UUID(request.headers["x-ms-client-request-id"])
    assert script.bodies()[0] == {
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 50,
        "temperature": 0.3,
    }
    assert names(captured) == ["copilot_request_start", "copilot_request_complete"]
    start = captured[0]
    assert start.op_id == captured[1].op_id
    assert start.user_id == "default"
    assert start.context["prompt_chars"] == len(task.prompt)
    assert "What is 2+2?" not in json.dumps(start.to_dict())
    done = captured[1].context
    assert done["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,
        "reasoning_tokens": None,
    }
    assert (done["finish_reason"], done["request_id"], done["attempts"]) == ("stop", "req-ok", 1)
    assert "hello" not in json.dumps(captured[1].to_dict())


async def test_engine_satisfies_protocol(make: Make) -> None:
    engine, _, _ = make()
    assert isinstance(engine, IReasoningEngine)
    assert engine.user_id == "default"
    assert engine.endpoint.deployment == "gpt4o"


async def test_latency_counts_waits(make: Make) -> None:
    engine, _, _ = make(error(503), completion())
    result = await engine.reason(AITask("hi"))
    assert result.latency_ms == pytest.approx(1000.0)
    assert result.attempts == 2


async def test_usage_with_reasoning_tokens_and_missing_usage(make: Make) -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 80,
        "total_tokens": 90,
        "completion_tokens_details": {"reasoning_tokens": 64},
    }
    engine, _, _ = make(completion(usage=usage), completion(usage=None))
    first = await engine.reason(AITask("hi"))
    assert first.usage == TokenUsage(10, 80, 90, 64)
    second = await engine.reason(AITask("hi"))
    assert second.usage == TokenUsage(0, 0, 0)


async def test_system_prompt_first_then_history(make: Make) -> None:
    engine, script, _ = make(completion())
    history = (ChatMessage("user", "earlier"), ChatMessage("assistant", "reply"))
    await engine.reason(AITask("now", system_prompt="be brief", history=history))
    messages = script.bodies()[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "be brief"
    assert messages[-1]["content"] == "now"


@pytest.mark.parametrize(("endpoint", "model"), [(V1, "dep"), (COMPAT, "gpt"), (DEPLOYMENTS, "m")])
async def test_model_sent_when_configured(make: Make, endpoint: str, model: str) -> None:
    engine, script, _ = make(completion(), endpoint=endpoint, model=model)
    await engine.reason(AITask("hi"))
    assert script.bodies()[0]["model"] == model
    assert str(script.requests[0].url) == endpoint


async def test_journal_content_opt_in(make: Make, captured: list[events.Event]) -> None:
    engine, _, _ = make(completion("the answer"), journal_content=True)
    await engine.reason(AITask("the question", system_prompt="sys"))
    assert captured[0].context["prompt"] == "the question"
    assert captured[0].context["system_prompt"] == "sys"
    assert captured[-1].context["response"] == "the answer"


async def test_large_prompt_is_sent(make: Make) -> None:
    engine, script, _ = make(completion())
    big = "word " * 50_000
    result = await engine.reason(AITask(big))
    assert result.response_text == "hello"
    assert script.bodies()[0]["messages"][0]["content"] == big


# --------------------------------------------------------------------------- 401 / 403 / auth


async def test_401_forces_one_refresh_then_succeeds(
    make: Make, captured: list[events.Event]
) -> None:
    gateway_401 = error(
        401, {"statusCode": 401, "message": "Unauthorized. Access token is missing"}
    )
    engine, script, tokens = make(gateway_401, completion())
    result = await engine.reason(AITask("hi"))
    assert result.attempts == 2
    assert tokens.calls == ["get:default", "force:default"]
    assert tokens.rejected == [f"{TOKEN_STEM}0001"]
    auth = [r.headers["authorization"] for r in script.requests]
    assert auth == [f"Bearer {TOKEN_STEM}0001", f"Bearer {TOKEN_STEM}0002"]
    retry = one(captured, "copilot_retry")
    assert retry.context["reason"] == "token_rejected"
    assert retry.context["wait_s"] == 0.0


async def test_401_twice_raises_authentication_error(
    make: Make, captured: list[events.Event]
) -> None:
    engine, script, tokens = make(error(401, {"statusCode": 401}), error(401, {"statusCode": 401}))
    with pytest.raises(AuthenticationError) as info:
        await engine.reason(AITask("hi"))
    assert type(info.value) is AuthenticationError
    assert info.value.status == 401
    assert info.value.attempts == 2
    assert tokens.calls.count("force:default") == 1
    assert len(script.requests) == 2
    failed = one(captured, "copilot_auth_failed")
    assert failed.level == "ERROR"
    assert failed.context["token_refreshed"] is True
    assert "copilot_error" not in names(captured)


async def test_refresh_only_once_per_call(make: Make) -> None:
    engine, script, tokens = make(error(401), error(503), error(401))
    with pytest.raises(AuthenticationError):
        await engine.reason(AITask("hi"))
    assert tokens.calls == ["get:default", "force:default", "get:default"]
    assert len(script.requests) == 3


@pytest.mark.parametrize("status", [401, 403])
async def test_permission_denied_no_refresh(
    make: Make, captured: list[events.Event], status: int
) -> None:
    payload = api_error("PermissionDenied", "Principal does not have access to API/Operation.")
    engine, script, tokens = make(error(status, payload))
    with pytest.raises(PermissionDeniedError) as info:
        await engine.reason(AITask("hi"))
    assert "Cognitive Services OpenAI User" in str(info.value)
    assert tokens.calls == ["get:default"]
    assert len(script.requests) == 1
    one(captured, "copilot_auth_failed")


async def test_403_plain(make: Make) -> None:
    engine, _, _ = make(error(403, raw=b"Forbidden"))
    with pytest.raises(PermissionDeniedError):
        await engine.reason(AITask("hi"))


async def test_auth_manager_error_propagates(make: Make, captured: list[events.Event]) -> None:
    refused = AuthenticationError("re-login needed", code="invalid_grant", attempts=1)
    engine, script, _ = make(tokens=FakeTokens(error=refused))
    with pytest.raises(AuthenticationError) as info:
        await engine.reason(AITask("hi"))
    assert info.value is refused
    assert info.value.attempts == 1  # the token endpoint's count, untouched
    assert script.requests == []
    assert one(captured, "copilot_auth_failed").context["code"] == "invalid_grant"


async def test_auth_manager_transient_error_not_retried_again(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    down = TransientError("token endpoint down", status=503)
    engine, _script, tokens = make(tokens=FakeTokens(error=down))
    with pytest.raises(TransientError) as info:
        await engine.reason(AITask("hi"))
    assert info.value is down
    assert tokens.calls == ["get:default"]
    assert fake_clock.sleeps == []
    one(captured, "copilot_error")


async def test_force_refresh_failure_propagates(make: Make, captured: list[events.Event]) -> None:
    refused = AuthenticationError("re-login needed", code="invalid_grant")
    engine, script, _ = make(error(401), tokens=FakeTokens(refresh_error=refused))
    with pytest.raises(AuthenticationError) as info:
        await engine.reason(AITask("hi"))
    assert info.value is refused
    assert len(script.requests) == 1
    one(captured, "copilot_auth_failed")


async def test_token_asked_on_every_attempt(make: Make) -> None:
    engine, _script, tokens = make(error(503), error(500), completion())
    result = await engine.reason(AITask("hi"))
    assert result.attempts == 3
    assert tokens.calls == ["get:default"] * 3


# --------------------------------------------------------------------------- 429 and Retry-After


async def test_429_retry_after_ms_wins(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    throttled = error(
        429,
        api_error("429", "Please retry after 2 seconds."),
        headers={"retry-after": "2", "retry-after-ms": "2500", "apim-request-id": "r429"},
    )
    start = fake_clock()
    engine, _, _ = make(throttled, completion())
    result = await engine.reason(AITask("hi"))
    assert result.attempts == 2
    assert fake_clock.sleeps == [2.5]
    retry = one(captured, "copilot_retry")
    assert retry.level == "WARNING"
    assert retry.context["attempt"] == 1
    assert retry.context["max_attempts"] == 6
    assert retry.context["wait_s"] == 2.5
    assert retry.context["next_attempt_at"] == start + 2.5
    assert retry.context["reason"] == "429"
    assert retry.context["request_id"] == "r429"


async def test_429_retry_after_seconds(make: Make, fake_clock: Any) -> None:
    engine, _, _ = make(error(429, headers={"retry-after": "7"}), completion())
    await engine.reason(AITask("hi"))
    assert fake_clock.sleeps == [7.0]


async def test_429_wait_from_message(make: Make, fake_clock: Any) -> None:
    message = api_error("429", "Rate limit is exceeded. Try again in 3 seconds.")
    engine, _, _ = make(error(429, message), completion())
    await engine.reason(AITask("hi"))
    assert fake_clock.sleeps == [3.0]


async def test_429_garbage_header_uses_own_backoff(make: Make, fake_clock: Any) -> None:
    engine, _, _ = make(error(429, headers={"retry-after": "soon"}), completion())
    await engine.reason(AITask("hi"))
    assert fake_clock.sleeps == [1.0]


async def test_429_quota_fails_fast(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    quota = error(
        429,
        api_error("429", "Please retry after 86400 seconds."),
        headers={"retry-after": "86400"},
    )
    engine, script, _ = make(quota)
    with pytest.raises(RateLimitError) as info:
        await engine.reason(AITask("hi"))
    assert info.value.retry_after == 86400
    assert info.value.attempts == 1
    assert "quota" in str(info.value)
    assert fake_clock.sleeps == []
    assert len(script.requests) == 1
    assert one(captured, "copilot_error").context["retry_after"] == 86400


async def test_429_exhausts_budget(make: Make, fake_clock: Any) -> None:
    engine, script, _ = make(*[error(429) for _ in range(6)])
    with pytest.raises(RateLimitError) as info:
        await engine.reason(AITask("hi"))
    assert info.value.attempts == 6
    assert fake_clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert sum(fake_clock.sleeps) == 31.0
    assert len(script.requests) == 6


# --------------------------------------------------------------------------- other statuses


@pytest.mark.parametrize("status", [408, 504])
async def test_408_504_timeout_retried(make: Make, status: int) -> None:
    slow = error(status, api_error("Timeout", "The operation was timeout."))
    engine, _, _ = make(slow, completion())
    assert (await engine.reason(AITask("hi"))).attempts == 2
    engine, _script, _ = make(slow, error(status, raw=b"Gateway Timeout"), max_retries=1)
    with pytest.raises(RequestTimeoutError) as info:
        await engine.reason(AITask("hi"))
    assert isinstance(info.value, TimeoutError)
    assert info.value.status == status
    assert info.value.attempts == 2


@pytest.mark.parametrize("status", [413, 422])
async def test_413_422_input_not_retried(make: Make, status: int) -> None:
    engine, script, _ = make(error(status, raw=b"Request Entity Too Large"))
    with pytest.raises(InputValidationError) as info:
        await engine.reason(AITask("x" * 200_000))
    assert isinstance(info.value, ValueError)
    assert len(script.requests) == 1


async def test_400_context_length(make: Make) -> None:
    payload = api_error("context_length_exceeded", "maximum context length is 8192 tokens")
    engine, script, _ = make(error(400, payload))
    with pytest.raises(InputValidationError, match="too long") as info:
        await engine.reason(AITask("hi"))
    assert info.value.code == "context_length_exceeded"
    assert len(script.requests) == 1


async def test_400_content_filter(make: Make) -> None:
    payload = api_error(
        "content_filter",
        "filtered",
        innererror={
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
        },
    )
    engine, _, _ = make(error(400, payload))
    with pytest.raises(InputValidationError, match="violence"):
        await engine.reason(AITask("hi"))


async def test_400_other_is_value_error(make: Make) -> None:
    engine, script, _ = make(error(400, api_error("invalid_request_error", "bad")))
    with pytest.raises(ValueError, match="bad"):
        await engine.reason(AITask("hi"))
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "payload",
    [
        api_error("DeploymentNotFound", "The API deployment for this resource does not exist."),
        api_error("404", "Resource not found"),
        {"statusCode": 404, "message": "Resource not found"},
    ],
)
async def test_404_configuration(make: Make, payload: dict[str, Any]) -> None:
    engine, script, _ = make(error(404, payload))
    with pytest.raises(ConfigurationError):
        await engine.reason(AITask("hi"))
    assert len(script.requests) == 1


@pytest.mark.parametrize("status", [409, 500, 502, 503])
async def test_transient_retried_then_success(make: Make, status: int) -> None:
    engine, _, _ = make(error(status, raw=b"<html>oops</html>"), completion())
    assert (await engine.reason(AITask("hi"))).attempts == 2


async def test_5xx_exhausted(make: Make, captured: list[events.Event]) -> None:
    failing = [error(500, api_error(None, "The server had an error", type="server_error"))] * 3
    engine, _script, _ = make(
        *failing[:-1], error(500, raw=b"", headers={"apim-request-id": "last"}), max_retries=2
    )
    with pytest.raises(TransientError) as info:
        await engine.reason(AITask("hi"))
    assert type(info.value) is TransientError
    assert info.value.status == 500
    assert info.value.request_id == "last"
    assert info.value.attempts == 3
    failure = one(captured, "copilot_error")
    assert failure.context["error"] == "TransientError"
    assert failure.context["attempts"] == 3
    assert [e.context["attempt"] for e in captured if e.event == "copilot_retry"] == [1, 2]


async def test_network_error(make: Make) -> None:
    engine, _, _ = make(httpx.ConnectError("refused"), completion())
    assert (await engine.reason(AITask("hi"))).attempts == 2
    engine, _, _ = make(httpx.ConnectError("refused"), httpx.ReadError("reset"), max_retries=1)
    with pytest.raises(TransientError) as info:
        await engine.reason(AITask("hi"))
    assert info.value.code == "connection"
    assert "ReadError" in info.value.message
    assert info.value.__cause__ is None  # the httpx error holds the request (S2)
    assert info.value.__context__ is None


async def test_httpx_timeout(make: Make) -> None:
    engine, _, _ = make(httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), max_retries=1)
    with pytest.raises(RequestTimeoutError) as info:
        await engine.reason(AITask("hi"))
    assert info.value.attempts == 2


async def test_async_timeout_bounds_the_attempt(make: Make) -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    engine, _, _ = make(never, timeout=0.02, max_retries=0)
    with pytest.raises(RequestTimeoutError, match=r"within 0\.02 s"):
        await engine.reason(AITask("hi"))


async def test_attempt_timeout_capped_by_deadline(make: Make, fake_clock: Any) -> None:
    engine, script, _ = make(error(503), completion(), deadline=10.0, timeout=60.0)
    await engine.reason(AITask("hi"))
    first, second = (request.extensions["timeout"]["read"] for request in script.requests)
    assert first == 10.0
    assert second == 9.0


async def test_deadline_stops_retries(make: Make, fake_clock: Any) -> None:
    engine, script, _ = make(*[error(503)] * 6, deadline=5.0)
    with pytest.raises(TransientError):
        await engine.reason(AITask("hi"))
    assert fake_clock.sleeps == [1.0, 2.0]
    assert len(script.requests) == 3


async def test_deadline_reached_exactly(make: Make, fake_clock: Any) -> None:
    engine, script, _ = make(error(503), deadline=1.0)
    with pytest.raises(RequestTimeoutError, match="deadline"):
        await engine.reason(AITask("hi"))
    assert fake_clock.sleeps == [1.0]
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- 200 bodies


@pytest.mark.parametrize(
    "bad",
    [
        httpx.Response(200, json={"id": "x"}),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"finish_reason": "stop"}]}),
        httpx.Response(200, content=b'{"choices":[{"message":'),
        httpx.Response(200, content=b"<html>login</html>", headers={"content-type": "text/html"}),
    ],
    ids=["missing_choices", "empty_choices", "missing_message", "malformed_json", "html_200"],
)
async def test_parse_error_retried_once(
    make: Make, captured: list[events.Event], bad: httpx.Response
) -> None:
    engine, _, _ = make(bad, completion())
    result = await engine.reason(AITask("hi"))
    assert result.attempts == 2
    parse = one(captured, "copilot_parse_error")
    assert parse.context["will_retry"] is True
    assert parse.context["code"] == "parse_error"


async def test_parse_error_twice_gives_up(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    bad = httpx.Response(200, json={"choices": []}, headers={"x-request-id": "xr"})
    engine, script, _ = make(bad, bad, completion())
    with pytest.raises(TransientError, match="empty 'choices'") as info:
        await engine.reason(AITask("hi"))
    assert info.value.code == "parse_error"
    assert info.value.attempts == 2
    assert info.value.request_id == "xr"
    assert info.value.status == 200
    assert len(script.requests) == 2
    assert fake_clock.sleeps == [1.0]
    assert [e.context["will_retry"] for e in captured if e.event == "copilot_parse_error"] == [
        True,
        False,
    ]
    one(captured, "copilot_error")


@pytest.mark.parametrize("content", [None, ""])
async def test_empty_content_is_a_result(
    make: Make, captured: list[events.Event], content: str | None
) -> None:
    engine, _, _ = make(completion(content))
    result = await engine.reason(AITask("hi"))
    assert result.response_text == ""
    warning = one(captured, "copilot_empty_response")
    assert warning.level == "WARNING"
    assert "no text" in warning.context["note"]


async def test_length_with_empty_content_mentions_reasoning(
    make: Make, captured: list[events.Event]
) -> None:
    engine, _, _ = make(completion("", finish_reason="length"))
    result = await engine.reason(AITask("hi", max_tokens=5))
    assert result.finish_reason == "length"
    assert "reasoning" in one(captured, "copilot_empty_response").context["note"]


async def test_content_filter_finish_is_a_result(make: Make) -> None:
    engine, _, _ = make(completion("partial", finish_reason="content_filter"))
    result = await engine.reason(AITask("hi"))
    assert (result.response_text, result.finish_reason) == ("partial", "content_filter")


# --------------------------------------------------------------------------- adaptations


def unsupported(param: str) -> httpx.Response:
    code = "unsupported_parameter" if param == "max_tokens" else "unsupported_value"
    return error(400, api_error(code, f"Unsupported: {param}", param=param))


async def test_adapts_max_tokens_and_remembers(make: Make, captured: list[events.Event]) -> None:
    engine, script, _ = make(unsupported("max_tokens"), completion(), completion())
    result = await engine.reason(AITask("hi", max_tokens=100))
    assert result.attempts == 2
    bodies = script.bodies()
    assert bodies[0]["max_tokens"] == 100
    assert bodies[1]["max_completion_tokens"] == 100
    assert "max_tokens" not in bodies[1]
    adapted = one(captured, "copilot_request_adapted")
    assert adapted.level == "WARNING"
    assert adapted.context["parameter"] == "max_tokens"
    assert engine.adaptations.max_completion_tokens
    await engine.reason(AITask("again", max_tokens=10))
    assert script.bodies()[2]["max_completion_tokens"] == 10


async def test_adapts_temperature_and_max_tokens_in_one_call(make: Make) -> None:
    engine, script, _ = make(unsupported("max_tokens"), unsupported("temperature"), completion())
    result = await engine.reason(AITask("hi", max_tokens=5, temperature=0.2))
    assert result.attempts == 3
    assert "temperature" not in script.bodies()[2]
    assert engine.adaptations.omit_temperature


async def test_adaptation_that_does_not_help(make: Make) -> None:
    engine, script, _ = make(unsupported("temperature"), unsupported("temperature"))
    with pytest.raises(ConfigurationError, match="temperature"):
        await engine.reason(AITask("hi", temperature=0.5))
    assert len(script.requests) == 2


async def test_unsupported_other_parameter(make: Make) -> None:
    engine, script, _ = make(error(400, api_error("unsupported_parameter", "no", param="top_p")))
    with pytest.raises(ConfigurationError):
        await engine.reason(AITask("hi"))
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "task",
    [
        AITask(""),
        AITask("   \n"),
        AITask("hi", max_tokens=0),
        AITask("hi", max_tokens=-5),
        AITask("hi", max_tokens=True),
        AITask("hi", max_tokens="5"),  # type: ignore[arg-type]
        AITask("hi", temperature=-0.1),
        AITask("hi", temperature=2.5),
        AITask("hi", temperature=math.nan),
    ],
)
async def test_invalid_task_before_any_http(make: Make, task: AITask) -> None:
    engine, script, tokens = make()
    with pytest.raises(InputValidationError):
        await engine.reason(task)
    with pytest.raises(InputValidationError):
        engine.stream(task)
    assert script.requests == []
    assert tokens.calls == []


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": math.inf},
        {"deadline": 0},
        {"deadline": math.nan},
        {"idle_timeout": 0},
        {"user_id": ""},
        {"max_retries": -1},
        {"backoff_base": -1.0},
    ],
)
def test_constructor_rejects_bad_numbers(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        CopilotReasoningEngine(FakeTokens(), endpoint=DEPLOYMENTS, **options)


@pytest.mark.parametrize(
    ("endpoint", "model", "names_setting"),
    [
        (
            "http://res.openai.azure.com/openai/v1/chat/completions",
            "m",
            "ARC_SAGA_COPILOT_ENDPOINT",
        ),
        (
            "https://res.openai.azure.com/openai/deployments/d/chat/completions",
            None,
            "ARC_SAGA_COPILOT_ENDPOINT",
        ),
        (V1, None, "ARC_SAGA_COPILOT_MODEL"),
        (COMPAT, None, "ARC_SAGA_COPILOT_MODEL"),
    ],
)
def test_constructor_rejects_bad_endpoints(
    endpoint: str, model: str | None, names_setting: str
) -> None:
    with pytest.raises(ConfigurationError, match=names_setting):
        CopilotReasoningEngine(FakeTokens(), endpoint=endpoint, model=model)


# --------------------------------------------------------------------------- close and settings


async def test_close_owned_client(captured: list[events.Event]) -> None:
    engine = CopilotReasoningEngine(FakeTokens(), endpoint=DEPLOYMENTS)
    client = engine._client
    await engine.close()
    assert client.is_closed
    await engine.close()  # idempotent
    assert names(captured) == ["engine_closed"]
    with pytest.raises(RuntimeError, match="closed"):
        await engine.reason(AITask("hi"))
    with pytest.raises(RuntimeError, match="closed"):
        engine.stream(AITask("hi"))


async def test_close_external_client_left_open() -> None:
    async with httpx.AsyncClient() as client:
        async with CopilotReasoningEngine(
            FakeTokens(), endpoint=DEPLOYMENTS, http_client=client
        ) as engine:
            assert engine.endpoint.shape == "deployments"
        assert not client.is_closed


async def test_from_settings_with_injected_parts() -> None:
    settings = Settings.from_env().with_overrides(
        copilot_endpoint=V1, copilot_model="dep", user="alice", journal_content=True
    )
    tokens = ClosableTokens()
    async with httpx.AsyncClient() as client:
        engine = CopilotReasoningEngine.from_settings(
            settings, auth_manager=tokens, http_client=client
        )
        assert engine.user_id == "alice"
        assert engine.endpoint.model == "dep"
        await engine.close()
        assert not tokens.closed
        assert not client.is_closed


async def test_from_settings_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARC_SAGA_COPILOT_ENDPOINT", DEPLOYMENTS)
    engine = CopilotReasoningEngine.from_settings(auth_manager=FakeTokens())
    assert engine.endpoint.deployment == "gpt4o"
    await engine.close()


def test_from_settings_requires_endpoint() -> None:
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_ENDPOINT"):
        CopilotReasoningEngine.from_settings(Settings.from_env(), auth_manager=FakeTokens())


def test_from_settings_checks_endpoint_before_building_auth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Settings] = []
    fake = types.ModuleType("saga_magic.core.auth")
    fake.EntraIDAuthManager = types.SimpleNamespace(  # type: ignore[attr-defined]
        from_settings=lambda settings, http_client: built.append(settings)
    )
    monkeypatch.setitem(sys.modules, "saga_magic.core.auth", fake)
    settings = Settings.from_env().with_overrides(copilot_endpoint=V1)  # no model
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_MODEL"):
        CopilotReasoningEngine.from_settings(settings)
    assert built == []


@pytest.mark.parametrize("closable", [True, False])
async def test_from_settings_default_auth_manager_closed_with_engine(
    monkeypatch: pytest.MonkeyPatch, closable: bool
) -> None:
    tokens = ClosableTokens() if closable else FakeTokens()
    fake = types.ModuleType("saga_magic.core.auth")
    fake.EntraIDAuthManager = types.SimpleNamespace(  # type: ignore[attr-defined]
        from_settings=lambda settings, http_client: tokens
    )
    monkeypatch.setitem(sys.modules, "saga_magic.core.auth", fake)
    settings = Settings.from_env().with_overrides(copilot_endpoint=DEPLOYMENTS)
    engine = CopilotReasoningEngine.from_settings(settings)
    await engine.close()
    assert tokens.closed is closable


async def test_from_settings_builds_the_real_auth_manager() -> None:
    from saga_magic.core.auth import EntraIDAuthManager

    settings = Settings.from_env().with_overrides(
        copilot_endpoint=DEPLOYMENTS, tenant_id="contoso", client_id="app-id"
    )
    async with httpx.AsyncClient() as client:
        engine = CopilotReasoningEngine.from_settings(settings, http_client=client)
        assert isinstance(engine._auth, EntraIDAuthManager)
        await engine.close()
        assert not client.is_closed


# --------------------------------------------------------------------------- secret canary


async def test_secret_canary(
    make: Make, captured: list[events.Event], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="saga")
    texts: list[str] = []
    flows: list[tuple[Reply, ...]] = [
        (completion(),),
        (error(401, {"statusCode": 401}), completion()),
        (error(429, headers={"retry-after": "1"}), completion()),
        (error(401), error(401)),
        (error(500, raw=b"<html>echo Authorization: Bearer leaked</html>"),) * 6,
        (httpx.Response(200, json={"choices": []}),) * 2,
        (error(400, api_error("invalid_request_error", "bad")),),
    ]
    for replies in flows:
        engine, _, _ = make(*replies, journal_content=True)
        try:
            await engine.reason(AITask("hi"))
        except ArcSagaException as failure:
            texts += [str(failure), repr(failure), json.dumps(failure.context())]
    texts += [json.dumps(event.to_dict()) for event in captured]
    texts += [record.getMessage() for record in caplog.records]
    assert captured
    assert caplog.records
    for text in texts:
        assert TOKEN_STEM not in text
        assert "leaked" not in text


# ------------------------------------------------------------------ the token and the deadline


class SlowTokens(FakeTokens):
    """Takes ``delay`` real seconds to give a token (on ``get`` or ``force``), noting a cancel."""

    def __init__(self, delay: float, *, slow: str = "get") -> None:
        super().__init__()
        self.delay = delay
        self.slow = slow
        self.cancelled = False

    async def _wait(self, path: str) -> None:
        if path != self.slow:
            return
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
        await self._wait("get")
        return await super().get_valid_token(user_id, op_id=op_id)

    async def force_refresh(
        self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
    ) -> str:
        await self._wait("force")
        return await super().force_refresh(user_id, rejected_token=rejected_token, op_id=op_id)


REAL_TIME = {"clock": time.time, "sleep": asyncio.sleep}


async def test_deadline_bounds_getting_the_token(make: Make, captured: list[events.Event]) -> None:
    # B6 (/tmp/r7.py): reason() waited for the token past its deadline, then threw it away.
    tokens = SlowTokens(0.5)
    engine, script, _ = make(completion(), tokens=tokens, deadline=0.05, **REAL_TIME)
    with pytest.raises(RequestTimeoutError, match="No access token") as info:
        await engine.reason(AITask("hi"))
    assert tokens.cancelled  # the wait ended at the deadline, not when the token came
    assert info.value.code == "deadline"
    assert info.value.attempts == 0
    assert script.requests == []
    assert one(captured, "copilot_error").context["code"] == "deadline"


async def test_deadline_bounds_the_forced_refresh(make: Make) -> None:
    tokens = SlowTokens(0.5, slow="force")
    engine, script, _ = make(error(401), completion(), tokens=tokens, deadline=0.05, **REAL_TIME)
    with pytest.raises(RequestTimeoutError, match="No access token") as info:
        await engine.reason(AITask("hi"))
    assert tokens.cancelled
    assert info.value.attempts == 1
    assert len(script.requests) == 1


async def test_token_arriving_after_the_deadline_is_not_used(make: Make, fake_clock: Any) -> None:
    class LateTokens(FakeTokens):
        async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
            fake_clock.advance(11.0)
            return await super().get_valid_token(user_id, op_id=op_id)

    engine, script, _ = make(completion(), tokens=LateTokens(), deadline=10.0)
    with pytest.raises(RequestTimeoutError, match="deadline passed"):
        await engine.reason(AITask("hi"))
    assert script.requests == []


async def test_a_callers_deadline_does_not_cancel_a_shared_refresh(make: Make) -> None:
    class SharedTokens(FakeTokens):
        """One refresh shared by every caller, as the auth manager's single flight does."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()
            self.flight: asyncio.Future[str] | None = None

        async def _refresh(self) -> str:
            await self.gate.wait()
            return self.current

        async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
            if self.flight is None:
                self.flight = asyncio.ensure_future(self._refresh())
            return await asyncio.shield(self.flight)

    tokens = SharedTokens()
    hasty, _, _ = make(completion(), tokens=tokens, deadline=0.02, **REAL_TIME)
    patient, script, _ = make(completion(), tokens=tokens, deadline=30.0, **REAL_TIME)
    waiting = asyncio.ensure_future(patient.reason(AITask("hi")))
    with pytest.raises(RequestTimeoutError):
        async with asyncio.timeout(5.0):  # a safety net only: without the fix it waits forever
            await hasty.reason(AITask("hi"))
    assert tokens.flight is not None
    assert not tokens.flight.cancelled()
    tokens.gate.set()
    assert (await waiting).response_text == "hello"
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN_STEM}0001"


async def test_providers_own_timeout_error_passes_unchanged(make: Make) -> None:
    own = TimeoutError("the provider's own timeout")
    engine, _, _ = make(tokens=FakeTokens(error=own))
    with pytest.raises(TimeoutError) as info:
        await engine.reason(AITask("hi"))
    assert info.value is own


# --------------------------------------------------------------------------- op_id to the provider


async def test_op_id_passed_to_the_token_provider(make: Make, captured: list[events.Event]) -> None:
    # G4: the refresh events a call causes carry the call's op_id.
    engine, _, tokens = make(error(401), completion())
    await engine.reason(AITask("hi"))
    start = one(captured, "copilot_request_start")
    assert start.op_id is not None
    assert tokens.calls == ["get:default", "force:default"]
    assert tokens.op_ids == [start.op_id, start.op_id]


async def test_provider_without_op_id_still_works(make: Make) -> None:
    class LegacyTokens(FakeTokens):
        async def get_valid_token(self, user_id: str) -> str:  # type: ignore[override]
            return await super().get_valid_token(user_id)

        async def force_refresh(  # type: ignore[override]
            self, user_id: str, *, rejected_token: str | None = None
        ) -> str:
            return await super().force_refresh(user_id, rejected_token=rejected_token)

    engine, _, tokens = make(error(401), completion(), tokens=LegacyTokens())
    assert (await engine.reason(AITask("hi"))).attempts == 2
    assert tokens.op_ids == [None, None]


async def test_provider_taking_any_keyword_gets_op_id(make: Make) -> None:
    class KeywordTokens(FakeTokens):
        async def get_valid_token(self, user_id: str, **options: Any) -> str:  # type: ignore[override]
            return await super().get_valid_token(user_id, **options)

    engine, _, tokens = make(completion(), tokens=KeywordTokens())
    await engine.reason(AITask("hi"))
    assert tokens.op_ids[0] is not None


async def test_provider_without_a_readable_signature_gets_no_op_id(make: Make) -> None:
    class Opaque:
        __signature__ = "not a signature"  # inspect.signature() raises TypeError

        def __init__(self, tokens: FakeTokens) -> None:
            self.tokens = tokens

        def __call__(self, user_id: str, **options: Any) -> Any:
            assert options == {}
            return self.tokens.get_valid_token(user_id)

    tokens = FakeTokens()
    tokens.get_valid_token = Opaque(FakeTokens())  # type: ignore[method-assign]
    engine, script, _ = make(completion(), tokens=tokens)
    assert (await engine.reason(AITask("hi"))).response_text == "hello"
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- attempt numbering


async def test_attempt_counts_requests_on_every_path(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    # G8: the token_rejected retry counted requests, the policy's retries counted its attempts.
    engine, script, _ = make(error(401), error(429, headers={"retry-after": "1"}), completion())
    result = await engine.reason(AITask("hi"))
    retries = [e.context for e in captured if e.event == "copilot_retry"]
    assert [(r["reason"], r["attempt"], r["max_attempts"]) for r in retries] == [
        ("token_rejected", 1, 7),
        ("429", 2, 7),
    ]
    assert result.attempts == len(script.requests) == 3


async def test_attempt_counts_adaptations_too(make: Make, captured: list[events.Event]) -> None:
    engine, _, _ = make(unsupported("max_tokens"), error(503), completion())
    result = await engine.reason(AITask("hi", max_tokens=5))
    retry = one(captured, "copilot_retry")
    assert (retry.context["attempt"], retry.context["max_attempts"]) == (2, 7)
    assert result.attempts == 3


async def test_parse_error_event_counts_requests(make: Make, captured: list[events.Event]) -> None:
    bad = httpx.Response(200, json={"choices": []})
    engine, _, _ = make(error(503), bad, completion())
    await engine.reason(AITask("hi"))
    parse = one(captured, "copilot_parse_error")
    assert (parse.context["attempt"], parse.context["max_attempts"]) == (2, 6)


# --------------------------------------------------------------------------- a closed engine


async def test_closed_during_a_backoff_wait(make: Make, fake_clock: Any) -> None:
    # G8: the next attempt used to reach httpx's own "client has been closed" RuntimeError.
    async def close_while_waiting(seconds: float) -> None:
        await engine.close()

    engine, script, tokens = make(error(503), completion(), sleep=close_while_waiting)
    with pytest.raises(RuntimeError, match="engine is closed"):
        await engine.reason(AITask("hi"))
    assert len(script.requests) == 1
    assert tokens.calls == ["get:default"]


async def test_closed_during_a_forced_refresh(make: Make) -> None:
    class ClosingTokens(FakeTokens):
        async def force_refresh(
            self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
        ) -> str:
            await engine.close()
            return await super().force_refresh(user_id, rejected_token=rejected_token)

    engine, script, _ = make(error(401), completion(), tokens=ClosingTokens())
    with pytest.raises(RuntimeError, match="engine is closed"):
        await engine.reason(AITask("hi"))
    assert len(script.requests) == 1


# --------------------------------------------------------------------------- nothing chained (S2)


def chain(error: BaseException) -> list[BaseException]:
    """The error and everything reachable through ``__cause__`` / ``__context__``."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def assert_nothing_leaks(error: BaseException) -> None:
    for link in chain(error):
        module = type(link).__module__
        assert not module.startswith(("httpx", "httpcore", "h11")), repr(link)
        assert not isinstance(link, json.JSONDecodeError), repr(link)  # holds the body
        assert TOKEN_STEM not in repr(link)
        assert TOKEN_STEM not in repr(getattr(link, "__dict__", {}))


async def _never(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("retries", "replies"),
    [
        (0, [httpx.ConnectError("refused")]),
        (0, [httpx.ReadError("reset")]),
        (0, [httpx.RemoteProtocolError("peer closed")]),
        (0, [httpx.ReadTimeout("slow")]),
        (0, [_never]),
        (1, [httpx.ConnectError("refused"), httpx.ConnectError("refused")]),
        (1, [httpx.ConnectError("refused"), error(429, headers={"retry-after": "86400"})]),
        (1, [httpx.Response(200, content=b"{not json"), httpx.Response(200, content=b"{again")]),
        (0, [error(401), httpx.ConnectError("refused")]),
    ],
    ids=[
        "connect",
        "read",
        "protocol",
        "httpx_timeout",
        "asyncio_timeout",
        "exhausted",
        "fail_fast",
        "parse",
        "after_refresh",
    ],
)
async def test_errors_chain_no_httpx_exception(
    make: Make, retries: int, replies: list[Reply]
) -> None:
    # S2: err.__cause__.request.headers["authorization"] was the bearer token.
    engine, script, _ = make(*replies, max_retries=retries, timeout=0.02, journal_content=True)
    with pytest.raises(ArcSagaException) as info:
        await engine.reason(AITask("hi"))
    assert script.requests[0].headers["authorization"].startswith(f"Bearer {TOKEN_STEM}")
    assert_nothing_leaks(info.value)


# --------------------------------------------------------------------------- 200 previews (S4)


ANSWER = "the model says: meet at dawn by the old mill"


@pytest.mark.parametrize(
    "bad",
    [
        httpx.Response(200, content=f'{{"choices": "{ANSWER}'.encode()),
        httpx.Response(200, content=f"<html>{ANSWER}</html>".encode()),
    ],
    ids=["malformed_json", "html"],
)
async def test_parse_errors_quote_the_answer_only_with_journal_content(
    make: Make, captured: list[events.Event], bad: httpx.Response
) -> None:
    engine, _, _ = make(bad, bad)
    with pytest.raises(TransientError) as info:
        await engine.reason(AITask("hi"))
    texts = [str(info.value), *(json.dumps(e.to_dict()) for e in captured)]
    assert "copilot_parse_error" in names(captured)
    assert not any("dawn" in text for text in texts)
    assert "bytes" in info.value.message
    captured.clear()
    engine, _, _ = make(bad, bad, journal_content=True)
    with pytest.raises(TransientError, match="dawn"):
        await engine.reason(AITask("hi"))
    assert "dawn" in one(captured, "copilot_error").context["message"]
