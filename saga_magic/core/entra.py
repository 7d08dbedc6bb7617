"""The Entra ID v2.0 wire boundary: requests out, typed results or exceptions in.

This is the only module that looks inside a token-endpoint answer (PROTOCOLS.md 1.3-1.6). It
builds the ``refresh_token`` / device-code requests, and turns every answer into a
:class:`TokenGrant`, a :class:`DeviceCodeGrant`, a :class:`PollStatus`, or one exception of the
error tree, classified on the OAuth ``error`` field (never on the status alone):

=====================================================  ==========================================
answer                                                 raised
=====================================================  ==========================================
429                                                    RateLimitError (``retry_after`` if sent)
500-503, 505+ (any body)                               TransientError (``retry_after`` if sent)
504, 408, client timeout                               RequestTimeoutError
409, connection / protocol error                       TransientError (``code="connection"``)
undecodable body, redirect loop (httpx)                TransientError (``code="protocol"``)
400 ``invalid_grant`` with AADSTS50196                 RateLimitError (loop detection: throttled)
``invalid_grant``, ``interaction_required``,           AuthenticationError (re-login)
``consent_required``
``invalid_client``, ``unauthorized_client``,           ConfigurationError
``invalid_scope``, ``invalid_request``,
``unsupported_grant_type``, any other 4xx JSON error
404 or 3xx (any body)                                  ConfigurationError (wrong host or tenant)
other non-JSON, HTML, empty or truncated body          TransientError
200 without JSON or without ``access_token``           TransientError (``code="parse"``)
=====================================================  ==========================================

Errors carry status, OAuth ``error`` (``code``), AADSTS ``error_codes``, ``request_id``
(``x-ms-request-id`` or ``trace_id``) and ``correlation_id`` (the server's, else our
``client-request-id``); never the body, and never an httpx exception (which holds the request and
its form) on ``__cause__`` or ``__context__``. After :meth:`EntraClient.close` every call raises
``ArcSagaException(code="closed")``. Messages are built from the ``error`` name and the first
line of ``error_description`` only, with every secret of the request scrubbed and the rest passed
through :func:`~saga_magic.core.events.safe_text`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from .events import register_secret, safe_text
from .jwt import finite_float
from .retry import Clock, parse_retry_after

__all__ = [
    "CONFIG_ERRORS",
    "DEFAULT_DEVICE_EXPIRES_IN",
    "DEFAULT_DEVICE_INTERVAL",
    "DEFAULT_EXPIRES_IN",
    "DEVICE_CODE_GRANT",
    "RELOGIN_ERRORS",
    "DeviceCodeGrant",
    "EntraClient",
    "PollStatus",
    "TokenGrant",
]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
"""``grant_type`` of a device-code poll (RFC 8628)."""
RELOGIN_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
"""OAuth errors that mean the refresh token cannot be used: the user must sign in again."""
CONFIG_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "invalid_scope",
        "invalid_request",
        "unsupported_grant_type",
    }
)
"""OAuth errors that mean the app registration or a setting is wrong."""
THROTTLE_AADSTS = 50196
"""AADSTS50196 LoopDetected: sent as ``invalid_grant`` but means "too many identical requests"."""
DEFAULT_EXPIRES_IN = 3600.0
"""Lifetime assumed when a 200 answer has no usable ``expires_in`` (Entra always sends one)."""
DEFAULT_DEVICE_EXPIRES_IN = 900.0
"""Device-code lifetime when ``expires_in`` is absent: Entra's documented default (MSAL assumes
1800, which would keep polling a dead code)."""
DEFAULT_DEVICE_INTERVAL = 5.0
"""Seconds between device-code polls when ``interval`` is absent."""
_MAX_DESCRIPTION = 160
_LOGIN_HINT = "run %copilot login to sign in again"
_CONFIG_HINTS = {
    "invalid_client": (
        "check AZURE_CLIENT_SECRET: unset it for a public client, renew it if it expired"
    ),
    "unauthorized_client": "check AZURE_CLIENT_ID and AZURE_TENANT_ID (is the app in this tenant?)",
    "invalid_scope": "check ARC_SAGA_SCOPES",
}


class PollStatus(enum.StrEnum):
    """A device-code poll that has not finished yet."""

    PENDING = "authorization_pending"
    """The user has not approved yet: poll again after ``interval``."""
    SLOW_DOWN = "slow_down"
    """Polled too fast: add 5 s to ``interval`` and poll again."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A successful token-endpoint answer, times made absolute."""

    access_token: str = field(repr=False)
    """The bearer token (secret)."""
    refresh_token: str | None = field(repr=False)
    """The new refresh token (secret), or the one sent when the server returned none."""
    expires_at: float
    """Request send time + ``expires_in`` (unix seconds)."""
    refresh_at: float | None
    """Request send time + ``refresh_in`` when the server sent it."""
    scope: str
    """Granted scopes, space-separated."""
    token_type: str
    """``Bearer``."""
    request_id: str | None = None
    """``x-ms-request-id`` of the answer."""

    def to_record(self) -> dict[str, Any]:
        """Return the dict saved in the token store (absolute times, no ``expires_in``).

        Returns:
            ``access_token``, ``refresh_token``, ``expires_at``, ``scope``, ``token_type`` and,
            when known, ``refresh_at``.
        """
        record: dict[str, Any] = {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scope": self.scope,
            "token_type": self.token_type,
        }
        if self.refresh_at is not None:
            record["refresh_at"] = self.refresh_at
        return record


