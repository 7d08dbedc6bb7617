"""Helpers shared by the endpoint modules: JSON and form bodies, the request log, outcome
selection, delivery."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

from .faults import Outcome
from .masking import mask_body
from .records import RecordedRequest
from .server import Ending, Reply, Request
from .state import SandboxState

__all__ = [
    "basic_credentials",
    "conclude",
    "deliver",
    "json_bytes",
    "json_reply",
    "parse_form",
    "record_request",
    "take_outcome",
]

SCENARIO_HEADER = "x-sandbox-scenario"


def json_bytes(obj: object) -> bytes:
    """Return compact UTF-8 JSON."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def json_reply(status: int, obj: object) -> Reply:
    """Return a JSON reply."""
    return Reply(status, [("content-type", "application/json; charset=utf-8")], json_bytes(obj))


def parse_form(request: Request) -> dict[str, str]:
    """Return the form fields of an ``application/x-www-form-urlencoded`` body (else empty)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    text = request.body.decode("utf-8", errors="replace")
    return dict(parse_qsl(text, keep_blank_values=True))


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """Return ``(client_id, secret)`` from an HTTP Basic ``Authorization`` header, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


def record_request(
    state: SandboxState, request: Request, endpoint: str, deployment: str | None = None
) -> RecordedRequest:
    """Log a request, secrets masked (:mod:`~saga_magic.sandbox.masking`): every endpoint's way
    into the request log."""
    return state.record(
        arrived=request.arrived,
        method=request.method,
        path=request.path,
        query=request.query,
        endpoint=endpoint,
        headers=request.headers,
        body=mask_body(request.body, request.headers),
        deployment=deployment,
    )


def take_outcome(
    state: SandboxState,
    request: Request,
    endpoint: str,
    deployment: str | None = None,
    *,
    grant: str | None = None,
) -> tuple[Outcome, str | None] | Reply:
    """Pick this attempt's outcome, or a 400 reply when ``x-sandbox-scenario`` is invalid."""
    try:
        return state.take_outcome(
            endpoint, deployment, request.headers.get(SCENARIO_HEADER), grant=grant
        )
    except ValueError as exc:
        return json_reply(400, {"sandbox_error": str(exc)})


def _planned_delivery(reply: Reply) -> str:
    if not reply.send_head:
        return "reset"
    return {Ending.RESET: "reset_mid_body", Ending.STALL: "stalled"}.get(reply.ending, "complete")


def deliver(
    state: SandboxState,
    entry: RecordedRequest,
    outcome: Outcome,
    source: str | None,
    reply: Reply,
) -> Reply:
    """Apply the outcome's transport fault and delay to a reply and log the result.

    The log gets the status and the planned delivery now; the server reports a client that
    leaves before the answer is complete through :attr:`Reply.on_client_gone`.
    """
    name = outcome.fault
    if name in ("slow_headers", "token_slow"):
        reply.head_delay += outcome.number("seconds")
    elif name == "slow_body":
        reply.trickle = outcome.number("seconds")
    elif name == "reset_mid_body":
        reply.cut = min(outcome.number("fraction"), 1.0)
        reply.ending = Ending.RESET
    elif name in ("reset", "token_reset"):
        reply.send_head = False
        reply.ending = Ending.RESET
    reply.head_delay += outcome.delay
    state.finish(
        entry,
        outcome=outcome,
        source=source,
        status=reply.status if reply.send_head else None,
        delivery=_planned_delivery(reply),
    )
    seq = entry.seq
    reply.on_client_gone = lambda head_sent: state.client_gone(seq, head_sent=head_sent)
    return reply


def conclude(state: SandboxState, entry: RecordedRequest, reply: Reply) -> Reply:
    """Log a reply that no scripted outcome shaped (outcome ``ok``) and return it."""
    return deliver(state, entry, Outcome("ok"), None, reply)
