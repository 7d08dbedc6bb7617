"""CopilotReasoningEngine: an Azure OpenAI (or OpenAI-compatible) chat deployment behind Entra ID.

One call = one ``op_id``, handed to the token provider too (``op_id=`` keyword, when its methods
take it) so that the refresh events a call causes carry it. Each attempt asks the token provider
for a token (retries included: openai-python #1526), within what is left of the call's deadline,
sends the request, and hands any non-2xx answer to
:func:`~saga_magic.core.chat_wire.classify_failure`. Attempts run under the shared
:class:`~saga_magic.core.retry.RetryPolicy` (408/409/429/5xx, timeouts, connection errors;
server waits never shortened; a wait past the deadline fails fast). Outside that budget, once
per call each: a forced token refresh after a 401, and each parameter adaptation a reasoning
deployment asks for (``max_completion_tokens`` instead of ``max_tokens``, no ``temperature``,
no ``stream_options``), remembered for the engine's lifetime. A malformed 200 answer is retried
once. Errors the token provider raises are passed on unchanged (it has its own retry budget).

Attempts are counted in HTTP requests sent: ``attempt`` in ``copilot_retry`` and
``copilot_parse_error`` is the number of requests this call has sent so far (the one that just
failed is the last), the same count as :attr:`AIResult.attempts` and ``error.attempts``.
``max_attempts`` is the most requests the call may send as far as known then: the retry budget
(``max_retries + 1``) plus the resends outside it used so far (token refresh, adaptations).

Errors the engine raises chain no httpx exception (an httpx error holds the request and so the
``Authorization`` header): transport failures are translated outside the ``except`` block.

Events: ``copilot_request_start`` / ``copilot_stream_start``, ``copilot_retry``,
``copilot_request_adapted``, ``copilot_parse_error``, ``copilot_empty_response``,
``copilot_request_complete`` / ``copilot_stream_complete``, ``copilot_auth_failed``,
``copilot_error``, ``engine_closed``. Prompts and answers appear in events only with
``journal_content=True``; sizes always do. The same switch lets a parse error quote the
malformed 200 answer (otherwise: its size and content type).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx

from .chat_wire import (
    PARSE_ERROR,
    Adaptations,
    ChatEndpoint,
    Completion,
    Failure,
    RawAnswer,
    Remedy,
    build_body,
    build_headers,
    classify_failure,
    parse_completion,
    parse_endpoint,
    request_id_of,
    transport_error,
)
from .config import Settings
from .errors import (
    ArcSagaException,
    AuthenticationError,
    InputValidationError,
    RequestTimeoutError,
    TransientError,
)
from .events import log_with_context, new_op_id
from .protocols import ITokenProvider
from .retry import Clock, RetryEvent, RetryPolicy, Sleep
from .sse import ChatStream, StreamReader, StreamSummary, open_sse
from .types import AIProvider, AIResult, AITask, TokenUsage

__all__ = ["CopilotReasoningEngine"]

_log = logging.getLogger("saga.engine")
T = TypeVar("T")

_ADAPTATIONS = {  # remedy -> (Adaptations flag, rejected parameter, what we do instead)
    Remedy.USE_MAX_COMPLETION_TOKENS: (
        "max_completion_tokens",
        "max_tokens",
        "sending max_completion_tokens instead",
    ),
    Remedy.OMIT_TEMPERATURE: ("omit_temperature", "temperature", "leaving temperature out"),
    Remedy.OMIT_STREAM_OPTIONS: (
        "omit_stream_options",
        "stream_options",
        "leaving stream_options out (no usage counts in streams)",
    ),
}


@dataclass(slots=True)
class _Call:
    """State of one ``reason()`` / ``stream()`` call."""

    task: AITask
    stream: bool
    op_id: str = field(default_factory=new_op_id)
    start: float = 0.0
    deadline_at: float = 0.0
    sends: int = 0
    free_sends: int = 0
    refreshed: bool = False
    opened: bool = False
    remedies: set[Remedy] = field(default_factory=set)
    parse_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    completion: Completion
    request_id: str | None


class _Abort(Exception):
    """Carries an error through the retry loop without a retry."""

    def __init__(self, error: ArcSagaException) -> None:
        super().__init__(error.message)
        self.error = error


def _takes_op_id(method: Callable[..., object]) -> bool:
    """Whether a token provider's method accepts ``op_id=`` (older providers may not)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read: do not risk a TypeError
        return False
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        or (parameter.name == "op_id" and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for parameter in parameters
    )


