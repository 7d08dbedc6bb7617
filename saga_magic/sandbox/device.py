"""Device-code login: the state machine and its hooks (PROTOCOLS 1.6).

``pending`` -> ``approved`` (then ``redeemed`` by the next poll) / ``declined`` / ``expired``.
Tests move a flow with :func:`approve`, :func:`decline` and :func:`expire`; in demo mode the first
poll approves it (auto-approve). A small HTML page at ``/devicelogin`` approves or declines by hand.
"""

from __future__ import annotations

import asyncio
import html
import time
from typing import Final

from .common import parse_form
from .records import DeviceFlow, DeviceState
from .server import Reply, Request
from .state import SandboxState
from .tokens import new_secret

__all__ = [
    "approve",
    "create_flow",
    "decline",
    "device_page",
    "expire",
    "wait_for_user_code",
    "wait_for_user_code_async",
]

_MESSAGES: Final = {
    "en": "To sign in, use a web browser to open the page {uri} and enter the code {code} to "
    "authenticate.",
    "de": "Um sich anzumelden, verwenden Sie einen Webbrowser, um die Seite {uri} zu öffnen, "
    "und geben Sie den Code {code} ein, um sich zu authentifizieren.",
    "fr": "Pour vous connecter, utilisez un navigateur web pour ouvrir la page {uri} et entrez "
    "le code {code} pour vous authentifier.",
}


def verification_uri(state: SandboxState) -> str:
    """Return the sandbox's own verification page (``{base}/devicelogin``)."""
    return f"{state.base_url}/devicelogin"


def create_flow(
    state: SandboxState,
    *,
    client_id: str,
    scope: tuple[str, ...],
    early_expiry: float | None,
    mkt: str | None,
) -> dict[str, object]:
    """Start a device-code login and return the devicecode endpoint's 200 body."""
    config = state.config
    with state.lock:
        now = state.clock()
        lifetime = float(config.device_code_lifetime)
        if early_expiry is not None:
            lifetime = min(lifetime, early_expiry)
        flow = DeviceFlow(
            new_secret("device"),
            new_secret("user_code"),
            client_id,
            scope,
            now,
            now + lifetime,
            config.device_poll_interval,
        )
        state.device_flows[flow.device_code] = flow
        state.changed.notify_all()
    uri = verification_uri(state)
    language = (mkt or "en").split("-")[0].lower()
    template = _MESSAGES.get(language, _MESSAGES["en"])
    return {
        "user_code": flow.user_code,
        "device_code": flow.device_code,
        "verification_uri": uri,
        "expires_in": config.device_code_lifetime,
        "interval": flow.interval,
        "message": template.format(uri=uri, code=flow.user_code),
    }


def _move(state: SandboxState, user_code: str | None, target: DeviceState, user: str | None) -> str:
    with state.lock:
        flow = state.find_flow(user_code)
        if flow.state is not DeviceState.PENDING:
            raise ValueError(f"device login {flow.user_code} is {flow.state}, not pending")
        flow.state = target
        if target is DeviceState.APPROVED:
            flow.user = user or state.config.default_user
            state.user(flow.user)
        state.changed.notify_all()
        return flow.user_code


def approve(state: SandboxState, user_code: str | None = None, *, user: str | None = None) -> str:
    """Approve a pending login (the latest for ``None``) as a user; return its user code.

    Raises:
        LookupError: no such (or no pending) login.
        ValueError: the login is no longer pending.
    """
    return _move(state, user_code, DeviceState.APPROVED, user)


def decline(state: SandboxState, user_code: str | None = None) -> str:
    """Decline a pending login; its next poll answers ``authorization_declined``.

    Raises:
        LookupError: no such (or no pending) login.
        ValueError: the login is no longer pending.
    """
    return _move(state, user_code, DeviceState.DECLINED, None)


def expire(state: SandboxState, user_code: str | None = None) -> str:
    """Expire a pending login now; its next poll answers ``expired_token``.

    Raises:
        LookupError: no such (or no pending) login.
        ValueError: the login is no longer pending.
    """
    return _move(state, user_code, DeviceState.EXPIRED, None)


def _latest_pending(state: SandboxState) -> str | None:
    for flow in reversed(list(state.device_flows.values())):
        if flow.state is DeviceState.PENDING:
            return flow.user_code
    return None


def wait_for_user_code(state: SandboxState, within: float = 5.0) -> str:
    """Block until a login is pending; return the latest pending user code.

    Raises:
        TimeoutError: none within ``within`` seconds.
    """
    with state.changed:
        code = state.changed.wait_for(lambda: _latest_pending(state), within)
    if code is None:
        raise TimeoutError(f"no device-code login pending after {within} s")
    return code


async def wait_for_user_code_async(
    state: SandboxState, within: float = 5.0, *, poll: float = 0.005
) -> str:
    """Like :func:`wait_for_user_code`, without blocking the running event loop.

    Raises:
        TimeoutError: none within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        with state.lock:
            code = _latest_pending(state)
        if code is not None:
            return code
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no device-code login pending after {within} s")
        await asyncio.sleep(poll)


_PAGE: Final = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ARC SAGA sandbox: device login</title></head>
<body><h1>Sandbox device login</h1><p>{notice}</p>
<form method="post" action="/devicelogin">
<label>Code <input name="user_code" autocomplete="off"></label>
<label>User <input name="user" value="{user}"></label>
<button name="action" value="approve">Approve</button>
<button name="action" value="decline">Decline</button>
</form></body></html>
"""


def device_page(state: SandboxState, request: Request) -> Reply:
    """Serve ``GET``/``POST /devicelogin``: a form that approves or declines a login by code."""
    notice = "Enter the code shown by the application."
    status = 200
    if request.method == "POST":
        form = parse_form(request)
        code = form.get("user_code", "").strip()
        try:
            if form.get("action") == "decline":
                notice = f"Declined {decline(state, code)}."
            else:
                done = approve(state, code, user=form.get("user") or None)
                notice = f"Approved {done}. You can close this page."
        except (LookupError, ValueError) as exc:
            notice, status = f"Not done: {exc}", 400
    page = _PAGE.format(
        notice=html.escape(notice), user=html.escape(state.config.default_user, quote=True)
    )
    return Reply(status, [("content-type", "text/html; charset=utf-8")], page.encode("utf-8"))
