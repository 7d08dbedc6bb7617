"""The request log never holds a secret: one set of masking rules for every endpoint (S1)."""

from __future__ import annotations

import json

import httpx
import pytest
from sbx_helpers import bearer, chat, user_message

from saga_magic.sandbox import Sandbox, fingerprint
from saga_magic.sandbox.masking import (
    BODY_CAP,
    mask_body,
    mask_headers,
    mask_json,
    mask_query,
    mask_text,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_headers() -> None:
    masked = mask_headers(
        {
            "authorization": "Bearer  tok",  # finding 18: two spaces
            "proxy-authorization": "Basic dXNlcjpwYXNz",
            "api-key": "k1",
            "x-api-key": "k2",
            "ocp-apim-subscription-key": "k3",
            "cookie": "fpc=c1; session=c2; flag",
            "x-ms-client-request-id": "visible",
        }
    )
    assert masked == {
        "authorization": f"Bearer {fingerprint('tok')}",
        "proxy-authorization": f"Basic {fingerprint('dXNlcjpwYXNz')}",
        "api-key": fingerprint("k1"),
        "x-api-key": fingerprint("k2"),
        "ocp-apim-subscription-key": fingerprint("k3"),
        "cookie": f"fpc={fingerprint('c1')}; session={fingerprint('c2')}; {fingerprint('flag')}",
        "x-ms-client-request-id": "visible",
    }
    assert mask_headers({"authorization": "opaque-only"}) == {
        "authorization": fingerprint("opaque-only")
    }


def test_query_and_json() -> None:
    assert mask_query({"api-version": "v", "client_secret": "s", "API-KEY": "k"}) == {
        "api-version": "v",
        "client_secret": fingerprint("s"),
        "API-KEY": fingerprint("k"),
    }
    assert mask_json(
        {"outer": [{"refresh_token": "r", "n": 1}], "code": {"nested": True}, "user_code": "U"}
    ) == {
        "outer": [{"refresh_token": fingerprint("r"), "n": 1}],
        "code": fingerprint('{"nested":true}'),
        "user_code": "U",
    }


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("grant_type=refresh_token&refresh_token=R1&client_id=c", "R1"),
        ('{"client_secret": "S1", "x": 1', "S1"),  # truncated JSON: a text body
        ("client_assertion=A1", "A1"),
        ("device_code: D1", "D1"),
        ("api-key=K1", "K1"),
        ("code=C1&state=s", "C1"),
        ("access_token=T1", "T1"),
        ("Authorization: Bearer B1", "B1"),
    ],
)
def test_text(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert fingerprint(secret) in masked


def test_text_keeps_what_is_not_secret() -> None:
    assert mask_text("user_code=ABC&scope=openid") == "user_code=ABC&scope=openid"


def test_body_kinds() -> None:
    assert mask_body(b"refresh_token=R&x=1", FORM) == {"refresh_token": fingerprint("R"), "x": "1"}
    assert mask_body(b'{"password":"P"}', {}) == {"password": fingerprint("P")}
    assert (
        mask_body(b"password=P", {"content-type": "text/plain"}) == f"password={fingerprint('P')}"
    )
    assert mask_body(b"", {}) == ""
    for depth in (800, 30_000):  # parses but too deep to walk; too deep to parse
        deep = b"[" * depth + b"]" * depth
        assert mask_body(deep, {}) == deep.decode()


def test_body_cap_and_marker() -> None:
    """Finding 19: the log keeps at most 64 KB of a body, with a marker."""
    raw = json.dumps({"refresh_token": "R", "pad": "x" * BODY_CAP}).encode()
    logged = mask_body(raw, {})
    assert isinstance(logged, str)
    assert logged.endswith(f"...[sandbox: body cut at {BODY_CAP} of {len(raw)} bytes]")
    assert len(logged) < BODY_CAP + 100
    assert '"refresh_token": "' + fingerprint("R") in logged


def _logged_text(sb: Sandbox) -> str:
    return json.dumps([r.to_dict() for r in sb.requests()])


def test_token_endpoint_logs_no_secret_in_any_body_or_query(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    secrets = ["rt-text", "cs-json", "cs-query", "key-query", "dc-other", "cookie-1", "xk-1"]
    url = sandbox.token_endpoint
    client.post(url, content=b"grant_type=refresh_token&refresh_token=rt-text",
                headers={"content-type": "text/plain"})  # fmt: skip
    client.post(url, json={"client_id": sandbox.client_id, "client_secret": "cs-json"})
    client.post(f"{url}?client_secret=cs-query&api-key=key-query", data={"client_id": "c"})
    client.post(f"{sandbox.base_url}/{sandbox.tenant_id}/oauth2/v2.0/tokn",
                data={"device_code": "dc-other"},
                headers={"cookie": "session=cookie-1", "x-api-key": "xk-1"})  # fmt: skip
    logged = _logged_text(sandbox)
    for secret in secrets:
        assert secret not in logged
        assert fingerprint(secret) in logged
    endpoints = [r.endpoint for r in sandbox.requests()]
    assert endpoints == ["token", "token", "token", "other"]
    assert sandbox.requests("other")[0].body == {"device_code": fingerprint("dc-other")}
    assert sandbox.requests("token")[2].query == {
        "client_secret": fingerprint("cs-query"),
        "api-key": fingerprint("key-query"),
    }


def test_chat_logs_no_credential_header(sandbox: Sandbox, client: httpx.Client) -> None:
    headers = {
        **bearer(sandbox),
        "x-api-key": "xk-2",
        "proxy-authorization": "Basic pa-2",
        "cookie": "a=ck-2",
    }
    assert chat(client, sandbox, headers=headers).status_code == 200
    logged = _logged_text(sandbox)
    for secret in ("xk-2", "pa-2", "ck-2", headers["authorization"].split()[1]):
        assert secret not in logged
    assert sandbox.requests("chat")[0].body == user_message()


def test_big_chat_body_is_cut_in_the_log(sandbox: Sandbox, client: httpx.Client) -> None:
    big = user_message("word " * 20_000)
    assert chat(client, sandbox, big).status_code == 200
    body = sandbox.requests("chat")[0].body
    assert isinstance(body, str)
    assert body.endswith("bytes]")
    assert len(body) < BODY_CAP + 100
