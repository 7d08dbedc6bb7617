"""Entra ID v2.0 emulation: discovery, devicecode, device flow, token grants, admin hooks."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from urllib.parse import quote

import httpx
import pytest
from sbx_helpers import (
    SCOPE,
    FakeClock,
    entra_error_ok,
    poll,
    post_token,
    refresh,
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


# token: refresh grant -----------------------------------------------------------------------


def test_refresh_rotates_and_old_tokens_stay_valid(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    seed = clocked.issue_tokens()
    first = refresh(client, clocked, str(seed["refresh_token"]))
    assert first.status_code == 200
    body = first.json()
    assert body["refresh_token"] != seed["refresh_token"]
    assert body["expires_in"] == 3600 == body["ext_expires_in"]
    assert body["scope"] == (
        "https://cognitiveservices.azure.com/user_impersonation "
        "https://cognitiveservices.azure.com/.default offline_access"
    )
    assert "refresh_in" not in body
    assert "id_token" not in body
    claims = _claims(body["access_token"])
    assert claims["aud"] == "https://cognitiveservices.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{clocked.tenant_id}/"
    assert claims["tid"] == clocked.tenant_id
    assert claims["upn"] == claims["preferred_username"] == clocked.default_user
    assert claims["scp"] == "user_impersonation"
    assert claims["appid"] == clocked.client_id
    assert claims["exp"] == int(clock.now) + 3600
    assert claims["iat"] == claims["nbf"] == int(clock.now) - 300
    assert len(str(claims["oid"])) == GUID_LEN
    # Entra does not revoke the superseded refresh token
    assert refresh(client, clocked, str(seed["refresh_token"])).status_code == 200
    assert clocked.post_count("token") == 2


def test_response_headers_and_client_request_id(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = sandbox.issue_tokens()
    echo = client.post(
        sandbox.token_endpoint,
        data={
            "client_id": sandbox.client_id,
            "grant_type": "refresh_token",
            "refresh_token": str(seed["refresh_token"]),
        },
        headers={"client-request-id": "11111111-2222-3333-4444-555555555555",
                 "return-client-request-id": "true", "x-anchormailbox": "Oid:x@y"},
    )  # fmt: skip
    assert echo.headers["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    assert echo.headers["cache-control"] == "no-store, no-cache"
    assert echo.headers["pragma"] == "no-cache"
    assert echo.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" in echo.headers
    assert "x-ms-ests-server" in echo.headers
    assert len(echo.headers.get_list("set-cookie")) == 3
    silent = refresh(client, sandbox, str(seed["refresh_token"]))
    assert "client-request-id" not in silent.headers
    error = client.post(
        sandbox.token_endpoint,
        data={"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": "x"},
        headers={"client-request-id": "corr-1"},
    )
    body = error.json()
    assert body["correlation_id"] == "corr-1"
    assert error.headers["x-ms-request-id"] == body["trace_id"]


def test_random_lifetime_and_refresh_in(client: httpx.Client) -> None:
    with Sandbox() as sb:
        lifetimes = {int(str(sb.issue_tokens()["expires_in"])) for _ in range(40)}
        assert all(3600 <= x <= 5400 for x in lifetimes)
        assert len(lifetimes) > 1
    with Sandbox(token_lifetime=5, refresh_in=2) as sb:
        body = refresh(client, sb, str(sb.issue_tokens()["refresh_token"])).json()
        assert body["expires_in"] == 5
        assert body["refresh_in"] == 2


def test_opaque_tokens_and_clock_skew(client: httpx.Client, clock: FakeClock) -> None:
    with Sandbox(opaque_tokens=True, clock=clock, clock_skew=120, token_lifetime=60) as sb:
        opaque = sb.issue_tokens(scope=SCOPE + " openid")
        assert decode_jwt_claims(str(opaque["access_token"])) is None
        id_claims = _claims(opaque["id_token"])
        assert id_claims["iat"] == int(clock.now) + 120
        jwt = sb.issue_tokens(opaque=False)
        assert _claims(jwt["access_token"])["exp"] == int(clock.now) + 120 + 60
    with Sandbox(clock=clock) as sb:
        seed = str(sb.issue_tokens()["refresh_token"])
        sb.script("token", ["opaque_token", "clock_skew:-600"])
        assert decode_jwt_claims(refresh(client, sb, seed).json()["access_token"]) is None
        skewed = _claims(refresh(client, sb, seed).json()["access_token"])
        assert skewed["iat"] == int(clock.now) - 600 - 300


def test_scopes_client_info_and_id_token(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    graph = refresh(
        client, sandbox, seed, scope="User.Read openid offline_access", client_info="1"
    ).json()
    assert _claims(graph["access_token"])["aud"] == "https://graph.microsoft.com"
    assert graph["scope"] == "openid offline_access"  # Graph scopes are not resource-qualified
    raw = str(graph["client_info"])
    info = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert info["utid"] == sandbox.tenant_id
    assert len(info["uid"]) == GUID_LEN
    assert "id_token" in graph
    # without a scope the refresh token's consented scopes are used
    plain = post_token(client, sandbox, refresh_token=seed, scope="")
    assert _claims(plain.json()["access_token"])["aud"] == "https://cognitiveservices.azure.com"


def test_strict_rotation(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    newer = refresh(client, sandbox, seed).json()["refresh_token"]
    sandbox.script("token", ["rt_reuse_strict"])
    entra_error_ok(refresh(client, sandbox, seed).json(), "invalid_grant", 70000)
    assert refresh(client, sandbox, seed).status_code == 200  # one attempt only
    sandbox.rt_reuse_strict()
    assert refresh(client, sandbox, seed).status_code == 400
    assert refresh(client, sandbox, newer).status_code == 200
    assert refresh(client, sandbox, newer).status_code == 400
    sandbox.rt_reuse_strict(False)
    assert refresh(client, sandbox, newer).status_code == 200


def test_revoke_user(sandbox: Sandbox, client: httpx.Client) -> None:
    ada = str(sandbox.issue_tokens()["refresh_token"])
    bob = str(sandbox.issue_tokens("bob@contoso.com")["refresh_token"])
    sandbox.revoke_user()
    response = refresh(client, sandbox, ada)
    assert response.status_code == 400
    entra_error_ok(response.json(), "invalid_grant", 50173)
    assert refresh(client, sandbox, bob).status_code == 200
    fresh = str(sandbox.issue_tokens()["refresh_token"])
    assert refresh(client, sandbox, fresh).status_code == 200


def test_age_refresh_tokens(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    assert sandbox.age_refresh_tokens() == 1
    response = refresh(client, sandbox, seed)
    entra_error_ok(response.json(), "invalid_grant", 700082)
    assert "inactive for 90.00:00:00" in response.json()["error_description"]


def test_require_mfa_until_next_login(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    rotated = refresh(client, sandbox, seed).json()["refresh_token"]
    sandbox.require_mfa()
    for token in (seed, rotated):
        body = refresh(client, sandbox, token).json()
        entra_error_ok(body, "invalid_grant", 50076)
        assert body["suberror"] == "basic_action"
        assert json.loads(body["claims"])["access_token"]["capolids"]["essential"] is True
    flow = start_device(client, sandbox)
    sandbox.approve_device_code()
    relogin = poll(client, sandbox, flow["device_code"]).json()["refresh_token"]
    assert refresh(client, sandbox, relogin).status_code == 200
    sandbox.require_mfa(enabled=False)
    assert refresh(client, sandbox, seed).status_code == 200


@pytest.mark.parametrize(
    ("fields", "error", "code"),
    [
        ({"refresh_token": "bogus"}, "invalid_grant", 70000),
        ({"refresh_token": ""}, "invalid_request", 900144),
        ({"grant_type": "", "refresh_token": "x"}, "invalid_request", 900144),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", 70003),
        ({"client_id": ""}, "invalid_request", 900144),
        ({"client_id": "another-app"}, "unauthorized_client", 700016),
    ],
)
def test_token_request_errors(
    sandbox: Sandbox, client: httpx.Client, fields: dict[str, str], error: str, code: int
) -> None:
    response = post_token(client, sandbox, **fields)
    assert response.status_code == 400
    entra_error_ok(response.json(), error, code)


def test_non_form_body(sandbox: Sandbox, client: httpx.Client) -> None:
    response = client.post(sandbox.token_endpoint, json={"client_id": sandbox.client_id})
    entra_error_ok(response.json(), "invalid_request", 900144)
    assert sandbox.requests("token")[0].body == '{"client_id":"' + sandbox.client_id + '"}'


def test_public_client_must_not_send_a_secret(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    for extra in ({"client_secret": "s"}, {"client_assertion": "a.b.c"}):
        response = refresh(client, sandbox, seed, **extra)
        assert response.status_code == 401
        entra_error_ok(response.json(), "invalid_client", 700025)
    logged = sandbox.requests("token")[0].body
    assert logged["client_secret"] == fingerprint("s")  # type: ignore[index]
    assert logged["refresh_token"] == fingerprint(seed)  # type: ignore[index]


def test_confidential_client(client: httpx.Client) -> None:
    with Sandbox(client_secret="s3cret") as sb:
        assert sb.client_secret == "s3cret"
        seed = str(sb.issue_tokens()["refresh_token"])

        def code_of(response: httpx.Response) -> int:
            assert response.status_code in (200, 401)
            return 200 if response.status_code == 200 else response.json()["error_codes"][0]

        assert code_of(refresh(client, sb, seed)) == 7000218
        assert code_of(refresh(client, sb, seed, client_secret="wrong")) == 7000215
        assert code_of(refresh(client, sb, seed, client_assertion="a.b.c")) == 7000215
        assert code_of(refresh(client, sb, seed, client_secret="s3cret")) == 200
        basic = base64.b64encode(f"{sb.client_id}:s3cret".encode()).decode()
        via_basic = client.post(
            sb.token_endpoint,
            data={"grant_type": "refresh_token", "refresh_token": seed},
            headers={"authorization": f"Basic {basic}"},
        )
        assert via_basic.status_code == 200
        assert sb.requests("token")[-1].headers["authorization"].startswith("Basic sha256:")
        sb.expire_client_secret()
        assert code_of(refresh(client, sb, seed, client_secret="s3cret")) == 7000222
        sb.revoke_client_secret()
        assert code_of(refresh(client, sb, seed, client_secret="s3cret")) == 7000215
        sb.restore_client_secret()
        assert code_of(refresh(client, sb, seed, client_secret="s3cret")) == 200
        bad_basic = client.post(
            sb.token_endpoint,
            data={"client_id": sb.client_id, "grant_type": "refresh_token", "refresh_token": seed},
            headers={"authorization": "Basic !!!"},
        )
        assert bad_basic.json()["error_codes"] == [7000218]
        no_colon = base64.b64encode(b"just-an-id").decode()
        assert client.post(
            sb.token_endpoint,
            data={"client_id": sb.client_id, "grant_type": "refresh_token"},
            headers={"authorization": f"Basic {no_colon}"},
        ).json()["error_codes"] == [7000218]


def test_tenant_aliases(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    for tenant in ("common", "organizations", "contoso.onmicrosoft.com"):
        url = f"{sandbox.base_url}/{tenant}/oauth2/v2.0/token"
        form = {
            "client_id": sandbox.client_id,
            "grant_type": "refresh_token",
            "refresh_token": seed,
        }
        assert client.post(url, data=form).status_code == 200


def test_loop_detection(clocked: Sandbox, client: httpx.Client, clock: FakeClock) -> None:
    seed = str(clocked.issue_tokens()["refresh_token"])
    clocked.loop_detect(2, window=10)
    assert refresh(client, clocked, seed).status_code == 200
    assert refresh(client, clocked, seed).status_code == 200
    looped = refresh(client, clocked, seed)
    assert looped.status_code == 400
    entra_error_ok(looped.json(), "invalid_grant", 50196)
    clock.advance(11)
    assert refresh(client, clocked, seed).status_code == 200
    clocked.loop_detect(None)
    for _ in range(4):
        assert refresh(client, clocked, seed).status_code == 200
    clocked.script("token", ["loop_detect:3/60"])
    assert refresh(client, clocked, seed).json()["error_codes"] == [50196]
    with pytest.raises(ValueError, match="loop_detect needs"):
        clocked.loop_detect(-1)
