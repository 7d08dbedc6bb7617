"""The HTTP boundary of the chat endpoint: URLs, request bodies, and answers turned into types.

This is the only module that looks inside chat answers (PROTOCOLS.md sections 2.1-2.8):

* :func:`parse_endpoint` checks ``ARC_SAGA_COPILOT_ENDPOINT`` and tells its shape (Azure
  deployments path, Azure v1, OpenAI-compatible).
* :func:`build_body` / :func:`build_headers` write a request.
* :func:`classify_failure` turns a non-2xx answer (error shapes A, B and C) into the exception the
  caller raises, plus a :class:`Remedy` the engine may try once first (token refresh, parameter
  adaptation).
* :func:`parse_completion` and :func:`parse_stream_event` read 200 bodies and SSE ``data:``
  payloads defensively; anything malformed becomes a :class:`TransientError` with code
  ``parse_error``.

Nothing here keeps a raw body. Error answers are previewed through
:func:`~saga_magic.core.events.safe_text` (redacted, shortened) only after the full text has been
read for what the code needs (``retry after N seconds``, a rejected parameter). A 200 body or SSE
event is the model's answer: a parse error describes it by size and content type, and quotes it
only when the caller asks for previews (the engine does with ``journal_content=True``).
Exceptions raised here chain nothing (no ``__cause__``, no ``__context__``): a JSON decoding
error would carry the whole body.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx

from .config import require_secure_url
from .errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from .events import safe_text, scrub_text
from .retry import parse_retry_after
from .types import AITask, TokenUsage

__all__ = [
    "PARSE_ERROR",
    "Adaptations",
    "ChatEndpoint",
    "Completion",
    "EndpointShape",
    "ErrorBody",
    "Failure",
    "RawAnswer",
    "Remedy",
    "StreamChunk",
    "build_body",
    "build_headers",
    "classify_failure",
    "parse_completion",
    "parse_endpoint",
    "parse_error_body",
    "parse_stream_event",
    "parse_usage",
    "request_id_of",
    "transport_error",
]

ENDPOINT_SETTING = "ARC_SAGA_COPILOT_ENDPOINT"
MODEL_SETTING = "ARC_SAGA_COPILOT_MODEL"
PARSE_ERROR = "parse_error"
"""``code`` of the :class:`TransientError` raised for a malformed 200 answer or SSE event."""

_DEPLOYMENTS_PATH = re.compile(r"/openai/deployments/([^/]+)/chat/completions$")
_ROLE_HINT = (
    "assign the role 'Cognitive Services OpenAI User' on the resource to the signed-in "
    "principal; a new assignment can take ~5 min to apply"
)
_MESSAGE_LIMIT = 160  # a server message in an exception
_SHORT_LIMIT = 80  # ids, transport errors and answer previews
_BODY_LIMIT = 100  # a non-JSON error body


# --------------------------------------------------------------------------- endpoint and request


class EndpointShape(enum.StrEnum):
    """The three URL shapes of PROTOCOLS.md 2.1."""

    DEPLOYMENTS = "deployments"
    """``/openai/deployments/{d}/chat/completions?api-version=...``: model in the path."""
    AZURE_V1 = "azure_v1"
    """``/openai/v1/chat/completions``: body ``model`` = deployment name."""
    OPENAI_COMPATIBLE = "openai_compatible"
    """Any other ``.../chat/completions``: body ``model``."""


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """A checked chat-completions URL."""

    url: str
    """The full URL, query included."""
    shape: EndpointShape
    """Which of the three shapes it is."""
    host: str
    """Host name (for events; never the full URL)."""
    deployment: str | None = None
    """Deployment name, for the deployments shape."""
    model: str | None = None
    """``model`` sent in the body, when configured."""


def parse_endpoint(url: str, *, model: str | None = None) -> ChatEndpoint:
    """Check a chat-completions URL and tell its shape.

    Args:
        url: ``ARC_SAGA_COPILOT_ENDPOINT``.
        model: ``ARC_SAGA_COPILOT_MODEL`` (required by the v1 and OpenAI-compatible shapes).

    Returns:
        The checked endpoint.

    Raises:
        ConfigurationError: not https (or http to loopback), not a ``/chat/completions`` URL, a
            deployments URL without ``api-version``, or a shape that needs ``model`` without it.
    """
    require_secure_url(url, setting=ENDPOINT_SETTING)
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path.rstrip("/")
    model = model or None
    deployments = _DEPLOYMENTS_PATH.search(path)
    if deployments:
        if not parse_qs(parts.query).get("api-version"):
            raise ConfigurationError(
                f"{ENDPOINT_SETTING} is an Azure deployments URL without ?api-version=",
                hint=f"append ?api-version=2024-10-21 to {ENDPOINT_SETTING}",
            )
        return ChatEndpoint(
            url=url,
            shape=EndpointShape.DEPLOYMENTS,
            host=host,
            deployment=deployments.group(1),
            model=model,
        )
    if not path.endswith("/chat/completions"):
        raise ConfigurationError(
            f"{ENDPOINT_SETTING} must be a full chat-completions URL ending in /chat/completions",
            hint=(
                f"set {ENDPOINT_SETTING} to https://<resource>.openai.azure.com/openai/deployments/"
                "<deployment>/chat/completions?api-version=2024-10-21"
            ),
        )
    shape = (
        EndpointShape.AZURE_V1
        if path.endswith("/openai/v1/chat/completions")
        else EndpointShape.OPENAI_COMPATIBLE
    )
    if model is None:
        raise ConfigurationError(
            f"{MODEL_SETTING} is not set, and the {shape.value} endpoint needs a model",
            hint=f"set {MODEL_SETTING} to the deployment (or model) name",
        )
    return ChatEndpoint(url=url, shape=shape, host=host, model=model)


@dataclass(slots=True)
class Adaptations:
    """Request changes learned from the deployment's 400 answers, remembered per engine."""

    max_completion_tokens: bool = False
    """Send ``max_completion_tokens`` instead of ``max_tokens`` (reasoning deployments)."""
    omit_temperature: bool = False
    """Leave ``temperature`` out (reasoning deployments accept only the default)."""
    omit_stream_options: bool = False
    """Leave ``stream_options`` out (older api-versions reject it)."""


