"""Azure OpenAI error answers (PROTOCOLS 2.6, 2.7 and the chat faults of 4.2).

Each builder returns an :class:`ErrorAnswer` (status, content type, body, extra headers); the chat
module adds the common response headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from .common import json_bytes
from .faults import Outcome
from .filters import prompt_violation_results
from .timefmt import http_date

__all__ = [
    "ErrorAnswer",
    "api_key_401",
    "context_length",
    "deployment_not_found",
    "error_fault",
    "gateway",
    "invalid_request",
    "path_not_found",
    "permission_denied",
    "unsupported",
]

JSON: Final = "application/json"
GATEWAY_401: Final = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
_SERVER_ERROR: Final = (
    "The server had an error while processing your request. Sorry about that! You can retry your "
    "request, or contact us through an Azure support request at: "
    "https://go.microsoft.com/fwlink/?linkid=2213926 if the error persists."
)
_JSON_5XX: Final[dict[int, dict[str, object]]] = {
    500: {"message": _SERVER_ERROR, "type": "server_error", "param": None, "code": None},
    502: {"code": "BadGateway", "message": "Bad gateway: the upstream service failed."},
    503: {
        "code": "ServiceUnavailable",
        "message": "The service is temporarily unable to process your request. "
        "Please try again later.",
    },
    504: {
        "code": "GatewayTimeout",
        "message": "The gateway did not receive a response from the upstream service in time.",
    },
}
_TEXT_5XX: Final = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "upstream connect error or disconnect/reset before headers. "
    "reset reason: connection termination",
    504: "upstream request timeout",
}
_GATEWAY_PHRASES: Final = {  # as Application Gateway (nginx) writes them, not RFC 9110's
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
_HTML: Final = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n"
    "<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class ErrorAnswer:
    """An error response before the common chat headers are added."""

    status: int
    body: bytes
    content_type: str | None = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


def _error(status: int, error: dict[str, object]) -> ErrorAnswer:
    return ErrorAnswer(status, json_bytes({"error": error}))


def gateway(status: int, message: str) -> ErrorAnswer:
    """Return the APIM gateway shape ``{"statusCode": N, "message": ...}`` (shape B)."""
    return ErrorAnswer(status, json_bytes({"statusCode": status, "message": message}))


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None
) -> ErrorAnswer:
    """Return a 400 ``invalid_request_error`` (shape A)."""
    return _error(
        400, {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    )


def path_not_found() -> ErrorAnswer:
    """Return 404 ``{"error":{"code":"404","message":"Resource not found"}}``."""
    return _error(404, {"code": "404", "message": "Resource not found"})


def deployment_not_found() -> ErrorAnswer:
    """Return 404 ``DeploymentNotFound``."""
    return _error(
        404,
        {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        },
    )


def permission_denied(status: int) -> ErrorAnswer:
    """Return 401/403 ``PermissionDenied`` (valid token, role missing)."""
    return _error(
        status,
        {"code": "PermissionDenied", "message": "Principal does not have access to API/Operation."},
    )


def api_key_401() -> ErrorAnswer:
    """Return the 401 answered to a wrong ``api-key``."""
    return _error(
        401,
        {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. Make "
            "sure to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource.",
        },
    )


def context_length(window: int, tokens: int) -> ErrorAnswer:
    """Return 400 ``context_length_exceeded``."""
    return invalid_request(
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def _fmt(value: float) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _seconds(n: float) -> str:
    return f"{_fmt(n)} second{'' if n == 1 else 's'}"


def _tpm(api_version: str, seconds: float) -> str:
    return (
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        f"{api_version} have exceeded token rate limit of your current OpenAI S0 pricing tier. "
        f"Please retry after {_seconds(seconds)}. Please go here: https://aka.ms/oai/quotaincrease "
        "if you would like to further increase the default rate limit."
    )


def _too_many(message: str, headers: list[tuple[str, str]]) -> ErrorAnswer:
    answer = _error(429, {"code": "429", "message": message})
    answer.headers = headers
    return answer


def _numeric(text: str | None, scale: float = 1.0) -> float | None:
    try:
        value = float(text) / scale if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _generic_429(outcome: Outcome, api_version: str, now: float) -> ErrorAnswer:
    names = ("retry_after", "retry_after_ms", "x_ms_retry_after_ms")
    given = {n: outcome.params[n] for n in names if n in outcome.params}
    date = outcome.optional_number("http_date")
    if not given and date is None:
        given["retry_after"] = "1"
    headers = [(name.replace("_", "-"), str(value)) for name, value in given.items()]
    if date is not None:
        headers = [h for h in headers if h[0] != "retry-after"] + [
            ("retry-after", http_date(now + date))
        ]
    said = outcome.optional_number("message_s")
    if said is None:
        candidates = [
            date,
            _numeric(str(given.get("retry_after"))) if "retry_after" in given else None,
            _numeric(str(given.get("retry_after_ms")), 1000.0)
            if "retry_after_ms" in given
            else None,
            _numeric(str(given.get("x_ms_retry_after_ms")), 1000.0)
            if "x_ms_retry_after_ms" in given
            else None,
        ]
        said = next((float(math.ceil(c)) for c in candidates if c is not None), None)
    message = (
        _tpm(api_version, said) if said is not None else "Rate limit is exceeded. Try again later."
    )
    return _too_many(message, headers)


def _rate_limited(outcome: Outcome, api_version: str, now: float) -> ErrorAnswer:
    name = outcome.fault
    if name == "429":
        return _generic_429(outcome, api_version, now)
    if name == "429_both":
        seconds = outcome.number("seconds")
        wait = max(1, math.ceil(seconds + 0.5))
        return _too_many(
            _tpm(api_version, wait),
            [("retry-after", str(wait)), ("retry-after-ms", _fmt(seconds * 1000))],
        )
    if name == "429_ms_only":
        ms = outcome.number("ms")
        wait = max(1, math.ceil(ms / 1000 + 0.5))
        return _too_many(_tpm(api_version, wait), [("retry-after-ms", _fmt(ms))])
    if name == "429_seconds_only":
        seconds = outcome.integer("seconds")
        return _too_many(_tpm(api_version, seconds), [("retry-after", str(seconds))])
    if name == "429_http_date":
        seconds = outcome.number("seconds")
        return _too_many(
            _tpm(api_version, math.ceil(seconds)), [("retry-after", http_date(now + seconds))]
        )
    if name == "429_no_header":
        return _too_many(
            f"Rate limit is exceeded. Try again in {_seconds(outcome.integer('seconds'))}.", []
        )
    if name == "429_quota":
        return _too_many(
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            f"{api_version} have exceeded call rate limit of your current AIServices S0 pricing "
            "tier. Please retry after 86400 seconds. Please contact Azure support service if you "
            "would like to further increase the default rate limit.",
            [("retry-after", "86400")],
        )
    if name == "429_capacity":
        seconds = outcome.integer("seconds")
        return _too_many(
            "The system is currently experiencing high demand and cannot process your request. "
            "Your request exceeds the maximum usage size allowed during peak load. For improved "
            "capacity reliability, consider switching to Provisioned Throughput. "
            f"Please retry after {_seconds(seconds)}.",
            [("retry-after", str(seconds))],
        )
    return _too_many(
        "Rate limit is exceeded. Try again later.", [("retry-after", outcome.text("value"))]
    )


def _server_error(outcome: Outcome) -> ErrorAnswer:
    status_text, body_kind = outcome.fault.split("_")
    status = int(status_text)
    if body_kind == "json":
        answer = _error(status, _JSON_5XX[status])
    elif body_kind == "html":
        page = _HTML.format(status=status, phrase=_GATEWAY_PHRASES[status])
        answer = ErrorAnswer(status, page.encode("ascii"), "text/html")
    elif body_kind == "text":
        answer = ErrorAnswer(status, _TEXT_5XX[status].encode("ascii"), "text/plain")
    else:
        answer = ErrorAnswer(status, b"", None)
    if "retry_after" in outcome.params:
        answer.headers.append(("retry-after", outcome.text("retry_after")))
    return answer


def error_fault(
    outcome: Outcome, *, api_version: str, prompt_tokens: int, context_window: int, now: float
) -> ErrorAnswer | None:
    """Return the error answer of an ``error``-kind chat fault (``None`` for other faults).

    ``now`` (the sandbox clock) dates HTTP-date ``retry-after`` values.
    """
    name = outcome.fault
    if name.startswith("429"):
        return _rate_limited(outcome, api_version, now)
    if name[:3] in ("500", "502", "503", "504"):
        return _server_error(outcome)
    if name == "408_timeout":
        return _error(408, {"code": "Timeout", "message": "The operation was timeout."})
    if name == "400_context":
        return context_length(context_window, max(prompt_tokens, context_window + 1))
    if name == "400_filter":
        category = outcome.text("category")
        return _error(
            400,
            {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                "content management policy. Please modify your prompt and retry. To learn more "
                "about our content filtering policies please read our documentation: "
                "https://go.microsoft.com/fwlink/?linkid=2198766",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": prompt_violation_results(category),
                },
            },
        )
    if name == "400_unsupported":
        return unsupported(outcome.text("param"), 0.2)
    if name == "413":
        return ErrorAnswer(413, b"Request Entity Too Large", "text/plain")
    if name == "404_deployment":
        return deployment_not_found()
    if name == "404_path":
        return path_not_found()
    if name == "404_apim":
        return gateway(404, "Resource not found")
    if name == "auth_gateway_401":
        return gateway(401, GATEWAY_401)
    if name == "permission_denied":
        return permission_denied(outcome.integer("status"))
    return None


def unsupported(param: str, value: object) -> ErrorAnswer:
    """Return the 400 a reasoning deployment answers to ``max_tokens`` or ``temperature``."""
    if param == "temperature":
        return invalid_request(
            f"Unsupported value: 'temperature' does not support {value} with this model. Only "
            "the default (1) value is supported.",
            param="temperature",
            code="unsupported_value",
        )
    hint = " Use 'max_completion_tokens' instead." if param == "max_tokens" else ""
    return invalid_request(
        f"Unsupported parameter: '{param}' is not supported with this model.{hint}",
        param=param,
        code="unsupported_parameter",
    )
