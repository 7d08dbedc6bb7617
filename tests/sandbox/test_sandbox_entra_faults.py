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
    sandbox.script("token", ["token_5xx_html", "token_5xx_html:503", "token_5xx_empty"])
    html = refresh(client, sandbox, seed)
    assert html.status_code == 500
    assert html.headers["content-type"] == "text/html"
    assert "IIS 10.0 Detailed Error - 500.0 - Internal Server Error" in html.text
    assert "503.0 - Service Unavailable" in refresh(client, sandbox, seed).text
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


def test_device_poll_faults(sandbox: Sandbox, client: httpx.Client) -> None:
    flow = start_device(client, sandbox)
    sandbox.script("token", ["device_slow_down", "device_bad_code"])
    slow = poll(client, sandbox, flow["device_code"])
    assert slow.status_code == 400
    assert slow.json()["error"] == "slow_down"
    entra_error_ok(
        poll(client, sandbox, flow["device_code"]).json(), "bad_verification_code", 70018
    )
    assert poll(client, sandbox, flow["device_code"]).json()["error"] == "authorization_pending"


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