def build_body(
    task: AITask, *, model: str | None, stream: bool, adaptations: Adaptations
) -> dict[str, Any]:
    """Write the JSON body of a chat-completions request.

    Args:
        task: What to ask; ``system_prompt`` first, then ``history``, then ``prompt``.
        model: ``model`` to send, if configured.
        stream: Ask for an SSE answer (with ``stream_options.include_usage`` unless adapted).
        adaptations: What the deployment told us to change.

    Returns:
        The body, ready for ``json.dumps``.
    """
    messages: list[dict[str, str]] = []
    if task.system_prompt:
        messages.append({"role": "system", "content": task.system_prompt})
    messages.extend({"role": turn.role, "content": turn.content} for turn in task.history)
    messages.append({"role": "user", "content": task.prompt})
    body: dict[str, Any] = {"messages": messages}
    if model is not None:
        body["model"] = model
    if task.max_tokens is not None:
        key = "max_completion_tokens" if adaptations.max_completion_tokens else "max_tokens"
        body[key] = task.max_tokens
    if task.temperature is not None and not adaptations.omit_temperature:
        body["temperature"] = task.temperature
    if stream:
        body["stream"] = True
        if not adaptations.omit_stream_options:
            body["stream_options"] = {"include_usage": True}
    return body


def build_headers(token: str, client_request_id: str, *, stream: bool) -> dict[str, str]:
    """Write the request headers.

    Args:
        token: The bearer access token.
        client_request_id: A fresh GUID (``x-ms-client-request-id``).
        stream: Accept ``text/event-stream`` instead of JSON.

    Returns:
        The headers.
    """
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "x-ms-client-request-id": client_request_id,
    }


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """Return the server's request id: ``apim-request-id``, else ``x-request-id``, else
    ``x-ms-request-id``.

    Args:
        headers: Response headers (case-insensitive mapping, or lower-case keys).

    Returns:
        The id, or ``None`` when the server sent none.
    """
    for name in ("apim-request-id", "x-request-id", "x-ms-request-id"):
        value = headers.get(name)
        if value:
            return safe_text(value, limit=_SHORT_LIMIT)
    return None


