"""CopilotReasoningEngine.stream(): Azure's SSE chunk sequence, retries before the first delta,
partial text after it, truncation, idle gaps and deadlines (PROTOCOLS.md 2.8)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from saga_magic.core import events
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.sse import ChatStream
from saga_magic.core.types import AITask, TokenUsage

DEPLOYMENTS = (
    "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
)
TOKEN_STEM = "opaque0Canary0Stream0Token0"
SSE = {"content-type": "text/event-stream", "apim-request-id": "req-sse"}


class FakeTokens:
    def __init__(self) -> None:
        self.number = 1
        self.calls: list[str] = []
        self.op_ids: list[str | None] = []

    async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
        self.calls.append("get")
        self.op_ids.append(op_id)
        return f"{TOKEN_STEM}{self.number}"

    async def force_refresh(
        self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
    ) -> str:
        self.calls.append("force")
        self.op_ids.append(op_id)
        self.number += 1
        return f"{TOKEN_STEM}{self.number}"


class Script:
    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply()  # type: ignore[no-any-return]
        assert isinstance(reply, httpx.Response)
        return reply

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


def data(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def delta(text: str) -> str:
    return data({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]})


def finish(reason: str = "stop") -> str:
    return data({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


DONE = "data: [DONE]\n\n"
PROMPT_FILTER = data(
    {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
        "choices": [],
    }
)
ROLE = data(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
        "usage": None,
    }
)
ANNOTATION = data(
    {
        "id": "",
        "model": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 5},
            }
        ],
    }
)
USAGE = data(
    {
        "id": "c1",
        "choices": [],
        "usage": {
            "prompt_tokens": 4,
            "completion_tokens": 2,
            "total_tokens": 6,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
)
AZURE = [PROMPT_FILTER, ROLE, delta("Hel"), delta("lo"), finish(), ANNOTATION, USAGE, DONE]


def sse(*parts: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, content="".join(parts).encode(), headers=headers or SSE)


class Body(httpx.AsyncByteStream):
    """A response body that sends ``parts``, then raises ``then`` or stays silent forever."""

    def __init__(self, *parts: str, then: Exception | None = None) -> None:
        self.parts = parts
        self.then = then
        self.started = asyncio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part.encode()
        self.started.set()
        if self.then is not None:
            raise self.then
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


def gated(*parts: str, then: Exception | None = None) -> Callable[[], httpx.Response]:
    """A reply whose body sends ``parts``, then raises ``then`` or stays silent."""
    return lambda: httpx.Response(200, stream=Body(*parts, then=then), headers=SSE)


def error(status: int, payload: Any) -> httpx.Response:
    return httpx.Response(status, json=payload)


@pytest.fixture
def captured() -> Iterator[list[events.Event]]:
    got: list[events.Event] = []
    unsubscribe = events.subscribe(got.append)
    yield got
    unsubscribe()


def names(got: list[events.Event]) -> list[str]:
    return [event.event for event in got]


Make = Callable[..., tuple[CopilotReasoningEngine, Script, FakeTokens]]


@pytest.fixture
async def make(fake_clock: Any) -> AsyncIterator[Make]:
    made: list[tuple[CopilotReasoningEngine, httpx.AsyncClient]] = []

    def build(*replies: Any, **options: Any) -> tuple[CopilotReasoningEngine, Script, FakeTokens]:
        script = Script(list(replies))
        client = httpx.AsyncClient(transport=httpx.MockTransport(script))
        tokens = FakeTokens()
        options.setdefault("clock", fake_clock)
        options.setdefault("sleep", fake_clock.sleep)
        options.setdefault("jitter", lambda wait: 0.0)
        engine = CopilotReasoningEngine(tokens, endpoint=DEPLOYMENTS, http_client=client, **options)
        made.append((engine, client))
        return engine, script, tokens

    yield build
    for engine, client in made:
        await engine.close()
        await client.aclose()


async def collect(stream: ChatStream) -> list[str]:
    return [piece async for piece in stream]


# --------------------------------------------------------------------------- the good path


async def test_azure_chunk_sequence(make: Make, captured: list[events.Event]) -> None:
    engine, script, _ = make(sse(*AZURE))
    task = AITask("hi", max_tokens=20)
    stream = engine.stream(task)
    assert stream.result is None
    assert stream.text == ""
    assert script.requests == []  # nothing is sent before the first __anext__
    assert await collect(stream) == ["Hel", "lo"]
    result = stream.result
    assert result is not None
    assert result.response_text == "Hello"
    assert stream.text == "Hello"
    assert result.finish_reason == "stop"
    assert result.usage == TokenUsage(4, 2, 6, 0)
    assert result.model == "gpt-4o"
    assert result.request_id == "req-sse"
    assert result.attempts == 1
    assert result.task_id == task.task_id
    (request,) = script.requests
    assert request.headers["accept"] == "text/event-stream"
    body = script.bodies()[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert names(captured) == ["copilot_stream_start", "copilot_stream_complete"]
    assert captured[1].context["usage"]["total_tokens"] == 6
    assert await collect(stream) == []  # finished


async def test_comments_crlf_fields_and_multiline_data(make: Make) -> None:
    wire = (
        ": keep-alive\r\n\r\n"
        "event: message\r\nid: 7\r\nretry: 100\r\n"
        'data: {"choices":\r\ndata: [{"delta": {"content": "A"}}]}\r\n\r\n'
        "event: ping\r\n\r\n" + finish().replace("\n", "\r\n") + DONE.replace("\n", "\r\n")
    )
    engine, _, _ = make(sse(wire))
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["A"]
    assert stream.result is not None
    assert stream.result.finish_reason == "stop"


async def test_async_filter_block_is_a_result(make: Make) -> None:
    block = data(
        {
            "id": "",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "content_filter_results": {
                        "protected_material_text": {"filtered": True, "detected": True}
                    },
                }
            ],
        }
    )
    engine, _, _ = make(sse(delta("Once upon"), block, DONE))
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["Once upon"]
    assert stream.result is not None
    assert stream.result.finish_reason == "content_filter"


async def test_done_without_finish_reason_is_success(make: Make) -> None:
    engine, _, _ = make(sse(delta("x"), DONE))
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["x"]
    assert stream.result is not None
    assert stream.result.finish_reason is None
    assert stream.result.usage == TokenUsage()


async def test_finish_reason_then_eof_is_success(make: Make) -> None:
    engine, _, _ = make(sse(delta("x"), finish("length")))
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["x"]
    assert stream.result is not None
    assert stream.result.finish_reason == "length"


async def test_empty_stream_warns(make: Make, captured: list[events.Event]) -> None:
    engine, _, _ = make(sse(ROLE, finish("length"), DONE))
    stream = engine.stream(AITask("hi", max_tokens=5))
    assert await collect(stream) == []
    assert stream.result is not None
    assert stream.result.response_text == ""
    warning = [e for e in captured if e.event == "copilot_empty_response"]
    assert "reasoning" in warning[0].context["note"]


async def test_server_answering_json_instead_of_sse(make: Make) -> None:
    whole = httpx.Response(
        200,
        json={
            "model": "m",
            "choices": [{"message": {"content": "all at once"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3},
        },
    )
    engine, _, _ = make(whole)
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["all at once"]
    assert stream.result is not None
    assert stream.result.usage.total_tokens == 4


# --------------------------------------------------------------------------- before the first delta


async def test_error_event_before_text_is_retried(
    make: Make, captured: list[events.Event], fake_clock: Any
) -> None:
    failing = sse(ROLE, data({"error": {"code": "server_error", "message": "boom"}}), DONE)
    engine, script, tokens = make(failing, sse(*AZURE))
    stream = engine.stream(AITask("hi"))
    assert await collect(stream) == ["Hel", "lo"]
    assert stream.result is not None
    assert stream.result.attempts == 2
    assert len(script.requests) == 2
    assert tokens.calls == ["get", "get"]
    assert fake_clock.sleeps == [1.0]
    assert "copilot_retry" in names(captured)


async def test_truncated_before_text_is_retried(make: Make) -> None:
    engine, script, _ = make(sse(PROMPT_FILTER, ROLE), sse(delta("ok"), DONE))
    assert await collect(engine.stream(AITask("hi"))) == ["ok"]
    assert len(script.requests) == 2


async def test_status_errors_before_stream(make: Make, fake_clock: Any) -> None:
    engine, _, tokens = make(
        error(401, {"statusCode": 401, "message": "Unauthorized"}),
        httpx.Response(429, headers={"retry-after": "3"}),
        httpx.ReadTimeout("slow"),
        sse(delta("ok"), DONE),
    )
    assert await collect(engine.stream(AITask("hi"))) == ["ok"]
    assert tokens.calls == ["get", "force", "get", "get"]
    assert fake_clock.sleeps == [3.0, 2.0]


async def test_permanent_error_before_stream(make: Make, captured: list[events.Event]) -> None:
    engine, script, _ = make(error(404, {"error": {"code": "DeploymentNotFound", "message": "x"}}))
    stream = engine.stream(AITask("hi"))
    with pytest.raises(ConfigurationError):
        await anext(stream)
    assert len(script.requests) == 1
    assert names(captured)[-1] == "copilot_error"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_auth_failure_before_stream(make: Make, captured: list[events.Event]) -> None:
    engine, _, _ = make(error(401, {}), error(401, {}))
    with pytest.raises(AuthenticationError) as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.attempts == 2
    assert names(captured)[-1] == "copilot_auth_failed"


async def test_stream_options_rejected_retried_without(
    make: Make, captured: list[events.Event]
) -> None:
    rejected = error(
        400,
        {
            "error": {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
    engine, script, _ = make(rejected, sse(delta("ok"), DONE), sse(delta("again"), DONE))
    assert await collect(engine.stream(AITask("hi"))) == ["ok"]
    bodies = script.bodies()
    assert "stream_options" in bodies[0]
    assert "stream_options" not in bodies[1]
    assert engine.adaptations.omit_stream_options
    assert "copilot_request_adapted" in names(captured)
    assert await collect(engine.stream(AITask("hi"))) == ["again"]
    assert "stream_options" not in script.bodies()[2]


async def test_bad_json_before_text_retried_once(make: Make, captured: list[events.Event]) -> None:
    engine, script, _ = make(sse("data: {not json\n\n"), sse("data: {nope\n\n"), sse(DONE))
    with pytest.raises(TransientError) as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.code == "parse_error"
    assert info.value.request_id == "req-sse"
    assert info.value.partial_text is None
    assert len(script.requests) == 2
    assert names(captured).count("copilot_parse_error") == 2


async def test_html_200_on_stream_is_a_parse_error(make: Make) -> None:
    page = httpx.Response(200, content=b"<html>login</html>", headers={"content-type": "text/html"})
    engine, script, _ = make(page, sse(delta("ok"), DONE))
    assert await collect(engine.stream(AITask("hi"))) == ["ok"]
    assert len(script.requests) == 2


async def test_idle_before_text_is_retried_as_timeout(make: Make) -> None:
    engine, script, _ = make(gated(ROLE), sse(delta("ok"), DONE), idle_timeout=0.02)
    assert await collect(engine.stream(AITask("hi"))) == ["ok"]
    assert len(script.requests) == 2


# --------------------------------------------------------------------------- after the first delta


async def test_error_event_after_text_keeps_partial(
    make: Make, captured: list[events.Event]
) -> None:
    failing = sse(delta("part"), data({"error": {"code": "server_error", "message": "boom"}}), DONE)
    engine, script, _ = make(failing, sse(delta("never"), DONE))
    stream = engine.stream(AITask("hi"))
    assert await anext(stream) == "part"
    with pytest.raises(TransientError, match="boom") as info:
        await anext(stream)
    assert info.value.partial_text == "part"
    assert info.value.code == "server_error"
    assert info.value.attempts == 1
    assert info.value.request_id == "req-sse"
    assert len(script.requests) == 1
    failure = [e for e in captured if e.event == "copilot_error"]
    assert failure[0].context["partial_chars"] == 4
    assert stream.result is None


async def test_eof_after_text_is_truncation(make: Make) -> None:
    engine, script, _ = make(sse(ROLE, delta("half")))
    with pytest.raises(TransientError, match="ended early") as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.code == "truncated"
    assert info.value.partial_text == "half"
    assert len(script.requests) == 1


async def test_bad_json_after_text(make: Make) -> None:
    engine, _, _ = make(sse(delta("a"), "data: {oops\n\n"))
    with pytest.raises(TransientError) as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.code == "parse_error"
    assert info.value.partial_text == "a"


@pytest.mark.parametrize(
    ("failure", "expected", "code"),
    [
        (httpx.RemoteProtocolError("peer closed"), TransientError, "connection"),
        (httpx.ReadError("reset"), TransientError, "connection"),
        (httpx.ReadTimeout("slow"), RequestTimeoutError, "timeout"),
    ],
)
async def test_connection_lost_after_text(
    make: Make, failure: Exception, expected: type[Exception], code: str
) -> None:
    engine, _, _ = make(gated(delta("a"), delta("b"), then=failure))
    with pytest.raises(expected) as info:
        await collect(engine.stream(AITask("hi")))
    assert isinstance(info.value, TransientError)
    assert info.value.code == code
    assert info.value.partial_text == "ab"


async def test_idle_gap_after_text(make: Make) -> None:
    engine, script, _ = make(gated(delta("a")), idle_timeout=0.02)
    with pytest.raises(RequestTimeoutError, match="silent") as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.code == "idle_timeout"
    assert info.value.partial_text == "a"
    assert len(script.requests) == 1


async def test_keepalive_comments_count_as_activity(make: Make) -> None:
    def reply() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield delta("a").encode()
            for _ in range(6):
                await asyncio.sleep(0.05)
                yield b": keep-alive\n\n"
            yield (finish() + DONE).encode()

        return httpx.Response(200, content=body(), headers=SSE)

    engine, _, _ = make(reply, idle_timeout=0.25)
    assert await collect(engine.stream(AITask("hi"))) == ["a"]


async def test_deadline_ends_a_stalled_stream(make: Make) -> None:
    engine, _, _ = make(gated(delta("a")), deadline=0.02, idle_timeout=30.0)
    with pytest.raises(RequestTimeoutError, match="deadline") as info:
        await collect(engine.stream(AITask("hi")))
    assert info.value.code == "deadline"
    assert info.value.partial_text == "a"


async def test_deadline_already_passed_while_reading(make: Make, fake_clock: Any) -> None:
    engine, _, _ = make(gated(delta("a"), delta("b"), DONE), deadline=10.0)
    stream = engine.stream(AITask("hi"))
    assert await anext(stream) == "a"
    fake_clock.advance(11.0)
    with pytest.raises(RequestTimeoutError, match="deadline") as info:
        await anext(stream)
    assert info.value.partial_text == "a"


# --------------------------------------------------------------------------- stopping early


async def test_aclose_early_closes_the_response(make: Make) -> None:
    body = Body(delta("a"))
    engine, _, _ = make(httpx.Response(200, stream=body, headers=SSE))
    async with engine.stream(AITask("hi")) as stream:
        assert await anext(stream) == "a"
        assert not body.closed
    assert body.closed
    assert stream.result is None
    assert await collect(stream) == []
    await stream.aclose()  # idempotent


async def test_cancellation_closes_the_response(make: Make, captured: list[events.Event]) -> None:
    body = Body(delta("a"))
    engine, _, _ = make(httpx.Response(200, stream=body, headers=SSE))
    stream = engine.stream(AITask("hi"))
    consumer = asyncio.create_task(collect(stream))
    await body.started.wait()
    await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert body.closed
    assert "copilot_error" not in names(captured)
    assert await collect(stream) == []


async def test_aclose_before_start(make: Make) -> None:
    engine, script, _ = make()
    stream = engine.stream(AITask("hi"))
    await stream.aclose()
    assert await collect(stream) == []
    assert script.requests == []


# --------------------------------------------------------------------------- canary


async def test_stream_secret_canary(
    make: Make, captured: list[events.Event], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="saga")
    texts: list[str] = []
    flows = [
        (sse(*AZURE),),
        (error(401, {}), sse(delta("x"), data({"error": {"message": "Bearer leaked"}}))),
        (error(401, {}), error(401, {})),
    ]
    for replies in flows:
        engine, _, _ = make(*replies, journal_content=True)
        try:
            await collect(engine.stream(AITask("hi")))
        except ArcSagaException as failure:
            texts += [str(failure), repr(failure)]
    texts += [json.dumps(event.to_dict()) for event in captured]
    texts += [record.getMessage() for record in caplog.records]
    assert len(texts) > 5
    for text in texts:
        assert TOKEN_STEM not in text
        assert "leaked" not in text


# --------------------------------------------------------------------------- review fixes


async def test_bad_json_after_text_emits_a_parse_error_event(
    make: Make, captured: list[events.Event]
) -> None:
    # G5: a parse error after the first delta emitted copilot_error only.
    engine, _, _ = make(sse(delta("a"), "data: {oops\n\n"))
    with pytest.raises(TransientError):
        await collect(engine.stream(AITask("hi")))
    assert names(captured) == ["copilot_stream_start", "copilot_parse_error", "copilot_error"]
    parse = captured[1].context
    assert (parse["will_retry"], parse["attempt"], parse["code"]) == (False, 1, "parse_error")


async def test_other_failures_after_text_emit_no_parse_error_event(
    make: Make, captured: list[events.Event]
) -> None:
    engine, _, _ = make(sse(ROLE, delta("half")))
    with pytest.raises(TransientError):
        await collect(engine.stream(AITask("hi")))
    assert "copilot_parse_error" not in names(captured)


async def test_stream_created_before_close(make: Make, captured: list[events.Event]) -> None:
    # G8: the first __anext__ used to reach httpx ("client has been closed") or even succeed.
    engine, script, tokens = make(sse(delta("a"), DONE))
    stream = engine.stream(AITask("hi"))
    await engine.close()
    with pytest.raises(RuntimeError, match="engine is closed"):
        await anext(stream)
    assert script.requests == []
    assert tokens.calls == []
    assert names(captured) == ["engine_closed"]


async def test_stream_passes_op_id(make: Make, captured: list[events.Event]) -> None:
    engine, _, tokens = make(error(401, {}), sse(delta("a"), DONE))
    await collect(engine.stream(AITask("hi")))
    start = next(e for e in captured if e.event == "copilot_stream_start")
    assert tokens.op_ids == [start.op_id, start.op_id]


ANSWER = "meet at dawn by the old mill"


async def test_stream_parse_error_quotes_only_with_journal_content(
    make: Make, captured: list[events.Event]
) -> None:
    # S4: the malformed event is answer text.
    bad = '{"choices": [{"delta": {"content": "' + ANSWER
    engine, _, _ = make(sse(delta("a"), f"data: {bad}\n\n"))
    with pytest.raises(TransientError) as info:
        await collect(engine.stream(AITask("hi")))
    texts = [str(info.value), *(json.dumps(e.to_dict()) for e in captured)]
    assert not any("dawn" in text for text in texts)
    engine, _, _ = make(sse(delta("a"), f"data: {bad}\n\n"), journal_content=True)
    with pytest.raises(TransientError, match="dawn"):
        await collect(engine.stream(AITask("hi")))


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


@pytest.mark.parametrize(
    "reply",
    [
        httpx.ConnectError("refused"),
        gated(delta("a"), then=httpx.ReadError("reset")),
        gated(delta("a"), then=httpx.ReadTimeout("slow")),
        gated(delta("a")),
    ],
    ids=["connect", "read_after_text", "timeout_after_text", "idle_after_text"],
)
async def test_stream_errors_chain_no_httpx_exception(make: Make, reply: Any) -> None:
    # S2: the httpx error's request carries the Authorization header.
    engine, script, _ = make(reply, max_retries=0, idle_timeout=0.02)
    with pytest.raises(ArcSagaException) as info:
        await collect(engine.stream(AITask("hi")))
    assert script.requests[0].headers["authorization"].startswith(f"Bearer {TOKEN_STEM}")
    for link in _chain(info.value):
        assert not type(link).__module__.startswith(("httpx", "httpcore")), repr(link)
        assert TOKEN_STEM not in repr(link)
