"""Request routing: control plane, device page, chat and Entra routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import control, entra
from .chat import handle_chat, match_chat_route
from .common import json_reply
from .device import device_page
from .faults import Outcome
from .server import Reply, Request

if TYPE_CHECKING:
    from .sandbox import Sandbox

__all__ = ["Router"]


class Router:
    """The server's handler: maps a request to the endpoint that answers it.

    Args:
        sandbox: The sandbox whose state and hooks the endpoints use.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def __call__(self, request: Request) -> Reply:
        """Answer one request."""
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
        entry = state.record(
            arrived=request.arrived,
            method=request.method,
            path=path,
            query=request.query,
            endpoint="other",
            headers=request.headers,
            body=request.body.decode("utf-8", "replace")[:2000],
        )
        if path.startswith("/openai/"):
            reply = json_reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        else:
            reply = json_reply(404, {"statusCode": 404, "message": "Resource not found"})
        state.finish(entry, outcome=Outcome("ok"), source=None, status=404)
        return reply