def transport_error(error: httpx.HTTPError) -> TransientError:
    """Translate an httpx failure without an HTTP answer (timeout, reset, DNS, TLS).

    Only the type name and a redacted message are taken: raise the result outside the ``except``
    block that caught ``error``, so that neither ``__cause__`` nor ``__context__`` holds the
    httpx exception (its request carries the ``Authorization`` header).

    Args:
        error: What httpx raised.

    Returns:
        :class:`RequestTimeoutError` for timeouts, else :class:`TransientError` (code
        ``connection``); both are retried.
    """
    if isinstance(error, httpx.TimeoutException):
        return RequestTimeoutError(
            f"The chat endpoint did not answer in time ({type(error).__name__})", code="timeout"
        )
    return TransientError(
        f"Could not reach the chat endpoint ({type(error).__name__}: "
        f"{safe_text(str(error), limit=_SHORT_LIMIT)})",
        code="connection",
    )


# --------------------------------------------------------------------------- error answers


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """A non-2xx answer, read whole, waiting for :func:`classify_failure`."""

    status: int
    """HTTP status."""
    headers: httpx.Headers
    """Response headers."""
    content: bytes = field(repr=False)
    """Raw body (never logged)."""


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error answer said (PROTOCOLS.md 2.6), secrets and raw text left out."""

    shape: Literal["A", "B", "C"]
    """A: ``{"error": {...}}``; B: gateway ``{"statusCode", "message"}``; C: not JSON."""
    code: str | None = None
    """``code`` (a digit string such as ``"429"`` is kept as text)."""
    message: str = ""
    """The server's message, redacted and shortened (a preview for shape C)."""
    param: str | None = None
    """``param``: which request field was wrong."""
    type: str | None = None
    """``type``, e.g. ``invalid_request_error`` or ``server_error``."""
    inner_code: str | None = None
    """``innererror.code``, e.g. ``ResponsibleAIPolicyViolation``."""
    filtered: tuple[str, ...] = ()
    """Content-filter categories that were flagged ``filtered``."""
    detail: str = field(default="", repr=False, compare=False)
    """The whole message, redacted, not shortened: read for waits and names, never shown."""


def _said(shape: Literal["A", "B", "C"], text: str, **fields: Any) -> ErrorBody:
    limit = _BODY_LIMIT if shape == "C" else _MESSAGE_LIMIT
    return ErrorBody(
        shape=shape, message=safe_text(text, limit=limit), detail=scrub_text(text), **fields
    )


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _filtered_categories(results: object) -> tuple[str, ...]:
    if not isinstance(results, Mapping):
        return ()
    return tuple(
        sorted(
            str(name)
            for name, verdict in results.items()
            if isinstance(verdict, Mapping) and verdict.get("filtered") is True
        )
    )


def parse_error_body(content: bytes) -> ErrorBody:
    """Read an error answer in any of the three shapes.

    Args:
        content: The raw body.

    Returns:
        What it said; a redacted preview when it is not JSON.
    """
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return _said("C", content.decode("utf-8", "replace"))
    if not isinstance(body, dict):
        return _said("C", str(body))
    error = body.get("error")
    if isinstance(error, dict):
        inner = error.get("innererror", error.get("innerError"))
        inner = inner if isinstance(inner, dict) else {}
        return _said(
            "A",
            _text(error.get("message")) or "",
            code=_text(error.get("code")),
            param=_text(error.get("param")),
            type=_text(error.get("type")),
            inner_code=_text(inner.get("code")),
            filtered=_filtered_categories(inner.get("content_filter_result")),
        )
    shape: Literal["A", "B"] = "B" if "statusCode" in body else "A"
    said = _text(body.get("message")) or _text(error) or ""
    return _said(shape, said, code=_text(body.get("code")))


