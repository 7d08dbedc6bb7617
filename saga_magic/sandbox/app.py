"""Request routing: control plane, device page, chat and Entra routes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import control, entra
from .chat import handle_chat, match_chat_route
from .common import conclude, json_reply, record_request
from .device import device_page
from .server import Ending, Reply, Request

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["Router"]

_log = logging.getLogger(__name__)


class Router:
    """The server's handler: maps a request to the endpoint that answers it.

    Args:
        sandbox: The sandbox whose state and hooks the endpoints use.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def __call__(self, request: Request) -> Reply:
        """Answer one request; a failure of the sandbox itself is answered (and logged) as 500."""
        try:
            return self._route(request)
        except Exception as exc:
            _log.exception("sandbox handler failed for %s %s", request.method, request.path)
            self._sandbox.state.fail_open(f"{type(exc).__name__}: {exc}")
            return Reply(
                500,
                [("content-type", "text/plain; charset=utf-8")],
                b"sandbox internal error",
                ending=Ending.CLOSE,
            )

    def _route(self, request: Request) -> Reply:
        state = self._sandbox.state
        path = request.path
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return control.handle(self._sandbox, request)
        if path.rstrip("/") == "/devicelogin":
            return device_page(state, request)
        route = match_chat_route(path)
        if route is not None:
            return handle_chat(state, request, route)
        segments = path.strip("/").split("/")
        tenant, rest = segments[0], segments[1:]
        if segments == ["common", "discovery", "instance"]:
            return entra.handle_instance_discovery(state, request)
        if rest == ["oauth2", "v2.0", "token"]:
            return entra.handle_token(state, request, tenant)
        if rest == ["oauth2", "v2.0", "devicecode"]:
            return entra.handle_devicecode(state, request, tenant)
        if rest == ["v2.0", ".well-known", "openid-configuration"]:
            return entra.handle_discovery(state, request, tenant)
        if rest == ["discovery", "v2.0", "keys"]:
            return entra.handle_keys(state, request, tenant)
        entry = record_request(state, request, "other")
        if path.startswith("/openai/"):
            reply = json_reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        else:
            reply = json_reply(404, {"statusCode": 404, "message": "Resource not found"})
        return conclude(state, entry, reply)
