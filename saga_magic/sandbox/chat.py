"""Azure OpenAI chat completions (PROTOCOLS 2 and 4.2, 4.3).

Routes:

* ``POST /openai/deployments/{deployment}/chat/completions?api-version=YYYY-MM-DD[-preview]``
  (no or malformed ``api-version`` -> 404 ``Resource not found``).
* ``POST /openai/v1/chat/completions`` and ``POST /v1/chat/completions`` (``model`` = deployment).

Order of checks for one attempt: route and ``api-version``; the scripted outcome (an ``error``
fault answers here); authentication (bearer token issued by this sandbox, audience
``https://cognitiveservices.azure.com``, unexpired; or the sandbox ``api-key``); deployment;
body validation and deployment rules (reasoning, ``stream_options``, context window); the answer,
shaped by ``variant`` faults and delivered under ``transport`` faults.

The answer is an echo of the last user message, truncated to ``max_tokens`` (or
``max_completion_tokens``) whitespace-separated words with ``finish_reason: "length"``; ``usage``
counts whitespace-separated words.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from . import chat_errors as errors
from .chat_errors import ErrorAnswer
from .common import conclude, deliver, json_bytes, record_request, take_outcome
from .faults import CHAT, Outcome
from .issuance import COGNITIVE_AUDIENCE
from .records import Deployment
from .server import Reply, Request
from .state import SandboxState
from .stream import STREAM_FAULTS, Answer, completion_body, sse_events

__all__ = ["ChatRoute", "handle_chat", "match_chat_route"]

_DEPLOYMENT_PATH: Final = re.compile(r"^/openai/deployments/([^/]+)/chat/completions/?$")
_API_VERSION: Final = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_STREAM_OPTIONS_SINCE: Final = "2024-09-01"
LIMIT_REQUESTS: Final = 1000
LIMIT_TOKENS: Final = 150_000
_RATE_WINDOW: Final = 10
_DEFAULT_CAP: Final = 1024
_UNPARSABLE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
    "valid JSON.)"
)
_HTML_200: Final = (
    b"<!DOCTYPE html>\r\n<html><head><title>Sign in to your account</title></head>\r\n"
    b'<body><form method="post" action="https://login.microsoftonline.com/">'
    b"<p>Sign in to continue to Azure OpenAI.</p></form></body></html>\r\n"
)


@dataclass(frozen=True)
class ChatRoute:
    """A matched chat route."""

    shape: str
    """``deployments``, ``v1`` (``/openai/v1``) or ``openai`` (``/v1``)."""
    deployment: str | None
    """Deployment from the path (deployments shape only)."""


def match_chat_route(path: str) -> ChatRoute | None:
    """Return the chat route of a path, or ``None``."""
    match = _DEPLOYMENT_PATH.match(path)
    if match:
        return ChatRoute("deployments", unquote(match.group(1)))
    if path.rstrip("/") == "/openai/v1/chat/completions":
        return ChatRoute("v1", None)
    if path.rstrip("/") == "/v1/chat/completions":
        return ChatRoute("openai", None)
    return None


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    matches = list(re.finditer(r"\S+", text))
    if len(matches) <= limit:
        return text, False
    return (text[: matches[limit - 1].end()] if limit else ""), True


class _Chat:
    """One chat attempt."""

    def __init__(self, state: SandboxState, request: Request, route: ChatRoute) -> None:
        self.state = state
        self.request = request
        self.route = route
        self.body: object = None
        try:
            self.body = json.loads(request.body)
            self.json_ok = True
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            self.json_ok = False
        self.fields: dict[str, object] = self.body if isinstance(self.body, dict) else {}
        model = self.fields.get("model")
        self.deployment_name = route.deployment or (model if isinstance(model, str) else None)
        self.api_version = request.query.get("api-version") or state.config.api_version
        messages = self.fields.get("messages")
        self.messages = (
            [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        )
        self.prompt_tokens = sum(_words(_text_of(m.get("content"))) for m in self.messages)
        self.remaining = (LIMIT_REQUESTS, LIMIT_TOKENS)

    # headers --------------------------------------------------------------------------------

    def _consume_rate(self, tokens: int) -> None:
        state = self.state
        key = self.deployment_name or ""
        with state.lock:
            window = int(state.clock() // _RATE_WINDOW)
            old_window, used_requests, used_tokens = state.rate_window.get(key, (window, 0, 0))
            if old_window != window:
                used_requests, used_tokens = 0, 0
            used_requests, used_tokens = used_requests + 1, used_tokens + tokens
            state.rate_window[key] = (window, used_requests, used_tokens)
        self.remaining = (
            max(0, LIMIT_REQUESTS - used_requests),
            max(0, LIMIT_TOKENS - used_tokens),
        )

    def headers(
        self, content_type: str | None, *, throttled: bool = False
    ) -> list[tuple[str, str]]:
        """Return the common chat response headers (PROTOCOLS 2.5)."""
        remaining_requests, remaining_tokens = (0, 0) if throttled else self.remaining
        headers = [] if content_type is None else [("content-type", content_type)]
        headers += [
            ("apim-request-id", str(uuid.uuid4())),
            ("x-request-id", str(uuid.uuid4())),
            ("x-ms-region", "Sandbox Loopback"),
            ("x-envoy-upstream-service-time", str(20 + self.prompt_tokens % 17)),
            ("x-ratelimit-limit-requests", str(LIMIT_REQUESTS)),
            ("x-ratelimit-limit-tokens", str(LIMIT_TOKENS)),
            ("x-ratelimit-remaining-requests", str(remaining_requests)),
            ("x-ratelimit-remaining-tokens", str(remaining_tokens)),
            ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
            ("x-content-type-options", "nosniff"),
        ]
        echo = self.request.headers.get("x-ms-client-request-id")
        if echo:
            headers.append(("x-ms-client-request-id", echo))
        return headers

    def error(self, answer: ErrorAnswer) -> Reply:
        """Return an error answer with the common headers."""
        content_type = answer.content_type
        if content_type is not None:
            content_type += "; charset=utf-8"
        headers = self.headers(content_type, throttled=answer.status == 429) + answer.headers
        return Reply(answer.status, headers, answer.body)

    # checks ---------------------------------------------------------------------------------

    def authenticate(self, outcome: Outcome) -> ErrorAnswer | None:
        """Check the bearer token or api-key; apply ``expire_token_after``."""
        state, headers = self.state, self.request.headers
        authorization = headers.get("authorization")
        if authorization is None:
            key = headers.get("api-key")
            if key is None:
                return errors.gateway(401, errors.GATEWAY_401)
            expected = state.config.api_key  # "" accepts no key at all
            good = bool(expected) and secrets.compare_digest(key.encode(), expected.encode())
            return None if good else errors.api_key_401()
        scheme, _, token = authorization.partition(" ")
        with state.lock:
            record = state.access_tokens.get(token.strip())
            if (
                scheme.lower() != "bearer"
                or record is None
                or record.revoked
                or record.audience != COGNITIVE_AUDIENCE
                or record.expires_at <= state.clock()
            ):
                return errors.gateway(401, errors.GATEWAY_401)
            if outcome.fault == "expire_token_after":
                record.uses_left = outcome.integer("n")
            if record.uses_left is not None:
                if record.uses_left <= 0:
                    record.revoked = True
                    return errors.gateway(401, errors.GATEWAY_401)
                record.uses_left -= 1
        return None

    def validate(self, deployment: Deployment, outcome: Outcome) -> ErrorAnswer | None:
        """Check the body against the deployment's rules."""
        fields = self.fields
        messages = fields.get("messages")
        if not isinstance(messages, list) or not messages:
            text = "'messages' is a required property"
            if messages == []:
                text = "[] is too short - 'messages'"
            return errors.invalid_request(text, param="messages")
        if len(self.messages) != len(messages) or any(
            not isinstance(m.get("role"), str) for m in self.messages
        ):
            return errors.invalid_request(
                "'role' is a required property - 'messages.0'", param="messages"
            )
        for name in ("max_tokens", "max_completion_tokens"):
            value = fields.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                return errors.invalid_request(
                    f"Invalid '{name}': expected an integer >= 1, but got {value!r} instead.",
                    param=name,
                    code="invalid_value",
                )
        temperature = fields.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            return errors.invalid_request(
                f"Invalid 'temperature': expected a number between 0 and 2, got {temperature!r}.",
                param="temperature",
                code="invalid_value",
            )
        stream = fields.get("stream", False)
        if not isinstance(stream, bool):
            return errors.invalid_request(
                "Invalid type for 'stream': expected a boolean.",
                param="stream",
                code="invalid_type",
            )
        if "stream_options" in fields:
            rejected = (
                deployment.stream_options_rejected
                or outcome.fault == "stream_options_rejected"
                or (
                    self.route.shape == "deployments"
                    and self.api_version[:10] < _STREAM_OPTIONS_SINCE
                )
            )
            if rejected:
                return errors.invalid_request(
                    "Unrecognized request argument supplied: stream_options"
                )
            if not stream:
                return errors.invalid_request(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                    code="invalid_value",
                )
        if deployment.reasoning or outcome.fault == "reasoning":
            if "max_tokens" in fields:
                return errors.unsupported("max_tokens", fields["max_tokens"])
            if temperature is not None and temperature != 1:
                return errors.unsupported("temperature", temperature)
        if self.prompt_tokens > deployment.context_window:
            return errors.context_length(deployment.context_window, self.prompt_tokens)
        return None

    # the answer -----------------------------------------------------------------------------

    def answer(self, deployment: Deployment, outcome: Outcome) -> Answer:
        """Return the deterministic echo answer."""
        fields = self.fields
        users = [m for m in self.messages if m.get("role") == "user"]
        prompt = _text_of(users[-1].get("content")) if users else ""
        cap_value = fields.get("max_completion_tokens") or fields.get("max_tokens")
        cap = cap_value if isinstance(cap_value, int) else None
        reasoning_tokens = 0
        if deployment.reasoning or outcome.fault == "reasoning":
            reasoning_tokens = deployment.reasoning_tokens
            if cap is not None:
                reasoning_tokens = min(cap, reasoning_tokens)
                cap -= reasoning_tokens
        content, truncated = _truncate(prompt, cap) if cap is not None else (prompt, False)
        completion = _words(content) + reasoning_tokens
        return Answer(
            id="chatcmpl-" + secrets.token_hex(14),
            created=int(self.state.clock()),
            model=deployment.model,
            content=content,
            finish_reason="length" if truncated else "stop",
            usage={
                "completion_tokens": completion,
                "completion_tokens_details": {
                    "accepted_prediction_tokens": 0,
                    "audio_tokens": 0,
                    "reasoning_tokens": reasoning_tokens,
                    "rejected_prediction_tokens": 0,
                },
                "prompt_tokens": self.prompt_tokens,
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
                "total_tokens": self.prompt_tokens + completion,
            },
        )

    def run(self, outcome: Outcome) -> Reply:
        """Process the attempt under an outcome that is not an error fault."""
        failure = self.authenticate(outcome)
        if failure is not None:
            return self.error(failure)
        if not self.json_ok or not isinstance(self.body, dict):
            return self.error(errors.invalid_request(_UNPARSABLE))
        if self.route.shape != "deployments" and not self.deployment_name:
            return self.error(errors.invalid_request("you must provide a model parameter"))
        deployment = self.state.deployments.get(self.deployment_name or "")
        if deployment is None:
            return self.error(errors.deployment_not_found())
        if deployment.permission_denied is not None:
            return self.error(errors.permission_denied(deployment.permission_denied))
        cap = self.fields.get("max_completion_tokens") or self.fields.get("max_tokens")
        self._consume_rate(self.prompt_tokens + (cap if isinstance(cap, int) else _DEFAULT_CAP))
        invalid = self.validate(deployment, outcome)
        if invalid is not None:
            return self.error(invalid)
        answer = self.answer(deployment, outcome)
        name = outcome.fault
        if name == "malformed_json":
            return Reply(200, self.headers("application/json"), b'{"choices":[{"message":')
        if name == "html_200":
            return Reply(200, self.headers("text/html; charset=utf-8"), _HTML_200)
        streaming = self.fields.get("stream") is True
        if streaming or name in STREAM_FAULTS:
            options = self.fields.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events, ending = sse_events(answer, outcome, include_usage=include_usage)
            return Reply(
                200,
                self.headers("text/event-stream; charset=utf-8"),
                parts=events,
                part_delay=self.state.config.stream_chunk_delay,
                ending=ending,
            )
        body = completion_body(answer, name)
        return Reply(200, self.headers("application/json; charset=utf-8"), json_bytes(body))


def handle_chat(state: SandboxState, request: Request, route: ChatRoute) -> Reply:
    """Serve one chat completions request."""
    chat = _Chat(state, request, route)
    entry = record_request(state, request, CHAT, chat.deployment_name)
    if request.method != "POST" or (
        route.shape == "deployments"
        and not _API_VERSION.match(request.query.get("api-version", ""))
    ):
        return conclude(state, entry, chat.error(errors.path_not_found()))
    picked = take_outcome(state, request, CHAT, chat.deployment_name)
    if isinstance(picked, Reply):
        return conclude(state, entry, picked)
    outcome, source = picked
    deployment = state.deployments.get(chat.deployment_name or "")
    failure = errors.error_fault(
        outcome,
        api_version=chat.api_version,
        prompt_tokens=chat.prompt_tokens,
        context_window=deployment.context_window if deployment else 128_000,
        now=state.clock(),
    )
    reply = chat.error(failure) if failure is not None else chat.run(outcome)
    return deliver(state, entry, outcome, source, reply)
