"""Wire helpers for the sandbox tests (a uniquely named module: there is no tests package)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from saga_magic.sandbox import Sandbox
from saga_magic.sandbox.entra import DEVICE_CODE_GRANT

SCOPE = "https://cognitiveservices.azure.com/.default offline_access"


class FakeClock:
    """A settable wall clock for the sandbox (token expiry, device flows, loop detection)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def token_form(sb: Sandbox, **fields: str) -> dict[str, str]:
    """Return a refresh-token grant form with overrides."""
    form = {"client_id": sb.client_id, "grant_type": "refresh_token", "scope": SCOPE}
    form.update(fields)
    return form


def post_token(client: httpx.Client, sb: Sandbox, **fields: str) -> httpx.Response:
    return client.post(sb.token_endpoint, data=token_form(sb, **fields))


def refresh(client: httpx.Client, sb: Sandbox, refresh_token: str, **extra: str) -> httpx.Response:
    return post_token(client, sb, refresh_token=refresh_token, **extra)


def start_device(
    client: httpx.Client, sb: Sandbox, scope: str = SCOPE + " openid"
) -> dict[str, Any]:
    response = client.post(sb.devicecode_endpoint, data={"client_id": sb.client_id, "scope": scope})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(client: httpx.Client, sb: Sandbox, device_code: str, **extra: str) -> httpx.Response:
    data = {"client_id": sb.client_id, "grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    data.update(extra)
    return client.post(sb.token_endpoint, data=data)


def bearer(sb: Sandbox, **kwargs: Any) -> dict[str, str]:
    """Return an Authorization header with a freshly issued access token."""
    tokens = sb.issue_tokens(**kwargs)
    return {"authorization": f"Bearer {tokens['access_token']}"}


def user_message(text: str = "hello there wide world", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


def chat(
    client: httpx.Client,
    sb: Sandbox,
    body: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    head = bearer(sb) if headers is None else headers
    return client.post(url or sb.chat_endpoint, json=body or user_message(), headers=head, **kwargs)


def sse_events(text: str) -> list[str]:
    """Return the data payloads of an SSE body (comments skipped, CRLF accepted)."""
    events: list[str] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if lines:
            events.append("\n".join(lines))
    return events


def sse_json(text: str) -> list[Any]:
    """Return the JSON chunks of an SSE body (``[DONE]`` as the string ``"[DONE]"``)."""
    return [e if e == "[DONE]" else json.loads(e) for e in sse_events(text)]


def entra_error_ok(body: dict[str, Any], error: str, code: int) -> None:
    """Assert the PROTOCOLS 1.4 Entra error shape."""
    assert body["error"] == error
    assert body["error_codes"] == [code]
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    lines = description.split("\r\n")
    assert lines[1] == f"Trace ID: {body['trace_id']}"
    assert lines[2] == f"Correlation ID: {body['correlation_id']}"
    assert lines[3] == f"Timestamp: {body['timestamp']}"
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    assert len(body["timestamp"]) == len("2024-05-01 12:00:00Z")
    assert body["timestamp"].endswith("Z")
