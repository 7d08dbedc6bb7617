"""Entra ID v2.0 emulation: discovery, the devicecode endpoint and the device-code flow."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import quote

import httpx
import pytest
from sbx_helpers import (
    SCOPE,
    FakeClock,
    entra_error_ok,
    poll,
    start_device,
)

from saga_magic.sandbox import Sandbox, decode_jwt_claims, fingerprint

GUID_LEN = 36


def _claims(token: object) -> dict[str, object]:
    claims = decode_jwt_claims(str(token))
    assert claims is not None
    return claims


# discovery ----------------------------------------------------------------------------------


def test_openid_configuration(sandbox: Sandbox, client: httpx.Client) -> None:
    url = f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0/.well-known/openid-configuration"
    response = client.get(url)
    assert response.status_code == 200
    doc = response.json()
    assert doc["token_endpoint"] == sandbox.token_endpoint
    assert doc["device_authorization_endpoint"] == sandbox.devicecode_endpoint
    assert doc["issuer"] == f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0"
    assert doc["authorization_endpoint"].endswith("/oauth2/v2.0/authorize")
    assert len(response.headers["x-ms-request-id"]) == GUID_LEN
    common = client.get(f"{sandbox.base_url}/common/v2.0/.well-known/openid-configuration").json()
    assert common["issuer"] == f"{sandbox.base_url}/{{tenantid}}/v2.0"
    assert [r.endpoint for r in sandbox.requests()] == ["discovery", "discovery"]


def test_unknown_tenant(sandbox: Sandbox, client: httpx.Client) -> None:
    for path in (
        "/nope/v2.0/.well-known/openid-configuration",
        "/nope/discovery/v2.0/keys",
        "/nope/oauth2/v2.0/token",
        "/nope/oauth2/v2.0/devicecode",
    ):
        response = client.post(sandbox.base_url + path, data={"client_id": sandbox.client_id})
        if response.status_code == 200:  # pragma: no cover - diagnostic
            pytest.fail(path)
        if "openid" in path or "keys" in path:
            response = client.get(sandbox.base_url + path)
        assert response.status_code == 400
        entra_error_ok(response.json(), "invalid_request", 90002)
        assert "Tenant 'nope' not found" in response.json()["error_description"]


def test_keys_and_instance_discovery(sandbox: Sandbox, client: httpx.Client) -> None:
    keys = client.get(f"{sandbox.base_url}/{sandbox.tenant_id}/discovery/v2.0/keys")
    assert keys.json() == {"keys": []}
    host = sandbox.base_url.removeprefix("http://")
    plain = client.get(f"{sandbox.base_url}/common/discovery/instance?api-version=1.1").json()
    assert plain == {
        "tenant_discovery_endpoint": (
            f"{sandbox.base_url}/common/v2.0/.well-known/openid-configuration"
        ),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }
    authorize = quote(
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    tenant = client.get(
        f"{sandbox.base_url}/common/discovery/instance?authorization_endpoint={authorize}"
    ).json()
    assert tenant["tenant_discovery_endpoint"].startswith(
        f"{sandbox.base_url}/contoso.onmicrosoft.com/"
    )


# devicecode ---------------------------------------------------------------------------------


def test_devicecode_response(sandbox: Sandbox, client: httpx.Client) -> None:
    response = client.post(
        sandbox.devicecode_endpoint, data={"client_id": sandbox.client_id, "scope": SCOPE}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store, no-cache"
    body = response.json()
    assert set(body) == {
        "user_code",
        "device_code",
        "verification_uri",
        "expires_in",
        "interval",
        "message",
    }
    assert body["expires_in"] == 900
    assert body["interval"] == 5
    assert body["verification_uri"] == f"{sandbox.base_url}/devicelogin"
    assert body["user_code"] in body["message"]
    assert body["verification_uri"] in body["message"]
    assert body["message"].startswith("To sign in, use a web browser")
    assert len(body["device_code"]) > 40
    [info] = sandbox.device_codes()
    assert info.user_code == body["user_code"]
    assert info.state == "pending"
    assert info.to_dict()["scope"] == SCOPE
    logged = sandbox.requests("devicecode")[0]
    assert logged.body == {"client_id": sandbox.client_id, "scope": SCOPE}


@pytest.mark.parametrize(
    ("mkt", "start"), [("de-DE", "Um sich anzumelden"), ("fr-FR", "Pour"), ("xx-XX", "To sign in")]
)
def test_devicecode_message_localised(
    sandbox: Sandbox, client: httpx.Client, mkt: str, start: str
) -> None:
    response = client.post(
        f"{sandbox.devicecode_endpoint}?mkt={mkt}",
        data={"client_id": sandbox.client_id, "scope": SCOPE},
    )
    assert response.json()["message"].startswith(start)


@pytest.mark.parametrize(
    ("data", "status", "error", "code"),
    [
        ({"scope": SCOPE}, 400, "invalid_request", 900144),
        ({"client_id": "someone-else", "scope": SCOPE}, 400, "unauthorized_client", 700016),
        ({"client_id": "CLIENT"}, 400, "invalid_request", 900144),
    ],
)
def test_devicecode_errors(
    sandbox: Sandbox,
    client: httpx.Client,
    data: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    data = {k: sandbox.client_id if v == "CLIENT" else v for k, v in data.items()}
    response = client.post(sandbox.devicecode_endpoint, data=data)
    assert response.status_code == status
    entra_error_ok(response.json(), error, code)


def test_get_is_refused(sandbox: Sandbox, client: httpx.Client) -> None:
    for url in (sandbox.token_endpoint, sandbox.devicecode_endpoint):
        response = client.get(url)
        assert response.status_code == 400
        entra_error_ok(response.json(), "invalid_request", 900561)
        assert "Received a GET request" in response.json()["error_description"]
    assert sandbox.post_count("token") == 0


# device flow --------------------------------------------------------------------------------


def test_device_flow_pending_approved_redeemed(sandbox: Sandbox, client: httpx.Client) -> None:
    flow = start_device(client, sandbox)
    pending = poll(client, sandbox, flow["device_code"])
    assert pending.status_code == 400
    entra_error_ok(pending.json(), "authorization_pending", 70016)
    assert (
        sandbox.approve_device_code(flow["user_code"].lower(), user="grace@contoso.com")
        == (flow["user_code"])
    )
    granted = poll(client, sandbox, flow["device_code"])
    assert granted.status_code == 200
    tokens = granted.json()
    assert tokens["token_type"] == "Bearer"
    assert {"access_token", "refresh_token", "id_token", "expires_in", "ext_expires_in"} <= set(
        tokens
    )
    assert "client_info" not in tokens
    assert _claims(tokens["access_token"])["upn"] == "grace@contoso.com"
    id_claims = _claims(tokens["id_token"])
    assert id_claims["aud"] == sandbox.client_id
    assert id_claims["iss"] == f"{sandbox.base_url}/{sandbox.tenant_id}/v2.0"
    assert id_claims["preferred_username"] == "grace@contoso.com"
    again = poll(client, sandbox, flow["device_code"])
    entra_error_ok(again.json(), "invalid_grant", 54005)
    assert [d.state for d in sandbox.device_codes()] == ["redeemed"]
    assert sandbox.requests("token")[0].body["device_code"] == fingerprint(flow["device_code"])  # type: ignore[index]


def test_device_flow_declined_and_expired(sandbox: Sandbox, client: httpx.Client) -> None:
    first = start_device(client, sandbox)
    second = start_device(client, sandbox)
    assert sandbox.decline_device_code(first["user_code"]) == first["user_code"]
    assert sandbox.expire_device_code() == second["user_code"]  # latest pending
    entra_error_ok(
        poll(client, sandbox, first["device_code"]).json(), "authorization_declined", 70000
    )
    entra_error_ok(poll(client, sandbox, second["device_code"]).json(), "expired_token", 70019)
    with pytest.raises(LookupError, match="no pending"):
        sandbox.approve_device_code()
    with pytest.raises(ValueError, match="is declined, not pending"):
        sandbox.approve_device_code(first["user_code"])
    with pytest.raises(LookupError, match="no device-code login with user code"):
        sandbox.decline_device_code("NOPE")


def test_device_flow_expires_on_the_clock(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    flow = start_device(client, clocked)
    clock.advance(899)
    entra_error_ok(
        poll(client, clocked, flow["device_code"]).json(), "authorization_pending", 70016
    )
    clock.advance(1)
    entra_error_ok(poll(client, clocked, flow["device_code"]).json(), "expired_token", 70019)


def test_device_expire_early_scripted_on_devicecode(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    clocked.script("devicecode", ["device_expire_early:300"])
    flow = start_device(client, clocked)
    assert flow["expires_in"] == 900  # the response still promises 900 s
    clock.advance(299)
    entra_error_ok(
        poll(client, clocked, flow["device_code"]).json(), "authorization_pending", 70016
    )
    clock.advance(2)
    entra_error_ok(poll(client, clocked, flow["device_code"]).json(), "expired_token", 70019)


def test_device_expire_early_scripted_on_poll(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    flow = start_device(client, clocked)
    clock.advance(10)
    clocked.script("token", ["device_expire_early:5"])
    entra_error_ok(poll(client, clocked, flow["device_code"]).json(), "expired_token", 70019)


def test_slow_down_when_polling_too_fast(clock: FakeClock, client: httpx.Client) -> None:
    with Sandbox(clock=clock, enforce_poll_interval=True) as sb:
        flow = start_device(client, sb)
        entra_error_ok(poll(client, sb, flow["device_code"]).json(), "authorization_pending", 70016)
        clock.advance(4.9)
        fast = poll(client, sb, flow["device_code"])
        assert fast.status_code == 400
        assert fast.json()["error"] == "slow_down"
        clock.advance(5)
        assert poll(client, sb, flow["device_code"]).json()["error"] == "authorization_pending"


def test_auto_approve(client: httpx.Client) -> None:
    with Sandbox(auto_approve=True) as sb:
        assert sb.auto_approve
        flow = start_device(client, sb, scope="https://cognitiveservices.azure.com/.default")
        tokens = poll(client, sb, flow["device_code"]).json()
        assert "refresh_token" not in tokens  # no offline_access
        assert "id_token" not in tokens  # no openid
        assert _claims(tokens["access_token"])["upn"] == sb.default_user
        sb.auto_approve = False
        flow = start_device(client, sb)
        assert poll(client, sb, flow["device_code"]).json()["error"] == "authorization_pending"


def test_unknown_device_code(sandbox: Sandbox, client: httpx.Client) -> None:
    entra_error_ok(poll(client, sandbox, "nope").json(), "bad_verification_code", 70018)
    missing = poll(client, sandbox, "")
    entra_error_ok(missing.json(), "invalid_request", 900144)
    assert "'device_code'" in missing.json()["error_description"]


def test_wait_for_user_code(sandbox: Sandbox, client: httpx.Client) -> None:
    with pytest.raises(TimeoutError):
        sandbox.wait_for_user_code(within=0.01)
    found: list[str] = []
    waiter = threading.Thread(target=lambda: found.append(sandbox.wait_for_user_code(2.0)))
    waiter.start()
    flow = start_device(client, sandbox)
    waiter.join(5)
    assert found == [flow["user_code"]]


async def test_wait_for_user_code_async(sandbox: Sandbox, aclient: httpx.AsyncClient) -> None:
    with pytest.raises(TimeoutError):
        await sandbox.wait_for_user_code_async(within=0.01)

    async def login() -> httpx.Response:
        return await aclient.post(
            sandbox.devicecode_endpoint, data={"client_id": sandbox.client_id, "scope": SCOPE}
        )

    task = asyncio.create_task(login())
    code = await sandbox.wait_for_user_code_async()
    assert code == (await task).json()["user_code"]


def test_devicelogin_page(sandbox: Sandbox, client: httpx.Client) -> None:
    page = client.get(f"{sandbox.base_url}/devicelogin")
    assert page.status_code == 200
    assert "Sandbox device login" in page.text
    assert page.headers["content-type"].startswith("text/html")
    flow = start_device(client, sandbox)
    done = client.post(
        f"{sandbox.base_url}/devicelogin",
        data={"user_code": flow["user_code"], "user": "ada@contoso.com", "action": "approve"},
    )
    assert done.status_code == 200
    assert f"Approved {flow['user_code']}" in done.text
    assert poll(client, sandbox, flow["device_code"]).status_code == 200
    second = start_device(client, sandbox)
    declined = client.post(
        f"{sandbox.base_url}/devicelogin",
        data={"user_code": second["user_code"], "action": "decline"},
    )
    assert f"Declined {second['user_code']}" in declined.text
    bad = client.post(f"{sandbox.base_url}/devicelogin", data={"user_code": "NOPE"})
    assert bad.status_code == 400
    assert "Not done" in bad.text
