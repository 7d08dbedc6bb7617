"""The fault catalogue: every fault the sandbox can inject, its endpoints, kind and parameters.

:data:`CATALOGUE` maps canonical names to :class:`FaultSpec`; bare status codes are aliases per
endpoint (:func:`fault_names` lists both). The parser for script entries is
:mod:`saga_magic.sandbox.faults`.

Faults come in five kinds:

* ``ok``: the normal answer.
* ``error``: an error answer instead of processing the request (429s, 5xx, 4xx bodies).
* ``modifier``: the request is processed normally under a changed rule (``reasoning``,
  ``rt_reuse_strict``, ``expire_token_after:N``, ...).
* ``variant``: shapes a successful answer (``missing_choices``, stream faults, ...); a request that
  would fail anyway (bad token, unknown deployment) still fails.
* ``transport``: delivers whatever answer the request earns in a broken way (``slow_headers``,
  ``slow_body``, ``reset_mid_body``, ``reset``).

On the token endpoint some faults belong to one grant (:attr:`FaultSpec.grant`): ``device_*``
faults to device-code polls, ``rt_*`` and ``mfa_required`` to refresh-token grants. A request of
the other grant leaves them queued and takes the next entry that applies to it (see
:meth:`~saga_magic.sandbox.state.SandboxState.take_outcome`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

__all__ = [
    "CATALOGUE",
    "DEVICE_GRANT",
    "ENDPOINTS",
    "REFRESH_GRANT",
    "FaultKind",
    "FaultSpec",
    "Param",
    "ParamType",
    "ParamValue",
    "check_endpoint",
    "fault_names",
    "resolve_alias",
]

ParamValue = float | int | str
ParamType = Literal["float", "int", "str"]

ENDPOINTS: Final[tuple[str, str, str]] = ("chat", "devicecode", "token")
"""Endpoints with scripts (and POST counters)."""
CHAT, DEVICECODE, TOKEN = ENDPOINTS

_ALL: Final = frozenset(ENDPOINTS)
_ENTRA: Final = frozenset({TOKEN, DEVICECODE})
_CHAT_ONLY: Final = frozenset({CHAT})
_TOKEN_ONLY: Final = frozenset({TOKEN})
REFRESH_GRANT: Final = "refresh_token"
"""The :attr:`FaultSpec.grant` of faults that only a refresh-token grant consumes."""
DEVICE_GRANT: Final = "device_code"
"""The :attr:`FaultSpec.grant` of faults that only a device-code poll consumes (token endpoint)."""


class FaultKind(StrEnum):
    """How a fault changes the handling of the request that consumes it."""

    OK = "ok"
    ERROR = "error"
    MODIFIER = "modifier"
    VARIANT = "variant"
    TRANSPORT = "transport"


@dataclass(frozen=True)
class Param:
    """One parameter of a fault."""

    name: str
    """Name used in ``key=value`` arguments and mapping entries."""
    type: ParamType
    """Value type: ``"float"``, ``"int"`` or ``"str"``."""
    default: ParamValue | None = None
    """Value when not given; ``None`` means absent (optional)."""
    signed: bool = False
    """Whether negative numbers are allowed."""
    choices: tuple[ParamValue, ...] = ()
    """The only values accepted (empty: any value of the type)."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault the sandbox can inject."""

    name: str
    """Canonical name."""
    endpoints: frozenset[str]
    """Endpoints whose scripts accept it (``chat``, ``token``, ``devicecode``)."""
    kind: FaultKind
    """How the fault acts (see the module docstring)."""
    summary: str
    """One line of wire behaviour."""
    params: tuple[Param, ...] = ()
    """Declared parameters, in positional order."""
    grant: str | None = None
    """On the token endpoint, the one grant it applies to (:data:`REFRESH_GRANT` or
    :data:`DEVICE_GRANT`); ``None`` for every request of its endpoints."""

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready description (used by ``GET /_sandbox/faults``)."""
        params: list[dict[str, object]] = []
        for p in self.params:
            described: dict[str, object] = {"name": p.name, "type": p.type, "default": p.default}
            if p.choices:
                described["choices"] = list(p.choices)
            params.append(described)
        return {
            "name": self.name,
            "endpoints": sorted(self.endpoints),
            "kind": str(self.kind),
            "summary": self.summary,
            "params": params,
            "grant": self.grant,
        }


def _p(
    name: str,
    type_: ParamType,
    default: ParamValue | None = None,
    *,
    signed: bool = False,
    choices: tuple[ParamValue, ...] = (),
) -> Param:
    return Param(name, type_, default, signed, choices)


_GRANTS: Final = {
    "rt_reuse_strict": REFRESH_GRANT,
    "rt_revoked": REFRESH_GRANT,
    "rt_inactive": REFRESH_GRANT,
    "mfa_required": REFRESH_GRANT,
    "device_slow_down": DEVICE_GRANT,
    "device_bad_code": DEVICE_GRANT,
    "device_expire_early": DEVICE_GRANT,
}


def _build() -> dict[str, FaultSpec]:
    specs: list[FaultSpec] = []

    def add(
        name: str, endpoints: frozenset[str], kind: FaultKind, summary: str, *params: Param
    ) -> None:
        specs.append(FaultSpec(name, endpoints, kind, summary, params, _GRANTS.get(name)))

    E, M, V, T = FaultKind.ERROR, FaultKind.MODIFIER, FaultKind.VARIANT, FaultKind.TRANSPORT
    add("ok", _ALL, FaultKind.OK, "the normal answer")
    # transport faults, every endpoint
    add("slow_headers", _ALL, T, "sleep N s before status and headers", _p("seconds", "float", 1.0))
    add(
        "slow_body",
        _ALL,
        T,
        "headers, then the body trickled byte by byte over N s",
        _p("seconds", "float", 1.0),
    )
    add(
        "reset_mid_body",
        _ALL,
        T,
        "send a fraction of the body bytes, then a TCP reset",
        _p("fraction", "float", 0.5),
    )
    add("reset", _ALL, T, "TCP reset before any response byte")
    # Entra token and devicecode endpoints (PROTOCOLS 4.1)
    add(
        "rt_reuse_strict",
        _TOKEN_ONLY,
        M,
        "a superseded refresh token -> 400 invalid_grant; the user stays strict until switched off",
    )
    add("rt_revoked", _TOKEN_ONLY, E, "400 invalid_grant AADSTS50173 (grant revoked)")
    add("rt_inactive", _TOKEN_ONLY, E, "400 invalid_grant AADSTS700082 (inactivity)")
    add("mfa_required", _TOKEN_ONLY, E, "400 invalid_grant AADSTS50076 + suberror + claims")
    add("secret_bad", _TOKEN_ONLY, E, "401 invalid_client AADSTS7000215")
    add("secret_expired", _TOKEN_ONLY, E, "401 invalid_client AADSTS7000222")
    add("token_429", _ENTRA, E, "429, Retry-After: N (integer seconds)", _p("seconds", "int", 1))
    add(
        "token_429_date",
        _ENTRA,
        E,
        "429, Retry-After: HTTP-date now + N",
        _p("seconds", "float", 2.0),
    )
    add("token_429_garbage", _ENTRA, E, "429, Retry-After: garbage", _p("value", "str", "soon"))
    add(
        "token_5xx_json",
        _ENTRA,
        E,
        "5xx with temporarily_unavailable JSON",
        _p("status", "int", 503),
    )
    add("token_5xx_html", _ENTRA, E, "5xx with an IIS HTML page", _p("status", "int", 500))
    add("token_5xx_empty", _ENTRA, E, "5xx with an empty body", _p("status", "int", 503))
    add("token_truncated", _ENTRA, E, "200 with a truncated JSON body")
    add("token_reset", _ENTRA, T, "TCP reset before any response byte")
    add("token_slow", _ENTRA, T, "normal answer after N s", _p("seconds", "float", 2.0))
    add(
        "loop_detect",
        _TOKEN_ONLY,
        M,
        "this request, if more than N identical ones in W s -> 400 invalid_grant AADSTS50196",
        _p("n", "int", 5),
        _p("window", "float", 60.0),
    )
    add(
        "device_slow_down",
        _TOKEN_ONLY,
        E,
        "device poll -> 400 slow_down; the login's interval is enforced from then on",
    )
    add("device_bad_code", _TOKEN_ONLY, E, "device poll -> 400 bad_verification_code")
    add(
        "device_expire_early",
        _ENTRA,
        M,
        "the device code expires N s after issue",
        _p("seconds", "float", 300.0),
    )
    add("opaque_token", _TOKEN_ONLY, M, "issue an opaque (non-JWT) access token")
    add(
        "clock_skew",
        _TOKEN_ONLY,
        M,
        "shift iat/nbf/exp of issued JWTs by N s",
        _p("seconds", "float", 600.0, signed=True),
    )
    # chat (PROTOCOLS 4.2)
    add(
        "429",
        _CHAT_ONLY,
        E,
        "429 with exactly the given headers (default retry-after: 1)",
        _p("retry_after", "str"),
        _p("retry_after_ms", "str"),
        _p("x_ms_retry_after_ms", "str"),
        _p("http_date", "float"),
        _p("message_s", "float"),
    )
    add(
        "429_both",
        _CHAT_ONLY,
        E,
        "429, retry-after: 2, retry-after-ms: 1500, TPM message",
        _p("seconds", "float", 1.5),
    )
    add("429_ms_only", _CHAT_ONLY, E, "429, retry-after-ms only", _p("ms", "float", 1500.0))
    add("429_seconds_only", _CHAT_ONLY, E, "429, retry-after only", _p("seconds", "int", 2))
    add(
        "429_http_date",
        _CHAT_ONLY,
        E,
        "429, retry-after: HTTP-date now + N",
        _p("seconds", "float", 3.0),
    )
    add(
        "429_no_header",
        _CHAT_ONLY,
        E,
        "429, wait only in the message text",
        _p("seconds", "int", 3),
    )
    add("429_quota", _CHAT_ONLY, E, "429, retry-after: 86400 (quota exhausted)")
    add("429_capacity", _CHAT_ONLY, E, "429, high-demand capacity message", _p("seconds", "int", 6))
    add("429_garbage", _CHAT_ONLY, E, "429, retry-after: garbage", _p("value", "str", "soon"))
    for status in (500, 502, 503, 504):
        for body in ("json", "html", "text", "empty"):
            add(
                f"{status}_{body}",
                _CHAT_ONLY,
                E,
                f"{status} with a {body} body",
                _p("retry_after", "str"),
            )
    add("408_timeout", _CHAT_ONLY, E, "408 Timeout error object")
    add("400_context", _CHAT_ONLY, E, "400 context_length_exceeded")
    add(
        "400_filter",
        _CHAT_ONLY,
        E,
        "400 content_filter (prompt)",
        _p("category", "str", "violence"),
    )
    add(
        "400_unsupported",
        _CHAT_ONLY,
        E,
        "400 unsupported_parameter / unsupported_value",
        _p("param", "str", "max_tokens"),
    )
    add("413", _CHAT_ONLY, E, "413 gateway plain text")
    add("404_deployment", _CHAT_ONLY, E, "404 DeploymentNotFound")
    add("404_path", _CHAT_ONLY, E, '404 {"error":{"code":"404",...}}')
    add("404_apim", _CHAT_ONLY, E, '404 {"statusCode":404,...}')
    add("auth_gateway_401", _CHAT_ONLY, E, '401 {"statusCode":401,...}')
    add(
        "permission_denied",
        _CHAT_ONLY,
        E,
        "401/403 PermissionDenied",
        _p("status", "int", 401, choices=(401, 403)),
    )
    add(
        "expire_token_after",
        _CHAT_ONLY,
        M,
        "the bearer token serves N requests (this one included), then 401",
        _p("n", "int", 1),
    )
    add("reasoning", _CHAT_ONLY, M, "treat the deployment as a reasoning model")
    add("stream_options_rejected", _CHAT_ONLY, M, "400 when stream_options is sent")
    for name, summary in (
        ("malformed_json", "200 application/json, truncated JSON"),
        ("html_200", "200 text/html login page"),
        ("missing_choices", "200 without choices"),
        ("empty_choices", "200 with choices: []"),
        ("null_content", "200 with message.content null"),
        ("no_usage", "200 without usage"),
        ("filtered_output", "200, finish_reason content_filter, content null"),
        ("filter_down", "200 with content_filter_results.error"),
        ("stream_azure", "the Azure SSE sequence (forces streaming)"),
        ("stream_comments", "SSE with : keep-alive comments and CRLF line endings"),
        ("done_no_finish", "SSE [DONE] without any finish_reason"),
    ):
        add(name, _CHAT_ONLY, V, summary)
    k = _p("k", "int", 1)
    add(
        "stream_async_filter_block",
        _CHAT_ONLY,
        V,
        "k deltas, then an annotation with finish_reason content_filter, [DONE]",
        _p("k", "int", 2),
    )
    add(
        "stream_error_event",
        _CHAT_ONLY,
        V,
        "k deltas, then an error event, [DONE]",
        _p("k", "int", 2),
    )
    add("stream_bad_json", _CHAT_ONLY, V, "k deltas, then a data: line of invalid JSON", k)
    add("stall_stream", _CHAT_ONLY, V, "k deltas, then silence with the connection open", k)
    add("reset_mid_stream", _CHAT_ONLY, V, "k deltas, then a TCP reset", k)
    add("close_no_done", _CHAT_ONLY, V, "k deltas, then a clean end without finish or [DONE]", k)
    return {spec.name: spec for spec in specs}


CATALOGUE: Final[Mapping[str, FaultSpec]] = _build()
"""Every fault by canonical name."""

_ENTRA_ALIASES: Final[dict[str, tuple[str, dict[str, ParamValue]]]] = {
    "429": ("token_429", {}),
    "500": ("token_5xx_json", {"status": 500}),
    "502": ("token_5xx_json", {"status": 502}),
    "503": ("token_5xx_json", {"status": 503}),
    "504": ("token_5xx_json", {"status": 504}),
}
_ALIASES: Final[dict[str, dict[str, tuple[str, dict[str, ParamValue]]]]] = {
    CHAT: {
        "500": ("500_json", {}),
        "502": ("502_html", {}),
        "503": ("503_json", {"retry_after": "1"}),
        "504": ("504_text", {}),
        "408": ("408_timeout", {}),
        "404": ("404_path", {}),
        "401": ("auth_gateway_401", {}),
        "403": ("permission_denied", {"status": 403}),
    },
    TOKEN: _ENTRA_ALIASES,
    DEVICECODE: _ENTRA_ALIASES,
}


def fault_names(endpoint: str | None = None) -> list[str]:
    """Return the sorted fault names (and aliases) an endpoint accepts, or all names.

    Raises:
        ValueError: unknown endpoint.
    """
    if endpoint is None:
        return sorted(CATALOGUE)
    check_endpoint(endpoint)
    names = {s.name for s in CATALOGUE.values() if endpoint in s.endpoints}
    return sorted(names | set(_ALIASES[endpoint]))


def check_endpoint(endpoint: str) -> None:
    """Check that an endpoint has scripts (``chat``, ``devicecode``, ``token``).

    Raises:
        ValueError: unknown endpoint.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")


def resolve_alias(name: str, endpoint: str) -> tuple[str, dict[str, ParamValue]]:
    """Return the canonical fault name of a name or alias on an endpoint, with preset parameters."""
    if name in _ALIASES[endpoint]:
        canonical, presets = _ALIASES[endpoint][name]
        return canonical, dict(presets)
    return name, {}
