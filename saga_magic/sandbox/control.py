"""The HTTP control plane under ``/_sandbox/`` (JSON in, JSON out; never recorded).

==========================================  ===================================================
``GET  /_sandbox``                          index of these routes
``POST /_sandbox/script``                   ``{"endpoint", "outcomes", "deployment"?, "replace"?}``
``GET  /_sandbox/script``                   still-queued outcomes
``GET  /_sandbox/requests``                 ``?endpoint=&deployment=&since=<seq>``
``POST /_sandbox/reset``                    forget everything (tokens, scripts, log, switches)
``GET  /_sandbox/faults``                   the fault catalogue (``?endpoint=``)
``GET  /_sandbox/stats``                    POST counters per endpoint
``GET|POST /_sandbox/deployments``          list / add or replace (``{"name", ...}``)
``POST /_sandbox/entra/<hook>``             ``issue_tokens``, ``revoke_user``,
                                            ``age_refresh_tokens``, ``require_mfa``,
                                            ``expire_client_secret``, ``revoke_client_secret``,
                                            ``restore_client_secret``, ``rt_reuse_strict``,
                                            ``loop_detect``, ``expire_access_tokens``
``GET  /_sandbox/device``                   device logins
``POST /_sandbox/device/<hook>``            ``approve``, ``decline``, ``expire``,
                                            ``auto_approve``
==========================================  ===================================================

Bad input answers 400 ``{"error": "..."}``; unknown routes 404; a missing device login 404.

Only local programs may use it, not web pages a local browser happens to show: a request with an
``Origin`` header (browsers send one with every cross-origin and every ``POST`` request) or with a
``Host`` other than ``localhost``, ``127.x.x.x`` or ``[::1]`` (with any port; this stops DNS
rebinding) answers 403, and a ``POST`` with a body must say ``content-type: application/json``
(else 415; a bodiless ``POST`` may omit the header).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from .common import json_reply
from .faults import CATALOGUE, ENDPOINTS, fault_names
from .records import DEFAULT_SCOPE, Deployment
from .server import Reply, Request

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["handle"]

Payload = dict[str, object]
Action = Callable[["Sandbox", Payload, dict[str, str]], object]


class _BadInput(ValueError):
    pass


def _opt_str(payload: Payload, key: str) -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _BadInput(f"{key!r} must be a string")


def _bool(payload: Payload, key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if isinstance(value, bool):
        return value
    raise _BadInput(f"{key!r} must be true or false")


def _opt_int(payload: Payload, key: str) -> int | None:
    value = payload.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _BadInput(f"{key!r} must be an integer")


def _script(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    endpoint = _opt_str(payload, "endpoint")
    outcomes = payload.get("outcomes")
    if endpoint is None or not isinstance(outcomes, list):
        raise _BadInput('expected {"endpoint": "chat"|"token"|"devicecode", "outcomes": [...]}')
    sb.script(
        endpoint,
        outcomes,
        deployment=_opt_str(payload, "deployment"),
        replace=_bool(payload, "replace", False),
    )
    return {"queued": len(outcomes), "pending": sb.pending()}


def _requests(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    since = query.get("since", "0")
    if not since.isdigit():
        raise _BadInput("'since' must be a sequence number")
    found = sb.requests(query.get("endpoint") or None, deployment=query.get("deployment") or None)
    return {"requests": [r.to_dict() for r in found if r.seq > int(since)]}


def _faults(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    endpoint = query.get("endpoint")
    names = set(fault_names(endpoint)) if endpoint else set(CATALOGUE)
    return {"faults": [spec.to_dict() for name, spec in CATALOGUE.items() if name in names]}


def _reset(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    sb.reset()
    return {"reset": True}


_DEPLOYMENT_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "name": (str,),
    "model": (str,),
    "reasoning": (bool,),
    "stream_options_rejected": (bool,),
    "permission_denied": (int, type(None)),
    "context_window": (int,),
    "reasoning_tokens": (int,),
}


def _set_deployment(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    if not isinstance(payload.get("name"), str):
        raise _BadInput("a deployment needs a 'name'")
    current = sb.state.deployments.get(str(payload["name"]))
    fields = dataclasses.asdict(current) if current is not None else {}
    for key, value in payload.items():
        types = _DEPLOYMENT_TYPES.get(key)
        if types is None:
            raise _BadInput(
                f"unknown deployment field {key!r} (fields: {sorted(_DEPLOYMENT_TYPES)})"
            )
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _BadInput(f"deployment field {key!r} has the wrong type")
        fields[key] = value
    deployment = Deployment(**fields)
    sb.set_deployment(deployment)
    return {"deployment": dataclasses.asdict(deployment)}


def _issue_tokens(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    opaque = payload.get("opaque")
    if opaque is not None and not isinstance(opaque, bool):
        raise _BadInput("'opaque' must be true or false")
    return sb.issue_tokens(
        _opt_str(payload, "user"),
        scope=_opt_str(payload, "scope") or DEFAULT_SCOPE,
        expires_in=_opt_int(payload, "expires_in"),
        opaque=opaque,
    )


def _loop_detect(sb: Sandbox, payload: Payload, query: dict[str, str]) -> object:
    window = payload.get("window", 60.0)
    if isinstance(window, bool) or not isinstance(window, int | float):
        raise _BadInput("'window' must be a number")
    sb.loop_detect(_opt_int(payload, "n"), float(window))
    return {"loop_detect": sb.state.loop_detect}


_ROUTES: Final[dict[tuple[str, str], Action]] = {
    ("GET", "script"): lambda sb, p, q: {"pending": sb.pending()},
    ("POST", "script"): _script,
    ("GET", "requests"): _requests,
    ("POST", "reset"): _reset,
    ("GET", "faults"): _faults,
    ("GET", "stats"): lambda sb, p, q: {"post_counts": {e: sb.post_count(e) for e in ENDPOINTS}},
    ("GET", "deployments"): lambda sb, p, q: {
        "deployments": [dataclasses.asdict(d) for d in sb.deployments()]
    },
    ("POST", "deployments"): _set_deployment,
    ("POST", "entra/issue_tokens"): _issue_tokens,
    ("POST", "entra/revoke_user"): lambda sb, p, q: sb.revoke_user(_opt_str(p, "user")),
    ("POST", "entra/age_refresh_tokens"): lambda sb, p, q: {
        "aged": sb.age_refresh_tokens(_opt_str(p, "user"))
    },
    ("POST", "entra/require_mfa"): lambda sb, p, q: sb.require_mfa(
        _opt_str(p, "user"), enabled=_bool(p, "enabled", True)
    ),
    ("POST", "entra/expire_client_secret"): lambda sb, p, q: sb.expire_client_secret(),
    ("POST", "entra/revoke_client_secret"): lambda sb, p, q: sb.revoke_client_secret(),
    ("POST", "entra/restore_client_secret"): lambda sb, p, q: sb.restore_client_secret(),
    ("POST", "entra/rt_reuse_strict"): lambda sb, p, q: sb.rt_reuse_strict(
        _bool(p, "enabled", True)
    ),
    ("POST", "entra/loop_detect"): _loop_detect,
    ("POST", "entra/expire_access_tokens"): lambda sb, p, q: {
        "expired": sb.expire_access_tokens(_opt_str(p, "user"))
    },
    ("GET", "device"): lambda sb, p, q: {"device_codes": [d.to_dict() for d in sb.device_codes()]},
    ("POST", "device/approve"): lambda sb, p, q: {
        "approved": sb.approve_device_code(_opt_str(p, "user_code"), user=_opt_str(p, "user"))
    },
    ("POST", "device/decline"): lambda sb, p, q: {
        "declined": sb.decline_device_code(_opt_str(p, "user_code"))
    },
    ("POST", "device/expire"): lambda sb, p, q: {
        "expired": sb.expire_device_code(_opt_str(p, "user_code"))
    },
    ("POST", "device/auto_approve"): lambda sb, p, q: setattr(
        sb, "auto_approve", _bool(p, "enabled", True)
    ),
}


def _loopback_host(host: str) -> bool:
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return False
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _refusal(request: Request) -> Reply | None:
    """Refuse what a web page could send (CSRF, DNS rebinding); ``None`` when acceptable."""
    if "origin" in request.headers:
        return json_reply(403, {"error": "the control plane refuses requests with an Origin"})
    if not _loopback_host(request.headers.get("host", "")):
        return json_reply(403, {"error": "the control plane answers loopback Host names only"})
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    bodiless = content_type is None and not request.body
    if request.method == "POST" and media != "application/json" and not bodiless:
        return json_reply(415, {"error": "the control plane takes application/json"})
    return None


def handle(sb: Sandbox, request: Request) -> Reply:
    """Answer a control-plane request."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    name = request.path.removeprefix("/_sandbox").strip("/")
    if not name:
        routes = sorted(f"{method} /_sandbox/{path}" for method, path in _ROUTES)
        return json_reply(200, {"routes": routes})
    action = _ROUTES.get((request.method, name))
    if action is None:
        if any(path == name for _, path in _ROUTES):
            return json_reply(405, {"error": f"{request.method} not allowed on /_sandbox/{name}"})
        return json_reply(404, {"error": f"no control route /_sandbox/{name}"})
    payload: object = {}
    if request.body.strip():
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return json_reply(400, {"error": "the body must be JSON"})
    if not isinstance(payload, dict):
        return json_reply(400, {"error": "the body must be a JSON object"})
    try:
        result = action(sb, payload, request.query)
    except LookupError as exc:
        return json_reply(404, {"error": str(exc).strip("'\"")})
    except ValueError as exc:
        return json_reply(400, {"error": str(exc)})
    return json_reply(200, result if result is not None else {"ok": True})
