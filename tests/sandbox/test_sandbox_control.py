"""The HTTP control plane under /_sandbox/."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sbx_helpers import chat, poll, refresh, start_device

from saga_magic.sandbox import CATALOGUE, Sandbox


def _post(client: httpx.Client, sb: Sandbox, path: str, body: Any = None) -> httpx.Response:
    return client.post(f"{sb.base_url}/_sandbox/{path}", json=body)


def _get(client: httpx.Client, sb: Sandbox, path: str) -> httpx.Response:
    return client.get(f"{sb.base_url}/_sandbox/{path}")


def test_index_and_unknown_routes(sandbox: Sandbox, client: httpx.Client) -> None:
    routes = client.get(f"{sandbox.base_url}/_sandbox").json()["routes"]
    assert "POST /_sandbox/script" in routes
    assert "GET /_sandbox/requests" in routes
    assert _get(client, sandbox, "nope").status_code == 404
    assert _get(client, sandbox, "reset").status_code == 405
    assert sandbox.requests() == []  # the control plane is never recorded


def test_script_round_trip(sandbox: Sandbox, client: httpx.Client) -> None:
    queued = _post(
        client,
        sandbox,
        "script",
        {"endpoint": "chat", "outcomes": ["429:retry_after=1.5", {"fault": "500"}, "ok"]},
    )
    assert queued.status_code == 200
    assert queued.json() == {
        "queued": 3,
        "pending": {"chat": ["429:retry_after=1.5", "500_json", "ok"]},
    }
    _post(client, sandbox, "script", {"endpoint": "chat", "deployment": "o4-mini",
                                      "outcomes": ["503"]})  # fmt: skip
    assert _get(client, sandbox, "script").json()["pending"] == {
        "chat": ["429:retry_after=1.5", "500_json", "ok"],
        "chat/o4-mini": ["503_json:retry_after=1"],
    }
    assert [chat(client, sandbox).status_code for _ in range(4)] == [429, 500, 200, 200]
    replaced = _post(
        client,
        sandbox,
        "script",
        {"endpoint": "token", "outcomes": ["rt_revoked"], "replace": True},
    )
    assert replaced.json()["pending"]["token"] == ["rt_revoked"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"endpoint": "chat", "outcomes": ["nope"]}, "unknown fault 'nope'"),
        ({"endpoint": "chat", "outcomes": ["ok", "rt_revoked"]}, "does not apply"),
        ({"endpoint": "mail", "outcomes": []}, "unknown endpoint"),
        ({"endpoint": "chat"}, "expected {"),
        ({"endpoint": 3, "outcomes": []}, "'endpoint' must be a string"),
        ({"endpoint": "chat", "outcomes": [], "replace": "yes"}, "'replace' must be true"),
        ({"endpoint": "token", "deployment": "x", "outcomes": []}, "only the chat endpoint"),
    ],
)
def test_script_errors(
    sandbox: Sandbox, client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    response = _post(client, sandbox, "script", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert sandbox.pending() == {}


def test_body_must_be_a_json_object(sandbox: Sandbox, client: httpx.Client) -> None:
    url = f"{sandbox.base_url}/_sandbox/script"
    as_json = {"content-type": "application/json"}
    assert client.post(url, content=b"{nope", headers=as_json).json() == {
        "error": "the body must be JSON"
    }
    assert client.post(url, json=[1]).json() == {"error": "the body must be a JSON object"}


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({**JSON, "origin": "https://evil.example"}, b"{}", 403),
        ({"origin": "null"}, b"", 403),
        ({**JSON, "host": "evil.example"}, b"{}", 403),
        ({**JSON, "host": "127.0.0.1.evil.example:80"}, b"{}", 403),
        ({**JSON, "host": "[::2]:80"}, b"{}", 403),
        ({**JSON, "host": "[::1"}, b"{}", 403),
        ({"content-type": "text/plain"}, b'{"endpoint":"chat","outcomes":["500"]}', 415),
        ({"content-type": "application/x-www-form-urlencoded"}, b"endpoint=chat", 415),
        ({"content-type": "text/plain"}, b"", 415),
        ({}, b"{}", 415),  # a body without a content-type
        ({**JSON, "host": "localhost:1"}, b"{}", 200),
        ({**JSON, "host": "127.9.9.9"}, b"{}", 200),
        ({**JSON, "host": "[::1]:8080"}, b"{}", 200),
        ({"content-type": "application/json; charset=utf-8"}, b"{}", 200),
        ({}, b"", 200),  # a bodiless POST (curl -X POST) needs no content-type
    ],
)
def test_control_plane_refuses_what_a_web_page_can_send(
    sandbox: Sandbox,
    client: httpx.Client,
    headers: dict[str, str],
    content: bytes,
    status: int,
) -> None:
    """Finding S2: CSRF (Origin, text/plain and form bodies) and DNS rebinding (Host)."""
    sandbox.script("chat", ["500"])
    url = f"{sandbox.base_url}/_sandbox/reset"
    response = client.post(url, content=content, headers=headers)
    assert response.status_code == status, response.text
    assert (sandbox.pending() == {}) is (status == 200)


def test_control_plane_reads_are_guarded_too(sandbox: Sandbox, client: httpx.Client) -> None:
    url = f"{sandbox.base_url}/_sandbox/requests"
    assert client.get(url, headers={"host": "rebound.example"}).status_code == 403
    assert client.get(url, headers={"origin": "http://127.0.0.1"}).status_code == 403
    assert client.get(url).status_code == 200


def test_requests_and_reset(sandbox: Sandbox, client: httpx.Client) -> None:
    chat(client, sandbox)
    refresh(client, sandbox, "bogus")
    everything = _get(client, sandbox, "requests").json()["requests"]
    assert [r["endpoint"] for r in everything] == ["chat", "token"]
    first = everything[0]
    assert first["status"] == 200
    assert first["outcome"] == "ok"
    assert first["source"] is None
    assert first["method"] == "POST"
    assert first["query"] == {"api-version": "2024-10-21"}
    assert first["headers"]["authorization"].startswith("Bearer sha256:")
    assert isinstance(first["time"], float)
    assert everything[1]["body"]["refresh_token"].startswith("sha256:")
    token_only = _get(client, sandbox, "requests?endpoint=token").json()["requests"]
    assert [r["seq"] for r in token_only] == [2]
    assert _get(client, sandbox, "requests?since=1").json()["requests"][0]["seq"] == 2
    assert _get(client, sandbox, "requests?deployment=gpt-4o").json()["requests"][0]["seq"] == 1
    assert _get(client, sandbox, "requests?since=x").status_code == 400
    assert _get(client, sandbox, "stats").json() == {
        "post_counts": {"chat": 1, "devicecode": 0, "token": 1}
    }
    assert _post(client, sandbox, "reset").json() == {"reset": True}
    assert _get(client, sandbox, "requests").json() == {"requests": []}
    assert sandbox.post_count("chat") == 0


def test_faults_catalogue(sandbox: Sandbox, client: httpx.Client) -> None:
    faults = _get(client, sandbox, "faults").json()["faults"]
    assert {f["name"] for f in faults} == set(CATALOGUE)
    token = {f["name"] for f in _get(client, sandbox, "faults?endpoint=token").json()["faults"]}
    assert "rt_revoked" in token
    assert "429_both" not in token
    assert _get(client, sandbox, "faults?endpoint=mail").status_code == 400


def test_deployments(sandbox: Sandbox, client: httpx.Client) -> None:
    names = [d["name"] for d in _get(client, sandbox, "deployments").json()["deployments"]]
    assert names == ["gpt-4o", "o4-mini"]
    created = _post(client, sandbox, "deployments", {"name": "o3", "reasoning": True})
    assert created.json()["deployment"]["reasoning"] is True
    updated = _post(client, sandbox, "deployments", {"name": "o3", "permission_denied": 403})
    assert updated.json()["deployment"] == {
        **created.json()["deployment"],
        "permission_denied": 403,
    }
    assert sandbox.deployment("o3").reasoning
    for bad in (
        {"reasoning": True},
        {"name": "x", "colour": "red"},
        {"name": "x", "reasoning": "yes"},
        {"name": "x", "context_window": True},
    ):
        assert _post(client, sandbox, "deployments", bad).status_code == 400


def test_entra_hooks(sandbox: Sandbox, client: httpx.Client) -> None:
    issued = _post(client, sandbox, "entra/issue_tokens", {"user": "bob@contoso.com",
                                                           "expires_in": 60}).json()  # fmt: skip
    assert issued["expires_in"] == 60
    assert "refresh_token" in issued
    opaque = _post(client, sandbox, "entra/issue_tokens", {"opaque": True}).json()
    assert opaque["access_token"].count(".") == 0
    assert _post(client, sandbox, "entra/issue_tokens", {"opaque": 1}).status_code == 400
    assert _post(client, sandbox, "entra/issue_tokens", {"expires_in": "x"}).status_code == 400
    bob = issued["refresh_token"]
    assert _post(client, sandbox, "entra/revoke_user", {"user": "bob@contoso.com"}).json() == {
        "ok": True
    }
    assert refresh(client, sandbox, bob).json()["error_codes"] == [50173]
    seed = str(sandbox.issue_tokens()["refresh_token"])
    assert _post(client, sandbox, "entra/age_refresh_tokens", {}).json() == {"aged": 2}
    assert refresh(client, sandbox, seed).json()["error_codes"] == [700082]
    seed = str(sandbox.issue_tokens()["refresh_token"])
    _post(client, sandbox, "entra/require_mfa", {"enabled": True})
    assert refresh(client, sandbox, seed).json()["error_codes"] == [50076]
    _post(client, sandbox, "entra/require_mfa", {"enabled": False})
    assert refresh(client, sandbox, seed).status_code == 200
    _post(client, sandbox, "entra/rt_reuse_strict", {"enabled": True})
    assert refresh(client, sandbox, seed).status_code == 400
    _post(client, sandbox, "entra/rt_reuse_strict", {"enabled": False})
    assert _post(client, sandbox, "entra/loop_detect", {"n": 1, "window": 30}).json() == {
        "loop_detect": [1, 30.0]
    }
    assert _post(client, sandbox, "entra/loop_detect", {"n": None}).json() == {"loop_detect": None}
    assert _post(client, sandbox, "entra/loop_detect", {"n": 1, "window": "x"}).status_code == 400
    assert _post(client, sandbox, "entra/loop_detect", {"n": -1}).status_code == 400
    assert _post(client, sandbox, "entra/expire_access_tokens", {}).json()["expired"] >= 3
    for hook in ("expire_client_secret", "revoke_client_secret", "restore_client_secret"):
        assert _post(client, sandbox, f"entra/{hook}").status_code == 200
    assert _post(client, sandbox, "entra/revoke_user", {"user": 5}).status_code == 400


def test_device_hooks(sandbox: Sandbox, client: httpx.Client) -> None:
    assert _post(client, sandbox, "device/approve").status_code == 404
    flow = start_device(client, sandbox)
    listed = _get(client, sandbox, "device").json()["device_codes"]
    assert [d["user_code"] for d in listed] == [flow["user_code"]]
    assert _post(client, sandbox, "device/approve", {"user": "eve@contoso.com"}).json() == {
        "approved": flow["user_code"]
    }
    assert (
        _post(client, sandbox, "device/approve", {"user_code": flow["user_code"]}).status_code
        == 400
    )
    assert poll(client, sandbox, flow["device_code"]).status_code == 200
    second, third = start_device(client, sandbox), start_device(client, sandbox)
    assert _post(client, sandbox, "device/decline", {"user_code": second["user_code"]}).json() == {
        "declined": second["user_code"]
    }
    assert _post(client, sandbox, "device/expire", {}).json() == {"expired": third["user_code"]}
    assert _post(client, sandbox, "device/auto_approve", {"enabled": True}).json() == {"ok": True}
    assert sandbox.auto_approve
    fourth = start_device(client, sandbox)
    assert poll(client, sandbox, fourth["device_code"]).status_code == 200
