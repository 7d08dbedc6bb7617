"""Entra ID v2.0 emulation: the token endpoint's refresh grant, client credentials, admin hooks."""

from __future__ import annotations

import base64
import json

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
    response = client.post(
        sandbox.token_endpoint, json={"client_id": sandbox.client_id, "refresh_token": "rt-1"}
    )
    entra_error_ok(response.json(), "invalid_request", 900144)
    assert sandbox.requests("token")[0].body == {
        "client_id": sandbox.client_id,
        "refresh_token": fingerprint("rt-1"),
    }


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


def test_scripted_strict_rotation_sticks_to_the_user(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    """Finding 10: a scripted rt_reuse_strict is not a one-request switch."""
    seed = str(sandbox.issue_tokens()["refresh_token"])
    refresh(client, sandbox, seed)
    bob = str(sandbox.issue_tokens("bob@contoso.com")["refresh_token"])
    refresh(client, sandbox, bob)
    sandbox.script("token", ["rt_reuse_strict"])
    entra_error_ok(refresh(client, sandbox, seed).json(), "invalid_grant", 70000)
    assert refresh(client, sandbox, seed).status_code == 400  # still strict for this user
    assert refresh(client, sandbox, bob).status_code == 200  # other users are not
    sandbox.rt_reuse_strict(False)  # the switch off ends it
    assert refresh(client, sandbox, seed).status_code == 200


def test_scripted_loop_detect_judges_one_request(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    """Finding 10 (documented, not a switch): the rule applies to the request that takes it."""
    seed = str(clocked.issue_tokens()["refresh_token"])
    clocked.script("token", ["loop_detect:0", "ok"])
    assert refresh(client, clocked, seed).json()["error_codes"] == [50196]  # 1 > 0
    assert refresh(client, clocked, seed).status_code == 200
    assert clocked.state.loop_detect is None


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