class Remedy(enum.Enum):
    """Something the engine may try once before raising a :class:`Failure`'s error."""

    NONE = "none"
    FORCE_REFRESH = "refresh"
    """401: force a token refresh and resend (outside the retry budget)."""
    USE_MAX_COMPLETION_TOKENS = "max_completion_tokens"
    """400 ``unsupported_parameter`` on ``max_tokens``: resend with ``max_completion_tokens``."""
    OMIT_TEMPERATURE = "omit_temperature"
    """400 ``unsupported_value`` on ``temperature``: resend without it."""
    OMIT_STREAM_OPTIONS = "omit_stream_options"
    """400 naming ``stream_options``: resend without it."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified error answer."""

    error: ArcSagaException
    """What to raise when the remedy is not possible (or did not help)."""
    remedy: Remedy = Remedy.NONE
    """What may be tried once first."""
    body: ErrorBody | None = None
    """What the server said (for events)."""


def _describe(status: int, body: ErrorBody) -> str:
    said = body.message or "no message"
    return f"HTTP {status}: {said}"


def _classify_400(body: ErrorBody, describe: str, ctx: dict[str, Any]) -> Failure:
    code = (body.code or "").lower()
    said = body.detail or body.message  # the whole message: the name can sit past the cut
    mentions_stream_options = body.param == "stream_options" or "stream_options" in said
    if code == "context_length_exceeded":
        error: ArcSagaException = InputValidationError(
            f"The prompt is too long for the model ({describe})",
            hint="shorten the prompt or the conversation history",
            **ctx,
        )
    elif code == "content_filter" or body.inner_code == "ResponsibleAIPolicyViolation":
        categories = ", ".join(body.filtered) or "unspecified"
        error = InputValidationError(
            f"The prompt was blocked by the content filter (categories: {categories})",
            hint="rephrase the prompt",
            **ctx,
        )
    elif mentions_stream_options:
        return Failure(
            ConfigurationError(
                f"The deployment rejected stream_options ({describe})",
                hint="use a newer api-version (2024-10-21 or later)",
                **ctx,
            ),
            Remedy.OMIT_STREAM_OPTIONS,
            body,
        )
    elif code in ("unsupported_parameter", "unsupported_value"):
        remedy = {
            ("unsupported_parameter", "max_tokens"): Remedy.USE_MAX_COMPLETION_TOKENS,
            ("unsupported_value", "temperature"): Remedy.OMIT_TEMPERATURE,
        }.get((code, body.param or ""), Remedy.NONE)
        return Failure(
            ConfigurationError(
                f"The deployment does not support parameter {body.param!r} ({describe})",
                hint="check the deployment's model family (reasoning models take fewer options)",
                **ctx,
            ),
            remedy,
            body,
        )
    elif code in ("operationnotsupported", "invalidapiversion"):
        error = ConfigurationError(
            f"The endpoint does not support this operation or api-version ({describe})",
            hint=f"check the api-version in {ENDPOINT_SETTING} (e.g. 2024-10-21)",
            **ctx,
        )
    else:
        error = InputValidationError(f"The chat endpoint rejected the request ({describe})", **ctx)
    return Failure(error, Remedy.NONE, body)


def _classify_404(body: ErrorBody, describe: str, ctx: dict[str, Any]) -> Failure:
    if body.code == "DeploymentNotFound":
        hint = (
            f"check the deployment name in {ENDPOINT_SETTING}; a deployment created in the "
            "last 5 minutes may not be ready yet"
        )
    elif body.shape == "B":
        hint = f"the gateway has no route for this path: check {ENDPOINT_SETTING}"
    else:
        hint = f"Azure was reached but the path or api-version is wrong: check {ENDPOINT_SETTING}"
    return Failure(
        ConfigurationError(f"The chat endpoint was not found ({describe})", hint=hint, **ctx),
        Remedy.NONE,
        body,
    )