@dataclass(frozen=True, slots=True)
class DeviceCodeGrant:
    """A successful devicecode answer, expiry made absolute."""

    device_code: str = field(repr=False)
    """Secret code used only in polls."""
    user_code: str
    """Short code the user types in the browser."""
    verification_uri: str
    """Where the user types it."""
    message: str
    """Entra's ready-made instruction for the user."""
    expires_at: float
    """Unix time after which the code is dead."""
    interval: float
    """Minimum seconds between polls."""


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        payload = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _positive_seconds(value: object) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    seconds = finite_float(value)
    return seconds if seconds is not None and seconds > 0 else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_codes(payload: Mapping[str, Any]) -> tuple[int, ...]:
    codes = payload.get("error_codes")
    if not isinstance(codes, list):
        return ()
    return tuple(code for code in codes if isinstance(code, int) and not isinstance(code, bool))


class EntraClient:
    """Talks to ``{authority_host}/{tenant}/oauth2/v2.0/`` for one app registration.

    One call is one HTTP attempt; retries belong to the caller. The HTTP client is created on
    first use unless one is passed in, and :meth:`close` closes only a client created here.

    Args:
        authority_host: ``https://login.microsoftonline.com`` or the sandbox's loopback URL,
            already validated, without a trailing slash.
        tenant_id: Tenant GUID or domain, already validated.
        client_id: App registration's client id.
        client_secret: Secret of a confidential client; ``None`` for a public client.
        scopes: Scopes to request.
        http_client: Client to use (not closed here); created on first use when ``None``.
        timeout: Per-attempt timeout: seconds for every phase and for the whole attempt, or an
            ``httpx.Timeout`` (per phase; the whole attempt is then bounded by the deadline).
        clock: Unix time, for ``expires_at`` and HTTP-date ``Retry-After`` values.
    """

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        scopes: tuple[str, ...],
        http_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = 30.0,
        clock: Clock = time.time,
    ) -> None:
        base = f"{authority_host}/{tenant_id}/oauth2/v2.0"
        self.token_url = f"{base}/token"
        """The token endpoint."""
        self.devicecode_url = f"{base}/devicecode"
        """The device authorization endpoint."""
        self._client_id = client_id
        self._client_secret = client_secret
        if client_secret:
            register_secret(client_secret)
        self._scope = " ".join(scopes)
        self._http = http_client
        self._owns_http = http_client is None
        self._timeout = timeout
        self._clock = clock
        self._closed = False

    async def close(self) -> None:
        """Close the HTTP client if this object created it; later calls raise (idempotent)."""
        self._closed = True
        if self._owns_http and self._http is not None:
            await self._http.aclose()
        self._http = None

    async def refresh(self, refresh_token: str, *, budget: float | None = None) -> TokenGrant:
        """Redeem ``refresh_token`` (one attempt).

        Args:
            refresh_token: Read from the store just before this call.
            budget: Seconds left before the caller's deadline; bounds this attempt.

        Returns:
            The new token set; ``refresh_token`` falls back to the one sent when the answer
            has none.

        Raises:
            AuthenticationError: re-login needed (``invalid_grant`` and friends).
            ConfigurationError: the app registration or a setting is wrong.
            TransientError: worth retrying (RateLimitError, RequestTimeoutError included).
        """
        register_secret(refresh_token)
        form = {"grant_type": "refresh_token", "client_id": self._client_id}
        form["refresh_token"] = refresh_token
        form["scope"] = self._scope
        if self._client_secret:
            form["client_secret"] = self._client_secret
        sent_at = self._clock()
        response, client_request_id = await self._post(
            self.token_url, form, "token refresh", budget, (refresh_token,)
        )
        if not 200 <= response.status_code < 300:
            raise self._failure(response, "token refresh", client_request_id, (refresh_token,))
        return self._grant(response, sent_at=sent_at, sent_refresh_token=refresh_token)

    async def request_device_code(self, *, budget: float | None = None) -> DeviceCodeGrant:
        """Ask for a device code (one attempt).

        Args:
            budget: Seconds left before the caller's deadline; bounds this attempt.

        Returns:
            The codes and the absolute expiry.

        Raises:
            ConfigurationError: the app registration or a setting is wrong.
            TransientError: worth retrying, including an answer without the codes.
        """
        form = {"client_id": self._client_id, "scope": self._scope}
        sent_at = self._clock()
        what = "device code request"
        response, client_request_id = await self._post(self.devicecode_url, form, what, budget, ())
        if not 200 <= response.status_code < 300:
            raise self._failure(response, what, client_request_id, ())
        payload = _json_object(response) or {}
        device_code = _text(payload.get("device_code"))
        if device_code is not None:
            register_secret(device_code)
        user_code = _text(payload.get("user_code"))
        uri = _text(payload.get("verification_uri")) or _text(payload.get("verification_url"))
        if device_code is None or user_code is None or uri is None:
            raise TransientError(
                "the device code answer had no device_code, user_code or verification_uri",
                status=response.status_code,
                code="parse",
                request_id=response.headers.get("x-ms-request-id"),
                correlation_id=client_request_id,
            )
        expires_in = _positive_seconds(payload.get("expires_in")) or DEFAULT_DEVICE_EXPIRES_IN
        message = _text(payload.get("message")) or f"Open {uri} and enter the code {user_code}."
        return DeviceCodeGrant(
            device_code=device_code,
            user_code=user_code,
            verification_uri=uri,
            message=message,
            expires_at=sent_at + expires_in,
            interval=_positive_seconds(payload.get("interval")) or DEFAULT_DEVICE_INTERVAL,
        )

    async def poll_device_code(
        self, device_code: str, *, budget: float | None = None
    ) -> TokenGrant | PollStatus:
        """Poll the token endpoint once for a device-code login.

        Args:
            device_code: From :meth:`request_device_code`.
            budget: Seconds left before the code expires; bounds this attempt.

        Returns:
            The token set once approved, else :class:`PollStatus` (pending or slow down).

        Raises:
            AuthenticationError: declined (``authorization_declined``), the code expired or was
                not recognised (``expired_token``, ``bad_verification_code``), or re-login.
            ConfigurationError: the app registration or a setting is wrong.
            TransientError: worth polling again (RateLimitError for 429 and AADSTS50196).
        """
        register_secret(device_code)
        form = {"grant_type": DEVICE_CODE_GRANT, "client_id": self._client_id}
        form["device_code"] = device_code
        if self._client_secret:
            form["client_secret"] = self._client_secret
        sent_at = self._clock()
        what = "device login"
        secrets = (device_code,)
        response, client_request_id = await self._post(self.token_url, form, what, budget, secrets)
        if 200 <= response.status_code < 300:
            return self._grant(response, sent_at=sent_at, sent_refresh_token=None)
        payload = _json_object(response)
        error = _text(payload.get("error")) if payload is not None else None
        if error in (PollStatus.PENDING, PollStatus.SLOW_DOWN):
            return PollStatus(error)
        failure = self._failure(response, what, client_request_id, secrets)
        if error in ("authorization_declined", "access_denied"):
            failure = self._rebuild(AuthenticationError, failure, "sign-in was declined")
            failure.hint = "run %copilot login to try again"
        elif error in ("expired_token", "bad_verification_code"):
            failure = self._rebuild(
                AuthenticationError, failure, "the code expired; run login again"
            )
            failure.hint = "run %copilot login to get a new code"
        raise failure

    # -- plumbing ---------------------------------------------------------------------------

    def _limits(self, budget: float | None) -> tuple[httpx.Timeout, float | None]:
        if budget is not None:
            budget = max(budget, 0.001)
        configured = self._timeout
        if isinstance(configured, httpx.Timeout):

            def cap(value: float | None) -> float | None:
                if budget is None:
                    return value
                return budget if value is None else min(value, budget)

            phases = httpx.Timeout(
                connect=cap(configured.connect),
                read=cap(configured.read),
                write=cap(configured.write),
                pool=cap(configured.pool),
            )
            return phases, budget
        total = configured if budget is None else min(configured, budget)
        return httpx.Timeout(total), total

    async def _post(
        self,
        url: str,
        form: dict[str, str],
        what: str,
        budget: float | None,
        secrets: tuple[str, ...],
    ) -> tuple[httpx.Response, str]:
        if self._closed:
            raise ArcSagaException(
                f"{what}: the auth manager is closed",
                code="closed",
                hint="create a new auth manager",
            )
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        client_request_id = str(uuid.uuid4())
        headers = {
            "Accept": "application/json",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
        }
        phases, total = self._limits(budget)
        # An httpx error holds the request, and so the form with its secrets: the error we
        # raise is built here but raised after the except block, so that neither __cause__
        # nor __context__ refers to it (``from None`` would only hide __context__).
        failure: ArcSagaException
        try:
            async with asyncio.timeout(total):
                response = await self._http.post(url, data=form, headers=headers, timeout=phases)
        except (httpx.TimeoutException, TimeoutError):
            failure = RequestTimeoutError(
                f"{what} timed out", code="timeout", correlation_id=client_request_id
            )
        except httpx.HTTPError as exc:
            # Transport errors, and a body that cannot be decoded or redirects gone wrong.
            detail = self._safe(f"{type(exc).__name__}: {exc}", secrets)
            transport = isinstance(exc, httpx.TransportError)
            failure = TransientError(
                f"{what} could not reach Entra ID ({detail})"
                if transport
                else f"{what} got an unreadable answer ({detail})",
                code="connection" if transport else "protocol",
                correlation_id=client_request_id,
            )
        else:
            return response, client_request_id
        raise failure

    def _safe(self, text: str, secrets: tuple[str, ...]) -> str:
        return safe_text(text, secrets=(*secrets, self._client_secret))

    def _grant(
        self, response: httpx.Response, *, sent_at: float, sent_refresh_token: str | None
    ) -> TokenGrant:
        payload = _json_object(response) or {}
        request_id = response.headers.get("x-ms-request-id")
        access_token = _text(payload.get("access_token"))
        if access_token is None:
            raise TransientError(
                "the token endpoint answered without an access_token",
                status=response.status_code,
                code="parse",
                request_id=request_id,
            )
        register_secret(access_token)
        refresh_token = _text(payload.get("refresh_token"))
        if refresh_token is not None:
            register_secret(refresh_token)
        id_token = _text(payload.get("id_token"))
        if id_token is not None:
            register_secret(id_token)
        expires_in = _positive_seconds(payload.get("expires_in")) or DEFAULT_EXPIRES_IN
        refresh_in = _positive_seconds(payload.get("refresh_in"))
        return TokenGrant(
            access_token=access_token,
            refresh_token=refresh_token or sent_refresh_token,
            expires_at=sent_at + expires_in,
            refresh_at=None if refresh_in is None else sent_at + refresh_in,
            scope=_text(payload.get("scope")) or self._scope,
            token_type=_text(payload.get("token_type")) or "Bearer",
            request_id=request_id,
        )

    def _failure(
        self,
        response: httpx.Response,
        what: str,
        client_request_id: str,
        secrets: tuple[str, ...],
    ) -> ArcSagaException:
        status = response.status_code
        headers = response.headers
        payload = _json_object(response)
        body: Mapping[str, Any] = payload if payload is not None else {}
        error = _text(body.get("error"))
        description = _text(body.get("error_description")) or ""
        lines = description.strip().splitlines()
        first_line = lines[0][:_MAX_DESCRIPTION] if lines else ""
        codes = _error_codes(body)
        summary = f"{what} failed: HTTP {status}"
        if error:
            summary += f" {error}"
        suberror = _text(body.get("suberror"))
        if suberror:
            summary += f" ({suberror})"
        if first_line:
            summary += f": {first_line}"
        elif payload is None:
            summary += " (the answer was not JSON)"
        fields: dict[str, Any] = {
            "status": status,
            "code": error,
            "error_codes": codes,
            "request_id": headers.get("x-ms-request-id") or _text(body.get("trace_id")),
            "correlation_id": _text(body.get("correlation_id"))
            or headers.get("client-request-id")
            or client_request_id,
        }
        message = self._safe(summary, secrets)
        retry_after = parse_retry_after(headers, description or None, now=self._clock())
        if status == 429 or (error == "invalid_grant" and THROTTLE_AADSTS in codes):
            return RateLimitError(message, retry_after=retry_after, **fields)
        if status in (408, 504):
            return RequestTimeoutError(message, retry_after=retry_after, **fields)
        if status >= 500 or status == 409:
            return TransientError(message, retry_after=retry_after, **fields)
        if status == 404 or status < 400:
            return ConfigurationError(
                message,
                hint="check AZURE_AUTHORITY_HOST and AZURE_TENANT_ID",
                **fields,
            )
        if payload is None:
            return TransientError(message, **fields)
        if error in RELOGIN_ERRORS:
            return AuthenticationError(message, hint=_LOGIN_HINT, **fields)
        hint = _CONFIG_HINTS.get(error or "", "check the app registration and settings")
        return ConfigurationError(message, hint=hint, **fields)

    @staticmethod
    def _rebuild(
        cls: type[ArcSagaException], error: ArcSagaException, message: str
    ) -> ArcSagaException:
        return cls(
            message,
            status=error.status,
            code=error.code,
            error_codes=error.error_codes,
            request_id=error.request_id,
            correlation_id=error.correlation_id,
        )
