"""Scripted faults on the Entra token and devicecode endpoints (PROTOCOLS 4.1)."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest
from sbx_helpers import SCOPE, FakeClock, entra_error_ok, poll, refresh, start_device

from saga_magic.sandbox import Sandbox


@pytest.fixture
def seed(sandbox: Sandbox) -> str:
    return str(sandbox.issue_tokens()["refresh_token"])


@pytest.mark.parametrize(
    ("entry", "retry_after"),
    [("token_429", "1"), ("token_429:7", "7"), ("429", "1"), ("token_429_garbage", "soon"),
     ("token_429_garbage:nan", "nan")],
)  # fmt: skip
def test_token_429(
    sandbox: Sandbox, client: httpx.Client, seed: str, entry: str, retry_after: str
) -> None:
    sandbox.script("token", [entry])
    response = refresh(client, sandbox, seed)
    assert response.status_code == 429
    assert response.headers["retry-after"] == retry_after
    entra_error_ok(response.json(), "temporarily_unavailable", 90055)
    assert refresh(client, sandbox, seed).status_code == 200  # consumed


def test_token_429_http_date(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.script("token", ["token_429_date:30"])
    response = refresh(client, sandbox, seed)
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert 25 <= when - time.time() <= 31


@pytest.mark.parametrize(
    ("entry", "status"),
    [("token_5xx_json", 503), ("token_5xx_json:502", 502), ("500", 500), ("504", 504)],
)
def test_token_5xx_json(
    sandbox: Sandbox, client: httpx.Client, seed: str, entry: str, status: int
) -> None:
    sandbox.script("token", [entry])
    response = refresh(client, sandbox, seed)
    assert response.status_code == status
    entra_error_ok(response.json(), "temporarily_unavailable", 90033)


def test_token_5xx_html_and_empty(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.script(
        "token",
        ["token_5xx_html", "token_5xx_html:503", "token_5xx_html:599", "token_5xx_empty"],
    )
    html = refresh(client, sandbox, seed)
    assert html.status_code == 500
    assert html.headers["content-type"] == "text/html"
    assert "IIS 10.0 Detailed Error - 500.0 - Internal Server Error" in html.text
    assert "503.0 - Service Unavailable" in refresh(client, sandbox, seed).text
    assert "599.0 - Server Error" in refresh(client, sandbox, seed).text
    empty = refresh(client, sandbox, seed)
    assert empty.status_code == 503
    assert empty.content == b""
    assert "content-type" not in empty.headers


def test_token_truncated_does_not_rotate(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.rt_reuse_strict()
    sandbox.script("token", ["token_truncated"])
    response = refresh(client, sandbox, seed)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert refresh(client, sandbox, seed).status_code == 200  # still the current token


@pytest.mark.parametrize(
    ("entry", "error", "code", "status"),
    [
        ("rt_revoked", "invalid_grant", 50173, 400),
        ("rt_inactive", "invalid_grant", 700082, 400),
        ("mfa_required", "invalid_grant", 50076, 400),
        ("secret_bad", "invalid_client", 7000215, 401),
        ("secret_expired", "invalid_client", 7000222, 401),
    ],
)
def test_scripted_grant_errors(
    sandbox: Sandbox,
    client: httpx.Client,
    seed: str,
    entry: str,
    error: str,
    code: int,
    status: int,
) -> None:
    sandbox.script("token", [entry])
    response = refresh(client, sandbox, seed)
    assert response.status_code == status
    body = response.json()
    entra_error_ok(body, error, code)
    assert ("suberror" in body) == (entry == "mfa_required")
    assert sandbox.requests("token")[-1].outcome == entry


def test_device_poll_faults(clocked: Sandbox, client: httpx.Client, clock: FakeClock) -> None:
    flow = start_device(client, clocked)
    clocked.script("token", ["device_slow_down", "device_bad_code"])
    slow = poll(client, clocked, flow["device_code"])
    assert slow.status_code == 400
    entra_error_ok(slow.json(), "slow_down", 70016)
    clock.advance(5)
    entra_error_ok(
        poll(client, clocked, flow["device_code"]).json(), "bad_verification_code", 70018
    )
    clock.advance(5)
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "authorization_pending"


def test_device_slow_down_enforces_the_interval(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    """Finding 3: after a scripted slow_down, that login answers slow_down to early polls."""
    flow, other = start_device(client, clocked), start_device(client, clocked)
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "authorization_pending"
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "authorization_pending"
    clocked.script("token", ["device_slow_down"])
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "slow_down"
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "slow_down"  # too soon
    clock.advance(4.9)
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "slow_down"
    clock.advance(5)
    assert poll(client, clocked, flow["device_code"]).json()["error"] == "authorization_pending"
    for _ in range(2):  # another login is not affected
        assert poll(client, clocked, other["device_code"]).json()["error"] == (
            "authorization_pending"
        )


def test_outcome_is_taken_after_method_tenant_and_grant_checks(
    sandbox: Sandbox, client: httpx.Client, seed: str
) -> None:
    """Finding 9: probes, wrong tenants and unknown grants leave the script alone."""
    sandbox.script("token", ["token_429"])
    sandbox.script("devicecode", ["token_429"])
    assert client.get(sandbox.token_endpoint).json()["error_codes"] == [900561]
    assert client.get(sandbox.devicecode_endpoint).json()["error_codes"] == [900561]
    wrong = f"{sandbox.base_url}/other-tenant/oauth2/v2.0"
    form = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": seed}
    assert client.post(f"{wrong}/token", data=form).json()["error_codes"] == [90002]
    assert client.post(f"{wrong}/devicecode", data=form).json()["error_codes"] == [90002]
    for grant in ("client_credentials", ""):
        answer = client.post(sandbox.token_endpoint, data={**form, "grant_type": grant})
        assert answer.json()["error_codes"] == [70003 if grant else 900144]
    assert sandbox.pending() == {"devicecode": ["token_429"], "token": ["token_429"]}
    assert [r.outcome for r in sandbox.requests()] == ["ok"] * 6
    assert refresh(client, sandbox, seed).status_code == 429
    start = client.post(sandbox.devicecode_endpoint, data={"client_id": sandbox.client_id,
                                                           "scope": SCOPE})  # fmt: skip
    assert start.status_code == 429


def test_grant_faults_wait_for_their_grant(
    sandbox: Sandbox, client: httpx.Client, seed: str
) -> None:
    """Finding 9: device faults skip refresh grants and refresh faults skip device polls."""
    flow = start_device(client, sandbox)
    sandbox.script("token", ["device_bad_code", "rt_revoked", "token_429", "device_slow_down"])
    assert refresh(client, sandbox, seed).json()["error_codes"] == [50173]
    assert sandbox.pending("token") == {
        "token": ["device_bad_code", "token_429", "device_slow_down"]
    }
    assert poll(client, sandbox, flow["device_code"]).json()["error_codes"] == [70018]
    assert refresh(client, sandbox, seed).status_code == 429
    assert refresh(client, sandbox, seed).status_code == 200  # device_slow_down stays queued
    assert sandbox.pending("token") == {"token": ["device_slow_down"]}
    assert poll(client, sandbox, flow["device_code"]).json()["error"] == "slow_down"
    sandbox.script("token", ["rt_inactive", "mfa_required", "rt_reuse_strict"])
    assert poll(client, sandbox, flow["device_code"]).json()["error"] == "slow_down"  # too soon
    assert sandbox.pending("token") == {"token": ["rt_inactive", "mfa_required", "rt_reuse_strict"]}


def test_scenario_header_of_the_other_grant_is_refused(
    sandbox: Sandbox, client: httpx.Client, seed: str
) -> None:
    form = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": seed}
    refused = client.post(
        sandbox.token_endpoint, data=form, headers={"x-sandbox-scenario": "device_slow_down"}
    )
    assert refused.status_code == 400
    assert refused.json()["sandbox_error"] == (
        "fault 'device_slow_down' applies to device_code grants, not to this refresh_token grant"
    )


def test_devicecode_endpoint_faults(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("devicecode", ["429", "token_5xx_html", "token_truncated", "ok"])
    form = {"client_id": sandbox.client_id, "scope": SCOPE}
    assert client.post(sandbox.devicecode_endpoint, data=form).status_code == 429
    assert client.post(sandbox.devicecode_endpoint, data=form).status_code == 500
    truncated = client.post(sandbox.devicecode_endpoint, data=form)
    assert truncated.status_code == 200
    assert truncated.text.startswith('{"user_code":')
    with pytest.raises(json.JSONDecodeError):
        truncated.json()
    assert client.post(sandbox.devicecode_endpoint, data=form).status_code == 200
    assert sandbox.post_count("devicecode") == 4


@pytest.mark.parametrize("entry", ["token_reset", "reset"])
def test_token_reset(sandbox: Sandbox, client: httpx.Client, seed: str, entry: str) -> None:
    sandbox.script("token", [entry])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        refresh(client, sandbox, seed)
    assert sandbox.requests("token")[-1].status is None
    assert refresh(client, sandbox, seed).status_code == 200


def test_token_slow_and_delay(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.script(
        "token", ["token_slow:0.2", {"fault": "ok", "delay_ms": 150}, "slow_headers:0.3"]
    )
    started = time.monotonic()
    assert refresh(client, sandbox, seed).status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert refresh(client, sandbox, seed).status_code == 200
    assert time.monotonic() - started >= 0.15
    form = {"client_id": sandbox.client_id, "grant_type": "refresh_token", "refresh_token": seed}
    with pytest.raises(httpx.ReadTimeout):  # slow_headers:0.3 against a 0.05 s read timeout
        client.post(sandbox.token_endpoint, data=form, timeout=0.05)


def test_token_transport_faults(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.script("token", ["slow_body:0.2", "reset_mid_body"])
    started = time.monotonic()
    response = refresh(client, sandbox, seed)
    assert response.status_code == 200
    assert "access_token" in response.json()
    assert time.monotonic() - started >= 0.2
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        refresh(client, sandbox, seed)


def test_scenario_header_is_one_off(sandbox: Sandbox, client: httpx.Client, seed: str) -> None:
    sandbox.script("token", ["rt_revoked"])
    form = {
        "client_id": sandbox.client_id,
        "grant_type": "refresh_token",
        "refresh_token": seed,
    }
    one_off = client.post(
        sandbox.token_endpoint, data=form, headers={"x-sandbox-scenario": "token_429:3"}
    )
    assert one_off.status_code == 429
    assert one_off.headers["retry-after"] == "3"
    assert sandbox.requests("token")[-1].source == "header"
    assert sandbox.pending("token") == {"token": ["rt_revoked"]}
    bad = client.post(sandbox.token_endpoint, data=form, headers={"x-sandbox-scenario": "nope"})
    assert bad.status_code == 400
    assert "unknown fault 'nope'" in bad.json()["sandbox_error"]
    bad_device = client.post(
        sandbox.devicecode_endpoint, data=form, headers={"x-sandbox-scenario": "stall_stream"}
    )
    assert bad_device.status_code == 400
    assert refresh(client, sandbox, seed).json()["error_codes"] == [50173]
    assert sandbox.pending() == {}


def test_http_dates_follow_the_sandbox_clock(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    seed = str(clocked.issue_tokens()["refresh_token"])
    clocked.script("token", ["token_429_date:5"])
    response = refresh(client, clocked, seed)
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert when == int(clock.now) + 5
    assert email.utils.parsedate_to_datetime(response.headers["date"]).timestamp() == int(clock.now)


def test_token_http_date_is_never_in_the_past(client: httpx.Client) -> None:
    """Finding 5, token endpoint."""
    clock = FakeClock(1_800_000_000.5)
    with Sandbox(clock=clock) as sb:
        seed = str(sb.issue_tokens()["refresh_token"])
        sb.script("token", ["token_429_date:0.2"])
        response = refresh(client, sb, seed)
        when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
        assert when == 1_800_000_001
