"""Entra ID error answers and the faults shared by the token and devicecode endpoints.

Errors follow PROTOCOLS 1.4: ``error``, ``error_description`` (``AADSTS<code>: text`` plus Trace ID,
Correlation ID and Timestamp lines), ``error_codes``, ``timestamp``, ``trace_id`` (= the
``x-ms-request-id`` header), ``correlation_id`` (the ``client-request-id`` when sent),
``error_uri``, and optionally ``suberror`` and ``claims``.
"""

from __future__ import annotations

import http
import uuid
from typing import Final

from .common import json_bytes
from .faults import Outcome
from .server import Reply, Request
from .state import SandboxState
from .timefmt import ENTRA_STAMP, ISO_SECONDS, US_STAMP, http_date, utc

__all__ = [
    "bad_code",
    "bad_tenant",
    "entra_error",
    "entra_fault",
    "entra_headers",
    "inactive",
    "mfa_required",
    "missing_param",
    "ok_reply",
    "post_only",
    "revoked",
    "secret_error",
    "slow_down",
]


_IIS_PAGE: Final = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    '<html xmlns="http://www.w3.org/1999/xhtml"><head>\r\n'
    "<title>IIS 10.0 Detailed Error - {status}.0 - {phrase}</title></head>\r\n"
    '<body><div id="header"><h1>Server Error in Application "ESTS"</h1></div>\r\n'
    "<h2>HTTP Error {status}.0 - {phrase}</h2>\r\n"
    "<h3>The page cannot be displayed because an internal server error has occurred.</h3>\r\n"
    "</body></html>\r\n"
)
ERROR_URI: Final = "https://login.microsoftonline.com/error"
_TRUNCATED_TOKEN: Final = (
    b'{"token_type":"Bearer","scope":"https://cognitiveservices.azure.com/user_impersonation",'
    b'"expires_in":4235,"ext_expires_in":4235,"access_token":"eyJ0eXAi'
)
_TRUNCATED_DEVICECODE: Final = b'{"user_code":"FHL8BQJ7W","device_code":"DAQABIQEAAAB'
MFA_POLICY_ID: Final = "5a9d0000-0000-4000-8000-00000000cafe"


def entra_headers(request: Request, trace_id: str) -> list[tuple[str, str]]:
    """Return Entra's response headers (PROTOCOLS 1.7) for one response."""
    headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("cache-control", "no-store, no-cache"),
        ("pragma", "no-cache"),
        ("expires", "-1"),
        ("strict-transport-security", "max-age=31536000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
        ("p3p", 'CP="DSP CUR OTPi IND OTRi ONL FIN"'),
        ("x-ms-request-id", trace_id),
        ("x-ms-ests-server", "2.1.19000.5 - SBX ProdSlices"),
        ("x-xss-protection", "0"),
        ("set-cookie", "fpc=AsAndbox; path=/; secure; HttpOnly; SameSite=None"),
        ("set-cookie", "x-ms-gateway-slice=estsfd; path=/; secure; samesite=none; httponly"),
        ("set-cookie", "stsservicecookie=estsfd; path=/; secure; samesite=none; httponly"),
    ]
    echo = request.headers.get("client-request-id")
    if echo and request.headers.get("return-client-request-id", "").lower() == "true":
        headers.append(("client-request-id", echo))
    return headers