def classify_failure(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    now: float,
    client_request_id: str | None = None,
) -> Failure:
    """Turn a non-2xx chat answer into the exception to raise (PROTOCOLS.md 2.7).

    Args:
        status: HTTP status.
        headers: Response headers.
        content: Raw body (read here, never kept).
        now: Unix time, for ``Retry-After`` HTTP dates.
        client_request_id: The ``x-ms-client-request-id`` we sent (becomes ``correlation_id``).

    Returns:
        The classified failure: retryable ones carry a :class:`TransientError` subclass.
    """
    body = parse_error_body(content)
    describe = _describe(status, body)
    ctx: dict[str, Any] = {
        "status": status,
        "code": body.code or body.type,
        "request_id": request_id_of(headers),
        "correlation_id": client_request_id,
    }
    if status == 400:
        return _classify_400(body, describe, ctx)
    if status == 404:
        return _classify_404(body, describe, ctx)
    if status in (401, 403) and body.code == "PermissionDenied":
        error: ArcSagaException = PermissionDeniedError(
            f"The signed-in principal may not use this deployment ({describe})",
            hint=_ROLE_HINT,
            **ctx,
        )
    elif status == 401:
        return Failure(
            AuthenticationError(
                f"The chat endpoint rejected the access token ({describe})",
                hint="sign in again: %copilot login",
                **ctx,
            ),
            Remedy.FORCE_REFRESH,
            body,
        )
    elif status == 403:
        error = PermissionDeniedError(
            f"The chat endpoint refused access ({describe})", hint=_ROLE_HINT, **ctx
        )
    elif status in (413, 422):
        error = InputValidationError(
            f"The request was refused as too large or unprocessable ({describe})",
            hint="shorten the prompt or the conversation history",
            **ctx,
        )
    elif status == 429:
        error = RateLimitError(
            f"The chat endpoint is throttling ({describe})",
            retry_after=parse_retry_after(headers, body.detail or body.message, now=now),
            **ctx,
        )
    elif status in (408, 504):
        error = RequestTimeoutError(
            f"The chat endpoint timed out ({describe})",
            retry_after=parse_retry_after(headers, now=now),
            **ctx,
        )
    elif status == 409 or status >= 500:
        error = TransientError(
            f"The chat endpoint failed ({describe})",
            retry_after=parse_retry_after(headers, now=now),
            **ctx,
        )
    else:
        error = ConfigurationError(
            f"The chat endpoint answered an unexpected {describe}",
            hint=f"check {ENDPOINT_SETTING}",
            **ctx,
        )
    return Failure(error, Remedy.NONE, body)


# --------------------------------------------------------------------------- 200 answers

_NOT_JSON = object()


def _loads(text: str) -> object:
    # json.loads, or _NOT_JSON: returning from the handler leaves no decode error (which holds
    # the whole text, i.e. the answer) on the __context__ of what the caller raises next.
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


@dataclass(frozen=True, slots=True)
class Completion:
    """A parsed non-streaming answer."""

    text: str
    """The assistant's text (``""`` when ``content`` was null or empty)."""
    finish_reason: str | None
    """``stop``, ``length``, ``content_filter``, ..."""
    usage: TokenUsage
    """Token counts (zeros when the server sent none)."""
    model: str | None = None
    """Model the server reported."""
    filtered: tuple[str, ...] = ()
    """Output content-filter categories flagged ``filtered``."""


def _parse_failure(
    reason: str, *, size: str = "", said: str | None = None, preview: str | None = None
) -> TransientError:
    # size describes the answer; said is a server error message (always shown); preview is
    # answer text (only passed when the caller asked for previews: journal_content).
    detail = f" ({size})" if size else ""
    if said is not None:
        detail += f": {safe_text(said, limit=_MESSAGE_LIMIT)}"
    elif preview:
        detail += f": {safe_text(preview, limit=_SHORT_LIMIT)}"
    return TransientError(
        f"The chat endpoint answered 200 with {reason}{detail}",
        code=PARSE_ERROR,
        hint="usually a proxy or gateway glitch; try again",
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_usage(raw: object) -> TokenUsage:
    """Read a ``usage`` object; anything missing counts as zero.

    Args:
        raw: The ``usage`` value (may be ``None`` or malformed).

    Returns:
        The counts; ``reasoning_tokens`` from ``completion_tokens_details`` when present.
    """
    if not isinstance(raw, Mapping):
        return TokenUsage()
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    total = _count(raw.get("total_tokens")) or prompt + completion
    details = raw.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, Mapping) else None
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        reasoning_tokens=reasoning if isinstance(reasoning, int) and reasoning >= 0 else None,
    )


def _content_text(content: object) -> str | None:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return None


