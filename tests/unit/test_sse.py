"""The SSE layer on its own: the idle watch, open_sse, StreamReader and ChatStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saga_magic.core.chat_wire import Completion, RawAnswer
from saga_magic.core.errors import (
    ArcSagaException,
    ConfigurationError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.sse import ChatStream, StreamReader, StreamSummary, open_sse, watch_idle
from saga_magic.core.types import AIProvider, AIResult, TokenUsage

URL = "http://127.0.0.1:9/v1/chat/completions"
SSE = {"content-type": "text/event-stream"}


class Chunks(httpx.AsyncByteStream):
    """A streamed body: each part after ``gap`` seconds of real time."""

    def __init__(self, *parts: bytes, gap: float = 0.0) -> None:
        self.parts = parts
        self.gap = gap
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            await asyncio.sleep(self.gap)
            yield part

    async def aclose(self) -> None:
        self.closed = True


def _clock() -> float:
    return 1000.0


async def _read_all(response: httpx.Response) -> bytes:
    return b"".join([part async for part in response.aiter_raw()])


async def test_watch_idle_passes_a_complete_body() -> None:
    body = Chunks(b"a", b"b", b"c")
    response = httpx.Response(200, stream=body)
    watch_idle(response, idle_timeout=1.0, deadline_at=2000.0, clock=_clock)
    assert await _read_all(response) == b"abc"
    assert body.closed


async def test_watch_idle_gap() -> None:
    response = httpx.Response(200, stream=Chunks(b"a", b"b", gap=0.05))
    watch_idle(response, idle_timeout=0.01, deadline_at=2000.0, clock=_clock)
    with pytest.raises(RequestTimeoutError, match="silent") as info:
        await _read_all(response)
    assert info.value.code == "idle_timeout"


async def test_watch_idle_deadline() -> None:
    response = httpx.Response(200, stream=Chunks(b"a", gap=0.05))
    watch_idle(response, idle_timeout=10.0, deadline_at=1000.01, clock=_clock)
    with pytest.raises(RequestTimeoutError, match="deadline"):
        await _read_all(response)
    past = httpx.Response(200, stream=Chunks(b"a"))
    watch_idle(past, idle_timeout=10.0, deadline_at=999.0, clock=_clock)
    with pytest.raises(RequestTimeoutError, match="deadline"):
        await _read_all(past)


def _events(*payloads: Any) -> bytes:
    return b"".join(
        b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n"
        for p in payloads
    )


async def _open(handler: Any, **options: Any) -> StreamReader | RawAnswer:
    options.setdefault("wait_limit", 5.0)
    options.setdefault("idle_timeout", 5.0)
    options.setdefault("deadline_at", 2000.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        answer = await open_sse(
            client,
            URL,
            headers={"Authorization": "Bearer x"},
            content=b"{}",
            clock=_clock,
            **options,
        )
        if isinstance(answer, StreamReader):
            await answer.aclose()
        return answer


async def test_open_sse_sends_sse_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Chunks(_events(b"[DONE]")), headers=SSE)

    answer = await _open(handler)
    assert isinstance(answer, StreamReader)
    assert seen[0].headers["accept"] == "text/event-stream"
    assert seen[0].headers["cache-control"] == "no-store"
    assert seen[0].headers["authorization"] == "Bearer x"


async def test_open_sse_error_status_read_whole() -> None:
    body = Chunks(b'{"error":', b'{"code":"x"}}')
    answer = await _open(lambda request: httpx.Response(503, stream=body))
    assert isinstance(answer, RawAnswer)
    assert answer.status == 503
    assert answer.content == b'{"error":{"code":"x"}}'
    assert body.closed
    assert "content" not in repr(answer)


async def test_open_sse_no_headers_in_time() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with pytest.raises(RequestTimeoutError, match="no answer"):
        await _open(never, wait_limit=0.02)


async def test_open_sse_json_fallback_parse_error_is_stamped() -> None:
    reply = httpx.Response(200, json={"choices": []}, headers={"x-request-id": "r9"})
    with pytest.raises(TransientError) as info:
        await _open(lambda request: reply)
    assert info.value.code == "parse_error"
    assert (info.value.status, info.value.request_id) == (200, "r9")


async def test_open_sse_transport_error_propagates() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(httpx.ConnectError):
        await _open(boom)


async def test_reader_eof_after_finish_on_a_streamed_body() -> None:
    finish = {"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}
    body = Chunks(
        _events(finish), b": ping\n\n", _events({"choices": [], "usage": {"total_tokens": 3}})
    )
    response = httpx.Response(200, stream=body, headers=SSE)
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: response)) as client:
        reader = await open_sse(
            client,
            URL,
            headers={},
            content=b"{}",
            wait_limit=5.0,
            idle_timeout=5.0,
            deadline_at=2000.0,
            clock=_clock,
        )
        assert isinstance(reader, StreamReader)
        await reader.prefetch()
        assert await reader.next_delta() == "x"
        assert await reader.next_delta() is None
        assert await reader.next_delta() is None
        summary = reader.summary()
        await reader.aclose()
    assert summary == StreamSummary(
        text="x",
        finish_reason="stop",
        usage=TokenUsage(0, 0, 3),
        model=None,
        request_id=None,
        filtered=(),
    )
    assert body.closed


async def test_reader_replays_a_whole_completion() -> None:
    completion = Completion(
        text="all", finish_reason="stop", usage=TokenUsage(1, 1, 2), model="m", filtered=("x",)
    )
    reader = StreamReader(contextlib.AsyncExitStack(), None, request_id="r", completion=completion)
    await reader.prefetch()
    assert await reader.next_delta() == "all"
    assert await reader.next_delta() is None
    assert reader.summary().filtered == ("x",)
    await reader.aclose()


# --------------------------------------------------------------------------- ChatStream


def _result(summary: StreamSummary) -> AIResult:
    return AIResult(
        response_text=summary.text,
        finish_reason=summary.finish_reason,
        usage=summary.usage,
        provider=AIProvider.COPILOT_CHAT,
        task_id="t",
        latency_ms=0.0,
    )


async def test_chat_stream_reports_opener_failure_once() -> None:
    reported: list[ArcSagaException] = []

    async def opener() -> StreamReader:
        raise ConfigurationError("bad endpoint")

    stream = ChatStream(opener, on_complete=_result, on_error=reported.append)
    with pytest.raises(ConfigurationError):
        await anext(stream)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert [type(e) for e in reported] == [ConfigurationError]
    assert stream.text == ""


async def test_chat_stream_transient_opener_failure_has_no_partial_text() -> None:
    reported: list[ArcSagaException] = []

    async def opener() -> StreamReader:
        raise TransientError("down")

    stream = ChatStream(opener, on_complete=_result, on_error=reported.append)
    with pytest.raises(TransientError) as info:
        await anext(stream)
    assert info.value.partial_text is None
    assert len(reported) == 1


async def test_chat_stream_unexpected_error_closes_without_report() -> None:
    reported: list[ArcSagaException] = []

    async def opener() -> StreamReader:
        raise KeyError("bug")

    stream = ChatStream(opener, on_complete=_result, on_error=reported.append)
    with pytest.raises(KeyError):
        await anext(stream)
    assert reported == []
    assert [piece async for piece in stream] == []


async def test_chat_stream_result_after_the_end() -> None:
    completion = Completion(text="hey", finish_reason="stop", usage=TokenUsage())

    async def opener() -> StreamReader:
        return StreamReader(
            contextlib.AsyncExitStack(), None, request_id=None, completion=completion
        )

    stream = ChatStream(opener, on_complete=_result, on_error=lambda error: None)
    assert aiter(stream) is stream
    assert [piece async for piece in stream] == ["hey"]
    assert stream.result is not None
    assert stream.result.response_text == "hey"
    assert stream.text == "hey"


# ---------------------------------------------------------------- nothing chained, no previews


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


class Raising(httpx.AsyncByteStream):
    """Sends ``parts``, then raises ``error``."""

    def __init__(self, *parts: bytes, error: Exception) -> None:
        self.parts = parts
        self.error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        raise self.error


@contextlib.asynccontextmanager
async def _reader(stream: httpx.AsyncByteStream, **options: Any) -> AsyncIterator[StreamReader]:
    reply = httpx.Response(200, stream=stream, headers=SSE)
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: reply)) as client:
        reader = await open_sse(
            client,
            URL,
            headers={"Authorization": "Bearer opaque0Canary0Sse0Token0"},
            content=b"{}",
            wait_limit=5.0,
            idle_timeout=5.0,
            deadline_at=2000.0,
            clock=_clock,
            **options,
        )
        assert isinstance(reader, StreamReader)
        try:
            yield reader
        finally:
            await reader.aclose()


async def test_reader_transport_error_chains_no_httpx_error() -> None:
    # S2: the httpx error's request holds the Authorization header.
    delta = {"choices": [{"delta": {"content": "a"}}]}
    async with _reader(Raising(_events(delta), error=httpx.ReadError("reset"))) as reader:
        assert await reader.next_delta() == "a"
        with pytest.raises(TransientError, match="ReadError") as info:
            await reader.next_delta()
    assert info.value.code == "connection"
    assert _chain(info.value) == [info.value]


async def test_idle_and_deadline_errors_chain_nothing() -> None:
    response = httpx.Response(200, stream=Chunks(b"a", b"b", gap=0.05))
    watch_idle(response, idle_timeout=0.01, deadline_at=2000.0, clock=_clock)
    with pytest.raises(RequestTimeoutError) as idle:
        await _read_all(response)
    late = httpx.Response(200, stream=Chunks(b"a", gap=0.05))
    watch_idle(late, idle_timeout=10.0, deadline_at=1000.01, clock=_clock)
    with pytest.raises(RequestTimeoutError) as deadline:
        await _read_all(late)
    assert _chain(idle.value) == [idle.value]
    assert _chain(deadline.value) == [deadline.value]


async def test_open_sse_timeout_chains_nothing() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with pytest.raises(RequestTimeoutError) as info:
        await _open(never, wait_limit=0.02)
    assert _chain(info.value) == [info.value]


async def test_reader_quotes_a_malformed_event_only_on_request() -> None:
    # S4: an SSE payload carries answer text.
    bad = b'data: {"choices": [{"delta": {"content": "meet at dawn\n\n'
    async with _reader(Chunks(bad)) as quiet, _reader(Chunks(bad), previews=True) as shown:
        with pytest.raises(TransientError) as hidden:
            await quiet.next_delta()
        with pytest.raises(TransientError, match="meet at dawn"):
            await shown.next_delta()
    assert "dawn" not in str(hidden.value)
    assert hidden.value.code == "parse_error"


async def test_open_sse_json_fallback_quotes_only_on_request() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"answer": "meet at dawn', headers={"x": "y"})

    with pytest.raises(TransientError) as hidden:
        await _open(reply)
    with pytest.raises(TransientError, match="meet at dawn"):
        await _open(reply, previews=True)
    assert "dawn" not in str(hidden.value)
    assert "24 bytes" in hidden.value.message