def entra_error(
    state: SandboxState,
    request: Request,
    status: int,
    error: str,
    code: int,
    text: str,
    *,
    suberror: str | None = None,
    claims: str | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """Return an Entra error response in the PROTOCOLS 1.4 shape."""
    trace_id = str(uuid.uuid4())
    correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    stamp = utc(state.clock(), ENTRA_STAMP)
    body: dict[str, object] = {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{ERROR_URI}?code={code}",
    }
    if suberror is not None:
        body["suberror"] = suberror
    if claims is not None:
        body["claims"] = claims
    return Reply(status, entra_headers(request, trace_id) + list(extra_headers), json_bytes(body))


def ok_reply(request: Request, body: dict[str, object]) -> Reply:
    """Return a 200 JSON answer with Entra's headers."""
    return Reply(200, entra_headers(request, str(uuid.uuid4())), json_bytes(body))


def bad_tenant(state: SandboxState, request: Request, tenant: str) -> Reply:
    """Return 400 ``invalid_request`` AADSTS90002 (tenant not found)."""
    return entra_error(
        state,
        request,
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud.",
    )


def missing_param(state: SandboxState, request: Request, name: str) -> Reply:
    """Return 400 ``invalid_request`` AADSTS900144 (a required parameter is missing)."""
    return entra_error(
        state,
        request,
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def entra_fault(state: SandboxState, request: Request, outcome: Outcome) -> Reply | None:
    """Return the answer of an ``error``-kind Entra fault (``None`` for other outcomes)."""
    name = outcome.fault
    config = state.config
    if name in ("token_429", "token_429_date", "token_429_garbage"):
        if name == "token_429":
            value = str(outcome.integer("seconds"))
        elif name == "token_429_date":
            value = http_date(state.clock() + outcome.number("seconds"))
        else:
            value = outcome.text("value")
        return entra_error(
            state,
            request,
            429,
            "temporarily_unavailable",
            90055,
            "TenantThrottlingError - There are too many incoming requests. "
            "This exception is thrown for blocked tenants.",
            extra_headers=(("retry-after", value),),
        )
    if name == "token_5xx_json":
        return entra_error(
            state,
            request,
            outcome.integer("status"),
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
    if name == "token_5xx_html":
        status = outcome.integer("status")
        page = _IIS_PAGE.format(status=status, phrase=_iis_phrase(status))
        return Reply(status, [("content-type", "text/html")], page.encode("utf-8"))
    if name == "token_5xx_empty":
        return Reply(outcome.integer("status"), [("x-ms-request-id", str(uuid.uuid4()))])
    if name == "token_truncated":
        body = _TRUNCATED_DEVICECODE if request.path.endswith("/devicecode") else _TRUNCATED_TOKEN
        return Reply(200, entra_headers(request, str(uuid.uuid4())), body)
    if name == "rt_revoked":
        return revoked(state, request, None)
    if name == "rt_inactive":
        return inactive(state, request, state.clock())
    if name == "mfa_required":
        return mfa_required(state, request)
    if name == "secret_bad":
        return secret_error(state, request, 7000215, config.client_id)
    if name == "secret_expired":
        return secret_error(state, request, 7000222, config.client_id)
    return None


def _iis_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"


def revoked(state: SandboxState, request: Request, valid_from: float | None) -> Reply:
    """Return 400 ``invalid_grant`` AADSTS50173 (grant revoked)."""
    return entra_error(
        state,
        request,
        400,
        "invalid_grant",
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
        "The user might have changed or reset their password. The TokensValidFrom date (before "
        f"which tokens are not valid) for this user is '{utc(valid_from or 0, US_STAMP)}'.",
    )


def inactive(state: SandboxState, request: Request, issued: float) -> Reply:
    """Return 400 ``invalid_grant`` AADSTS700082 (refresh token expired by inactivity)."""
    return entra_error(
        state,
        request,
        400,
        "invalid_grant",
        700082,
        f"The refresh token has expired due to inactivity. The token was issued on "
        f"{utc(issued, ISO_SECONDS)} and was inactive for "
        "90.00:00:00.",
    )


def mfa_required(state: SandboxState, request: Request) -> Reply:
    """Return 400 ``invalid_grant`` AADSTS50076 with ``suberror`` and ``claims``."""
    claims = json_bytes(
        {"access_token": {"capolids": {"essential": True, "values": [MFA_POLICY_ID]}}}
    ).decode("ascii")
    return entra_error(
        state,
        request,
        400,
        "invalid_grant",
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a new "
        "location, you must use multi-factor authentication to access "
        "'https://cognitiveservices.azure.com'.",
        suberror="basic_action",
        claims=claims,
    )


def secret_error(state: SandboxState, request: Request, code: int, client_id: str) -> Reply:
    """Return 401 ``invalid_client`` for AADSTS700025, 7000215, 7000218 or 7000222."""
    texts = {
        700025: "Client is public so neither 'client_assertion' nor 'client_secret' should be "
        "presented.",
        7000215: "Invalid client secret provided. Ensure the secret being sent in the request is "
        f"the client secret value, not the client secret ID, for a secret added to app "
        f"'{client_id}'.",
        7000218: "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
        7000222: f"The provided client secret keys for app '{client_id}' are expired. Visit the "
        "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
        "consider using certificate credentials for added security: https://aka.ms/certCreds.",
    }
    return entra_error(state, request, 401, "invalid_client", code, texts[code])


def bad_code(state: SandboxState, request: Request) -> Reply:
    """Return 400 ``bad_verification_code`` AADSTS70018."""
    return entra_error(
        state,
        request,
        400,
        "bad_verification_code",
        70018,
        "Invalid verification code: the device code was not recognised.",
    )


def slow_down(state: SandboxState, request: Request) -> Reply:
    """Return 400 ``slow_down`` AADSTS70016 (a device poll came too soon)."""
    return entra_error(
        state, request, 400, "slow_down", 70016, "OAuth 2.0 device flow error. Slow down."
    )


def post_only(state: SandboxState, request: Request) -> Reply:
    """Return 400 ``invalid_request`` AADSTS900561 (the endpoint only accepts POST)."""
    return entra_error(
        state,
        request,
        400,
        "invalid_request",
        900561,
        f"The endpoint only accepts POST requests. Received a {request.method} request.",
    )
