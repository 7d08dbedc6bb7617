"""Streaming chat answers: SSE reading on ``httpx-sse``, and the :class:`ChatStream` iterator.

``httpx-sse`` decodes the wire (WHATWG rules: ``:`` comments, ``event:``/``id:``/``retry:``
fields, multi-line ``data:``, ``\\r\\n``); :func:`~saga_magic.core.chat_wire.parse_stream_event`
reads each payload; :class:`StreamReader` applies the end-of-stream rules of PROTOCOLS.md 2.8:

* ``[DONE]`` or a ``finish_reason`` ends the answer well (a finish chunk is followed by annotation
  and usage chunks, so reading goes on until ``[DONE]`` or EOF);
* EOF with neither is a truncation (:class:`TransientError`, code ``truncated``), not success;
* an idle gap longer than ``idle_timeout`` between received bytes (keep-alive comments count as
  activity) or the call's deadline raises :class:`RequestTimeoutError`.

Errors raised here chain nothing (no ``__cause__`` or ``__context__``): an httpx exception holds
the request and its ``Authorization`` header, a timeout chain the frames that sent it.

:class:`ChatStream` is what the engine hands out: an async iterator of text deltas. The engine's
opener (run under the retry policy) returns a reader that already holds the first delta, so
everything before the first delta is retried and nothing after it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import httpx
from httpx_sse import EventSource, ServerSentEvent

from .chat_wire import (
    Completion,
    RawAnswer,
    StreamChunk,
    parse_completion,
    parse_stream_event,
    request_id_of,
    transport_error,
)
from .errors import ArcSagaException, RequestTimeoutError, TransientError
from .retry import Clock
from .types import AIResult, TokenUsage

__all__ = ["ChatStream", "StreamReader", "StreamSummary", "open_sse", "watch_idle"]


class _IdleWatch(httpx.AsyncByteStream):
    """Wraps a response's byte stream: each read must bring bytes within the idle timeout."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        *,
        idle_timeout: float,
        deadline_at: float,
        clock: Clock,
    ) -> None:
        self._inner = inner
        self._idle_timeout = idle_timeout
        self._deadline_at = deadline_at
        self._clock = clock

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        while True:
            left = self._deadline_at - self._clock()
            if left <= 0:
                raise RequestTimeoutError(
                    "The chat stream did not finish before the call's deadline", code="deadline"
                )
            limit = min(self._idle_timeout, left)
            chunk: bytes | None = None
            try:
                async with asyncio.timeout(limit):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                pass  # raised below, outside the handler
            if chunk is None:
                if limit < self._idle_timeout:
                    raise RequestTimeoutError(
                        "The chat stream did not finish before the call's deadline",
                        code="deadline",
                    )
                raise RequestTimeoutError(
                    f"The chat stream was silent for more than {self._idle_timeout:g} s",
                    code="idle_timeout",
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def watch_idle(
    response: httpx.Response, *, idle_timeout: float, deadline_at: float, clock: Clock
) -> None:
    """Bound the gaps between a streaming response's reads, and its end, before reading it.

    Args:
        response: A response opened with ``stream=True`` whose body is not read yet.
        idle_timeout: Longest silence allowed between received bytes, in seconds.
        deadline_at: Unix time (``clock``) by which the body must be complete.
        clock: The engine's clock.
    """
    response.stream = _IdleWatch(
        cast(httpx.AsyncByteStream, response.stream),  # an AsyncClient's response
        idle_timeout=idle_timeout,
        deadline_at=deadline_at,
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """How a finished stream ended (the engine builds the :class:`AIResult` from it)."""

    text: str
    """All deltas joined."""
    finish_reason: str | None
    """The last ``finish_reason`` seen (``None`` when ``[DONE]`` came without one)."""
    usage: TokenUsage
    """From the usage chunk; zeros when the server sent none."""
    model: str | None
    """Model the chunks named."""
    request_id: str | None
    """Server request id of the streaming answer."""
    filtered: tuple[str, ...]
    """Content-filter categories flagged in any chunk."""


class StreamReader:
    """Reads text deltas from one open SSE answer.

    Args:
        stack: Holds the open response; closed by :meth:`aclose`.
        source: The ``httpx-sse`` event source of a ``text/event-stream`` answer, or ``None``
            with ``completion`` for a server that answered plain JSON despite ``stream: true``.
        request_id: Server request id of the answer.
        completion: A whole non-streaming answer to replay as one delta.
        previews: Quote a malformed event in its parse error (only with ``journal_content``).
    """

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        source: EventSource | None,
        *,
        request_id: str | None,
        completion: Completion | None = None,
        previews: bool = False,
    ) -> None:
        self._stack = stack
        self._previews = previews
        self._events: AsyncIterator[ServerSentEvent] | None = (
            source.aiter_sse() if source is not None else None
        )
        self.request_id = request_id
        """Server request id of the answer."""
        self._pending: list[str] = []
        self._parts: list[str] = []
        self._finish_reason: str | None = None
        self._usage: TokenUsage | None = None
        self._model: str | None = None
        self._filtered: set[str] = set()
        self._ended = False
        if completion is not None:
            self._take(
                StreamChunk(
                    delta=completion.text,
                    finish_reason=completion.finish_reason,
                    usage=completion.usage,
                    model=completion.model,
                    filtered=completion.filtered,
                )
            )
            self._ended = True

    @property
    def text(self) -> str:
        """Text received so far (the deltas already handed out and the buffered ones)."""
        return "".join(self._parts)

    def summary(self) -> StreamSummary:
        """Describe the answer so far.

        Returns:
            Text, finish reason, usage (zeros if none came), model, request id, filter hits.
        """
        return StreamSummary(
            text=self.text,
            finish_reason=self._finish_reason,
            usage=self._usage or TokenUsage(),
            model=self._model,
            request_id=self.request_id,
            filtered=tuple(sorted(self._filtered)),
        )

    def _take(self, chunk: StreamChunk) -> None:
        if chunk.delta:
            self._parts.append(chunk.delta)
            self._pending.append(chunk.delta)
        self._finish_reason = chunk.finish_reason or self._finish_reason
        self._usage = chunk.usage or self._usage
        self._model = chunk.model or self._model
        self._filtered.update(chunk.filtered)

    def _stamp(self, error: TransientError) -> TransientError:
        error.request_id = error.request_id or self.request_id
        return error

    async def _next_event(self) -> ServerSentEvent | TransientError | None:
        # The next event, None at EOF, or the failure to raise: returned, not raised, so that the
        # caller raises it outside this handler and nothing (no httpx error) is chained to it.
        events = cast(AsyncIterator[ServerSentEvent], self._events)  # set unless _ended
        try:
            return await anext(events)
        except StopAsyncIteration:
            return None
        except TransientError as error:
            return error
        except httpx.HTTPError as error:
            return transport_error(error)

    async def _read_one(self) -> None:
        event = await self._next_event()
        if isinstance(event, TransientError):
            raise self._stamp(event)
        if event is None:
            self._ended = True
            if self._finish_reason is None:
                raise self._stamp(
                    TransientError(
                        "The chat stream ended early, without finish_reason or [DONE]",
                        code="truncated",
                    )
                )
            return
        if not event.data:
            return
        try:
            chunk = parse_stream_event(event.data, preview=self._previews)
        except TransientError as error:
            raise self._stamp(error) from None
        if chunk.done:
            self._ended = True
        self._take(chunk)

    async def next_delta(self) -> str | None:
        """Return the next non-empty text delta, or ``None`` when the answer ended well.

        Returns:
            A delta, or ``None`` after ``[DONE]`` (or EOF after a ``finish_reason``).

        Raises:
            TransientError: a mid-stream ``error`` event, a truncated stream (code
                ``truncated``), invalid JSON (code ``parse_error``), a broken connection.
            RequestTimeoutError: an idle gap or the deadline.
        """
        while not self._pending:
            if self._ended:
                return None
            await self._read_one()
        return self._pending.pop(0)

    async def prefetch(self) -> None:
        """Read until the first delta is buffered or the answer ends (errors propagate).

        Raises:
            TransientError: as :meth:`next_delta`.
        """
        while not self._pending and not self._ended:
            await self._read_one()

    async def aclose(self) -> None:
        """Close the response (idempotent)."""
        await self._stack.aclose()


async def open_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes,
    wait_limit: float,
    idle_timeout: float,
    deadline_at: float,
    clock: Clock,
    previews: bool = False,
) -> StreamReader | RawAnswer:
    """POST a streaming request and open the answer.

    Args:
        client: The HTTP client.
        url: Chat-completions URL.
        headers: Request headers (``Accept: text/event-stream`` and ``Cache-Control: no-store``
            are set here, as ``httpx_sse.aconnect_sse`` does).
        content: JSON body.
        wait_limit: Seconds allowed until the status and headers arrive (and per socket read).
        idle_timeout: Longest silence allowed while the body arrives.
        deadline_at: Unix time (``clock``) by which the whole answer must be in.
        clock: The engine's clock.
        previews: Quote malformed answers in parse errors (only with ``journal_content``).

    Returns:
        A reader for a 2xx answer (an event stream, or a whole JSON answer from a server that
        ignored ``stream: true``), else the non-2xx answer read whole, to classify.

    Raises:
        RequestTimeoutError: no headers within ``wait_limit``, or the error body stalled.
        TransientError: code ``parse_error`` for a 2xx answer that is neither SSE nor JSON.
        httpx.HTTPError: the request could not be sent (the caller translates it).
    """
    stack = contextlib.AsyncExitStack()
    try:
        request = client.build_request(
            "POST",
            url,
            headers={**headers, "Accept": "text/event-stream", "Cache-Control": "no-store"},
            content=content,
            timeout=wait_limit,
        )
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(wait_limit):
                response = await client.send(request, stream=True)
        except TimeoutError:
            pass  # raised below, outside the handler
        if response is None:
            raise RequestTimeoutError(
                f"The chat endpoint sent no answer within {wait_limit:g} s", code="timeout"
            )
        stack.push_async_callback(response.aclose)
        watch_idle(response, idle_timeout=idle_timeout, deadline_at=deadline_at, clock=clock)
        if not response.is_success:
            body = await response.aread()
            await stack.aclose()
            return RawAnswer(response.status_code, response.headers, body)
        request_id = request_id_of(response.headers)
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" in content_type:
            return StreamReader(
                stack, EventSource(response), request_id=request_id, previews=previews
            )
        body = await response.aread()
        await stack.aclose()
        try:
            completion = parse_completion(body, content_type=content_type, preview=previews)
        except TransientError as error:
            error.status = response.status_code
            error.request_id = request_id
            raise
        return StreamReader(
            contextlib.AsyncExitStack(), None, request_id=request_id, completion=completion
        )
    except BaseException:
        await stack.aclose()
        raise