def _validate(task: AITask) -> None:
    if not task.prompt.strip():
        raise InputValidationError("The prompt is empty", hint="write a question or instruction")
    if task.max_tokens is not None and (
        isinstance(task.max_tokens, bool) or not isinstance(task.max_tokens, int)
    ):
        raise InputValidationError(f"max_tokens must be an integer, got {task.max_tokens!r}")
    if task.max_tokens is not None and task.max_tokens <= 0:
        raise InputValidationError(f"max_tokens must be > 0, got {task.max_tokens}")
    if task.temperature is not None and not 0.0 <= task.temperature <= 2.0:
        raise InputValidationError(f"temperature must be between 0 and 2, got {task.temperature}")


class CopilotReasoningEngine:
    """Answers :class:`AITask` s with a chat-completions deployment, as a signed-in user.

    Args:
        auth_manager: Gives a bearer token per attempt and replaces a rejected one.
        endpoint: Full chat-completions URL (``ARC_SAGA_COPILOT_ENDPOINT``): an Azure deployments
            URL with ``api-version``, an Azure ``/openai/v1/chat/completions`` URL, or any
            OpenAI-compatible ``.../chat/completions``.
        user_id: Whose token to use.
        model: Sent as ``model`` (required by the v1 and OpenAI-compatible shapes).
        http_client: Client to use; the engine creates (and later closes) one when omitted.
        timeout: Seconds one HTTP attempt may take (capped by what is left of ``deadline``).
        deadline: Seconds the whole call may take: token waits, attempts and backoff together.
        max_retries: Retries after the first attempt.
        backoff_base: Factor of the 1, 2, 4, 8, 16 s backoff schedule.
        idle_timeout: Longest silence allowed inside a streaming answer.
        clock: Unix time (injected in tests).
        sleep: Waits between attempts (injected in tests).
        jitter: Extra positive wait per retry (default: up to 10 %, at most 1 s).
        journal_content: Put prompts and answers in events (off: sizes only).

    Raises:
        ConfigurationError: the endpoint is not https (http only to loopback), not a
            chat-completions URL, lacks ``api-version`` (deployments shape) or needs ``model``.
        ValueError: ``timeout``, ``deadline`` or ``idle_timeout`` is not a finite number > 0,
            ``user_id`` is empty, or ``max_retries`` / ``backoff_base`` is negative.
    """

    def __init__(
        self,
        auth_manager: ITokenProvider,
        *,
        endpoint: str,
        user_id: str = "default",
        model: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
        deadline: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        idle_timeout: float = 30.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float], float] | None = None,
        journal_content: bool = False,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("deadline", deadline),
            ("idle_timeout", idle_timeout),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not user_id:
            raise ValueError("user_id must not be empty")
        self._endpoint = parse_endpoint(endpoint, model=model)
        policy_options: dict[str, Any] = {"jitter": jitter} if jitter is not None else {}
        self._policy = RetryPolicy(
            max_retries=max_retries, backoff_base=backoff_base, **policy_options
        )
        self._auth = auth_manager
        self._get_takes_op_id = _takes_op_id(auth_manager.get_valid_token)
        self._refresh_takes_op_id = _takes_op_id(auth_manager.force_refresh)
        self._user_id = user_id
        self._timeout = timeout
        self._deadline = deadline
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._sleep = sleep
        self._journal_content = journal_content
        self._adaptations = Adaptations()
        self._owns_client = http_client is None
        self._owns_auth = False
        self._closed = False
        self._client = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        auth_manager: ITokenProvider | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> CopilotReasoningEngine:
        """Build an engine from :class:`Settings` (the environment by default).

        Args:
            settings: The configuration; ``Settings.from_env()`` when omitted.
            auth_manager: Token provider; an ``EntraIDAuthManager`` built from the same settings
                (and closed with the engine) when omitted.
            http_client: HTTP client to use, for the token endpoint too when the auth manager is
                built here (never closed by the engine).

        Returns:
            The engine.

        Raises:
            ConfigurationError: ``ARC_SAGA_COPILOT_ENDPOINT`` is missing or malformed, or the
                auth manager's settings are.
        """
        settings = settings if settings is not None else Settings.from_env()
        settings.require("copilot_endpoint")
        endpoint = str(settings.copilot_endpoint)
        parse_endpoint(endpoint, model=settings.copilot_model)  # fail before building anything
        owns_auth = auth_manager is None
        if auth_manager is None:
            from .auth import EntraIDAuthManager

            auth_manager = EntraIDAuthManager.from_settings(settings, http_client=http_client)
        engine = cls(
            auth_manager,
            endpoint=endpoint,
            user_id=settings.user,
            model=settings.copilot_model,
            http_client=http_client,
            journal_content=settings.journal_content,
        )
        engine._owns_auth = owns_auth
        return engine

    @property
    def endpoint(self) -> ChatEndpoint:
        """The checked endpoint (URL, shape, deployment, model)."""
        return self._endpoint

    @property
    def user_id(self) -> str:
        """Whose token the engine uses."""
        return self._user_id

    @property
    def adaptations(self) -> Adaptations:
        """Request changes learned from the deployment so far (read-only, please)."""
        return self._adaptations

    # ------------------------------------------------------------------ public calls

    async def reason(self, task: AITask) -> AIResult:
        """Answer ``task`` with one chat completion.

        Args:
            task: The prompt, with optional system prompt, history, ``max_tokens`` and
                ``temperature``.

        Returns:
            The answer; ``finish_reason`` ``length`` or ``content_filter`` and an empty text
            are results (with a ``copilot_empty_response`` warning for the latter).

        Raises:
            InputValidationError: the task is invalid (before any HTTP), or the server refused
                its content (400, 413, 422, context length, content filter).
            AuthenticationError: the token was refused even after a forced refresh, or the
                token provider needs a new sign-in.
            PermissionDeniedError: 403, or ``PermissionDenied`` (role missing).
            ConfigurationError: 404, unsupported parameters or api-version.
            RateLimitError: still throttled at the end of the budget, or the server's wait
                passes the deadline (fail fast).
            RequestTimeoutError: 408 / 504 / client timeouts to the end of the budget, or no
                token from the provider before the deadline (code ``deadline``).
            TransientError: 5xx, connection errors, malformed 200 answers (after one retry).
            RuntimeError: the engine is closed.
        """
        self._check_open()
        _validate(task)
        call = _Call(task=task, stream=False)
        self._begin(call, "copilot_request_start")
        try:
            answer = await self._run(call, self._post)
        except ArcSagaException as error:
            self._report_failure(call, error)
            raise
        completion = answer.completion
        return self._finish(
            call,
            "copilot_request_complete",
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            model=completion.model,
            request_id=answer.request_id,
            filtered=completion.filtered,
        )

    def stream(self, task: AITask) -> ChatStream:
        """Answer ``task`` as a stream of text deltas (SSE).

        Nothing is sent until the first ``__anext__``. Failures before the first delta are
        retried like :meth:`reason`; after it, they are raised with ``partial_text`` set.

        Args:
            task: As for :meth:`reason`.

        Returns:
            An async iterator of text deltas; ``.result`` holds the :class:`AIResult` once it
            ends. Use ``async with`` (or ``aclose()``) when stopping early.

        Raises:
            InputValidationError: the task is invalid (raised here, at once).
            RuntimeError: the engine is closed (also raised by the first ``__anext__`` when it was
                closed after this call).
        """
        self._check_open()
        _validate(task)
        call = _Call(task=task, stream=True)

        async def opener() -> StreamReader:
            self._check_open()
            self._begin(call, "copilot_stream_start")
            reader = await self._run(call, self._open_stream)
            call.opened = True  # the first delta is in: what fails from now on is not retried
            return reader

        return ChatStream(
            opener,
            on_complete=functools.partial(self._stream_complete, call),
            on_error=functools.partial(self._stream_failed, call),
        )

    async def close(self) -> None:
        """Close the HTTP client (and auth manager) if the engine created them; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()
        if self._owns_auth:
            closer = getattr(self._auth, "close", None)
            if closer is not None:
                await closer()
        log_with_context(
            _log,
            logging.INFO,
            "engine_closed",
            user_id=self._user_id,
            owned_client=self._owns_client,
        )

    async def __aenter__(self) -> CopilotReasoningEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ attempts

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("engine is closed: create a new CopilotReasoningEngine")

    async def _run(
        self,
        call: _Call,
        send: Callable[[_Call, dict[str, str], bytes, float], Awaitable[T | RawAnswer]],
    ) -> T:
        async def attempt(_number: int) -> T:
            return await self._attempt(call, send)

        error: ArcSagaException
        try:
            return await self._policy.run(
                attempt,
                deadline_at=call.deadline_at,
                clock=self._clock,
                sleep=self._sleep,
                on_retry=functools.partial(self._on_retry, call),
            )
        except _Abort as abort:
            error = abort.error
        except ArcSagaException as caught:
            caught.attempts = call.sends
            error = caught
        raise error

    def _ask_token(self, call: _Call, rejected: str | None) -> Awaitable[str]:
        if rejected is None:
            if self._get_takes_op_id:
                return self._auth.get_valid_token(self._user_id, op_id=call.op_id)
            return self._auth.get_valid_token(self._user_id)
        if self._refresh_takes_op_id:
            return self._auth.force_refresh(
                self._user_id, rejected_token=rejected, op_id=call.op_id
            )
        return self._auth.force_refresh(self._user_id, rejected_token=rejected)

    async def _token(self, call: _Call, *, rejected: str | None = None) -> str:
        """A token (a replacement for ``rejected`` if given) within what is left of the deadline.

        Leaving at the deadline cancels only this call's wait: a provider that shares one refresh
        among callers (the auth manager does) keeps it running for the others.
        """
        remaining = call.deadline_at - self._clock()
        if remaining > 0:
            budget = asyncio.timeout(remaining)
            try:
                async with budget:
                    return await self._ask_token(call, rejected)
            except ArcSagaException as error:  # before TimeoutError: RequestTimeoutError is one
                raise _Abort(error) from None
            except TimeoutError:
                if not budget.expired():
                    raise
        raise _Abort(
            RequestTimeoutError(
                f"No access token before the call's deadline ({self._deadline:g} s)",
                code="deadline",
                attempts=call.sends,
                hint="the token endpoint is slow or unreachable; try again",
            )
        )

    async def _attempt(
        self,
        call: _Call,
        send: Callable[[_Call, dict[str, str], bytes, float], Awaitable[T | RawAnswer]],
    ) -> T:
        self._check_open()  # closed during a backoff wait: say so before httpx is touched
        token = await self._token(call)
        while True:
            remaining = call.deadline_at - self._clock()
            if remaining <= 0:
                raise RequestTimeoutError("The call's deadline passed", code="deadline")
            self._check_open()
            body = build_body(
                call.task,
                model=self._endpoint.model,
                stream=call.stream,
                adaptations=self._adaptations,
            )
            client_request_id = str(uuid.uuid4())
            headers = build_headers(token, client_request_id, stream=call.stream)
            call.sends += 1
            answer = await self._send(call, send, headers, body, min(self._timeout, remaining))
            if not isinstance(answer, RawAnswer):
                return answer
            failure = classify_failure(
                answer.status,
                answer.headers,
                answer.content,
                now=self._clock(),
                client_request_id=client_request_id,
            )
            if failure.remedy is Remedy.FORCE_REFRESH and not call.refreshed:
                call.refreshed = True
                call.free_sends += 1
                self._retry_now(call, failure, "token_rejected")
                token = await self._token(call, rejected=token)
                continue
            if failure.remedy in _ADAPTATIONS and failure.remedy not in call.remedies:
                call.remedies.add(failure.remedy)
                call.free_sends += 1
                self._adapt(call, failure)
                continue
            raise failure.error

    async def _send(
        self,
        call: _Call,
        send: Callable[[_Call, dict[str, str], bytes, float], Awaitable[T | RawAnswer]],
        headers: dict[str, str],
        body: dict[str, Any],
        wait_limit: float,
    ) -> T | RawAnswer:
        failed: TransientError | None = None
        try:
            return await send(call, headers, json.dumps(body).encode(), wait_limit)
        except httpx.HTTPError as exc:
            failed = transport_error(exc)  # raised below, outside the handler: see the module
        except TransientError as error:
            if error.code == PARSE_ERROR:
                self._parse_error(call, error)
            raise
        raise failed

    async def _post(
        self, call: _Call, headers: dict[str, str], content: bytes, wait_limit: float
    ) -> _Answer | RawAnswer:
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(wait_limit):  # bounds trickled bodies too (httpx #1450)
                response = await self._client.post(
                    self._endpoint.url, headers=headers, content=content, timeout=wait_limit
                )
        except TimeoutError:
            pass  # raised below, outside the handler: nothing chained
        if response is None:
            raise RequestTimeoutError(f"No complete answer within {wait_limit:g} s", code="timeout")
        if not response.is_success:
            return RawAnswer(response.status_code, response.headers, response.content)
        request_id = request_id_of(response.headers)
        try:
            completion = parse_completion(
                response.content,
                content_type=response.headers.get("content-type", ""),
                preview=self._journal_content,
            )
        except TransientError as error:
            error.status = response.status_code
            error.request_id = request_id
            raise
        return _Answer(completion, request_id)

    async def _open_stream(
        self, call: _Call, headers: dict[str, str], content: bytes, wait_limit: float
    ) -> StreamReader | RawAnswer:
        answer = await open_sse(
            self._client,
            self._endpoint.url,
            headers=headers,
            content=content,
            wait_limit=wait_limit,
            idle_timeout=self._idle_timeout,
            deadline_at=call.deadline_at,
            clock=self._clock,
            previews=self._journal_content,
        )
        if isinstance(answer, StreamReader):
            try:
                await answer.prefetch()
            except BaseException:
                await answer.aclose()
                raise
        return answer

    # ------------------------------------------------------------------ events

    def _emit(self, call: _Call, level: int, event: str, **context: Any) -> None:
        log_with_context(
            _log,
            level,
            event,
            user_id=self._user_id,
            op_id=call.op_id,
            task_id=call.task.task_id,
            **context,
        )

    def _begin(self, call: _Call, event: str) -> None:
        call.start = self._clock()
        call.deadline_at = call.start + self._deadline
        task = call.task
        context: dict[str, Any] = {
            "endpoint_host": self._endpoint.host,
            "endpoint_shape": self._endpoint.shape.value,
            "deployment": self._endpoint.deployment,
            "model": self._endpoint.model,
            "prompt_chars": len(task.prompt),
            "system_chars": len(task.system_prompt or ""),
            "history_turns": len(task.history),
            "max_tokens": task.max_tokens,
            "temperature": task.temperature,
            "deadline_s": self._deadline,
        }
        if self._journal_content:
            context["prompt"] = task.prompt
            context["system_prompt"] = task.system_prompt
        self._emit(call, logging.INFO, event, **context)

    def _max_sends(self, call: _Call) -> int:
        return self._policy.max_attempts + call.free_sends

    def _on_retry(self, call: _Call, retry: RetryEvent) -> None:
        self._emit(
            call,
            logging.WARNING,
            "copilot_retry",
            attempt=call.sends,  # not retry.attempt: requests sent, as everywhere (see module)
            max_attempts=self._max_sends(call),
            wait_s=round(retry.wait_s, 3),
            next_attempt_at=retry.next_attempt_at,
            reason=retry.reason,
            **retry.error.context(),
        )

    def _retry_now(self, call: _Call, failure: Failure, reason: str) -> None:
        self._emit(
            call,
            logging.WARNING,
            "copilot_retry",
            attempt=call.sends,
            max_attempts=self._max_sends(call),
            wait_s=0.0,
            next_attempt_at=self._clock(),
            reason=reason,
            **failure.error.context(),
        )

    def _adapt(self, call: _Call, failure: Failure) -> None:
        flag, parameter, instead = _ADAPTATIONS[failure.remedy]
        setattr(self._adaptations, flag, True)
        self._emit(
            call,
            logging.WARNING,
            "copilot_request_adapted",
            parameter=parameter,
            adaptation=flag,
            message=(
                f"the deployment rejected {parameter!r}; resending now and from now on {instead}"
            ),
            **failure.error.context(),
        )

    def _parse_error(self, call: _Call, error: TransientError) -> None:
        call.parse_errors += 1
        final = call.parse_errors >= 2
        self._emit_parse_error(call, error, will_retry=not final)
        if final:
            error.attempts = call.sends
            raise _Abort(error)

    def _emit_parse_error(self, call: _Call, error: ArcSagaException, *, will_retry: bool) -> None:
        self._emit(
            call,
            logging.WARNING,
            "copilot_parse_error",
            attempt=call.sends,
            max_attempts=self._max_sends(call),
            detail=error.message,
            will_retry=will_retry,
            **error.context(),
        )

    def _report_failure(self, call: _Call, error: ArcSagaException) -> None:
        event = "copilot_auth_failed" if isinstance(error, AuthenticationError) else "copilot_error"
        partial = getattr(error, "partial_text", None)
        self._emit(
            call,
            logging.ERROR,
            event,
            error=type(error).__name__,
            message=error.message,
            hint=error.hint,
            latency_ms=round((self._clock() - call.start) * 1000, 3),
            token_refreshed=call.refreshed,
            partial_chars=len(partial) if partial else None,
            **error.context(),
        )

    def _stream_failed(self, call: _Call, error: ArcSagaException) -> None:
        if error.attempts is None:
            error.attempts = call.sends
        if call.opened and error.code == PARSE_ERROR:  # after the first delta: never retried
            self._emit_parse_error(call, error, will_retry=False)
        self._report_failure(call, error)

    def _stream_complete(self, call: _Call, summary: StreamSummary) -> AIResult:
        return self._finish(
            call,
            "copilot_stream_complete",
            text=summary.text,
            finish_reason=summary.finish_reason,
            usage=summary.usage,
            model=summary.model,
            request_id=summary.request_id,
            filtered=summary.filtered,
        )

    def _finish(
        self,
        call: _Call,
        event: str,
        *,
        text: str,
        finish_reason: str | None,
        usage: TokenUsage,
        model: str | None,
        request_id: str | None,
        filtered: tuple[str, ...],
    ) -> AIResult:
        latency_ms = (self._clock() - call.start) * 1000
        result = AIResult(
            response_text=text,
            finish_reason=finish_reason,
            usage=usage,
            provider=AIProvider.COPILOT_CHAT,
            task_id=call.task.task_id,
            latency_ms=latency_ms,
            request_id=request_id,
            model=model,
            attempts=call.sends,
        )
        if not text:
            note = (
                "the answer hit the token limit before any text: reasoning consumed the "
                "budget; raise max_tokens"
                if finish_reason == "length"
                else "the server returned no text"
            )
            self._emit(
                call,
                logging.WARNING,
                "copilot_empty_response",
                finish_reason=finish_reason,
                request_id=request_id,
                note=note,
                filtered=list(filtered) or None,
            )
        context: dict[str, Any] = {
            "latency_ms": round(latency_ms, 3),
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            },
            "finish_reason": finish_reason,
            "request_id": request_id,
            "attempts": call.sends,
            "model": model,
            "response_chars": len(text),
            "filtered": list(filtered) or None,
        }
        if self._journal_content:
            context["response"] = text
        self._emit(call, logging.INFO, event, **context)
        return result