def _decode_json(content: bytes, content_type: str, *, preview: bool) -> object:
    text = content.decode("utf-8", "replace")
    size = f"{len(content)} bytes, {safe_text(content_type or 'no content type', limit=60)}"
    shown = text if preview else None
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        raise _parse_failure("an HTML page instead of JSON", size=size, preview=shown)
    body = _loads(text)
    if body is _NOT_JSON:
        raise _parse_failure("malformed JSON", size=size, preview=shown)
    return body


def parse_completion(
    content: bytes, *, content_type: str = "application/json", preview: bool = False
) -> Completion:
    """Read a 200 chat-completions body defensively (PROTOCOLS.md 2.4).

    Args:
        content: Raw body.
        content_type: The ``Content-Type`` header.
        preview: Quote the start of a malformed body in the error (it may be the model's
            answer: only with ``journal_content``); without it, size and content type only.

    Returns:
        The completion; ``finish_reason`` ``length`` / ``content_filter`` are results.

    Raises:
        TransientError: code ``parse_error``: HTML, malformed JSON, an ``error`` object, missing
            or empty ``choices``, a choice without ``message``, or ``content`` of an odd type.
    """
    body = _decode_json(content, content_type, preview=preview)
    if not isinstance(body, dict):
        raise _parse_failure("JSON that is not an object")
    if isinstance(body.get("error"), dict):
        said = _text(body["error"].get("message")) or "no message"
        raise _parse_failure("an error object", said=said)
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise _parse_failure("no 'choices'")
    if not choices:
        raise _parse_failure("empty 'choices'")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _parse_failure("a choice without 'message'")
    text = _content_text(message.get("content"))
    if text is None:
        raise _parse_failure("'content' of an unexpected type")
    return Completion(
        text=text,
        finish_reason=_text(choice.get("finish_reason")),
        usage=parse_usage(body.get("usage")),
        model=_text(body.get("model")),
        filtered=_filtered_categories(choice.get("content_filter_results")),
    )


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """What one SSE ``data:`` payload said (PROTOCOLS.md 2.8)."""

    done: bool = False
    """``data: [DONE]``."""
    delta: str = ""
    """Text to append (may be empty: role, finish, annotation and usage chunks)."""
    finish_reason: str | None = None
    """Set on the finish chunk (and on an async-filter block annotation)."""
    usage: TokenUsage | None = None
    """Set on the usage chunk."""
    model: str | None = None
    """Model, when the chunk names one (the first Azure chunk has ``""``)."""
    filtered: tuple[str, ...] = ()
    """Content-filter categories flagged ``filtered`` in this chunk."""


def parse_stream_event(data: str, *, preview: bool = False) -> StreamChunk:
    """Read one SSE ``data:`` payload, tolerating Azure's chunk sequence.

    Args:
        data: The event's data (multi-line data already joined with ``\\n``).
        preview: Quote the start of a malformed payload in the error (it may hold answer text:
            only with ``journal_content``); without it, its size only.

    Returns:
        The chunk; chunks with empty ``choices`` (prompt filter, usage) are fine.

    Raises:
        TransientError: code ``parse_error`` for invalid JSON; for an ``error`` event the
            server's code (``stream_error`` when it gave none).
    """
    if data.strip() == "[DONE]":
        return StreamChunk(done=True)
    body = _loads(data)
    if body is _NOT_JSON:
        raise _parse_failure(
            "an SSE event that is not JSON",
            size=f"{len(data)} characters",
            preview=data if preview else None,
        )
    if not isinstance(body, dict):
        raise _parse_failure("an SSE event that is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        said = safe_text(_text(error.get("message")) or "no message", limit=_MESSAGE_LIMIT)
        raise TransientError(
            f"The chat stream reported an error: {said}",
            code=_text(error.get("code")) or "stream_error",
        )
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    usage = body.get("usage")
    return StreamChunk(
        delta=content if isinstance(content, str) else "",
        finish_reason=_text(choice.get("finish_reason")),
        usage=parse_usage(usage) if isinstance(usage, dict) else None,
        model=_text(body.get("model")),
        filtered=_filtered_categories(choice.get("content_filter_results")),
    )