class ChatStream:
    """An answer arriving as text deltas: ``async for delta in engine.stream(task)``.

    After the iteration ends, :attr:`result` holds the :class:`AIResult`. Errors before the first
    delta have already been retried by the engine; after it, they are raised with
    ``partial_text`` set and never retried. Use ``async with`` or call :meth:`aclose` when you
    stop early.

    Args:
        opener: Opens the answer (retrying as the engine's policy says) and returns a reader
            holding the first delta.
        on_complete: Builds the result from the summary (and emits the completion event).
        on_error: Told about the failure that ends the stream (emits the error event).
    """

    def __init__(
        self,
        opener: Callable[[], Awaitable[StreamReader]],
        *,
        on_complete: Callable[[StreamSummary], AIResult],
        on_error: Callable[[ArcSagaException], None],
    ) -> None:
        self._opener = opener
        self._on_complete = on_complete
        self._on_error = on_error
        self._reader: StreamReader | None = None
        self._finished = False
        self._result: AIResult | None = None

    @property
    def result(self) -> AIResult | None:
        """The complete answer, once the iteration has ended (``None`` before, or on failure)."""
        return self._result

    @property
    def text(self) -> str:
        """Text received so far."""
        return self._reader.text if self._reader is not None else ""

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._reader is None:
                self._reader = await self._opener()
            delta = await self._reader.next_delta()
        except TransientError as error:
            if self.text:
                error.partial_text = self.text
            await self._fail(error)
            raise
        except ArcSagaException as error:
            await self._fail(error)
            raise
        except BaseException:
            await self.aclose()
            raise
        if delta is not None:
            return delta
        await self.aclose()
        self._result = self._on_complete(self._reader.summary())
        raise StopAsyncIteration

    async def _fail(self, error: ArcSagaException) -> None:
        await self.aclose()
        self._on_error(error)

    async def aclose(self) -> None:
        """Stop reading and close the connection (idempotent)."""
        self._finished = True
        if self._reader is not None:
            await self._reader.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
