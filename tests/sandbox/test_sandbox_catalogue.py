"""Every catalogued fault on every endpoint it applies to, over a real socket.

The specific wire shapes are asserted in the endpoint test modules; this sweep guarantees that no
fault is left unimplemented (each one is accepted, logged, and produces an answer or a transport
failure) and that the sandbox keeps serving afterwards.
"""

from __future__ import annotations

import httpx
import pytest
from sbx_helpers import SCOPE, bearer, start_device, token_form, user_message

from saga_magic.sandbox import CATALOGUE, Sandbox

FAST = {  # short parameters for the slow faults
    "slow_headers": "slow_headers:0.01",
    "slow_body": "slow_body:0.01",
    "token_slow": "token_slow:0.01",
    "stall_stream": "stall_stream:1",
}
TRANSPORT_FAILURES = {"reset", "reset_mid_body", "token_reset", "reset_mid_stream"}
CASES = sorted((endpoint, name) for name, spec in CATALOGUE.items() for endpoint in spec.endpoints)


def _request(client: httpx.Client, sb: Sandbox, endpoint: str, scenario: str) -> httpx.Response:
    headers = {"x-sandbox-scenario": scenario}
    if endpoint == "chat":
        return client.post(
            sb.chat_endpoint,
            json=user_message(stream=scenario.startswith("stall")),
            headers={**bearer(sb), **headers},
            timeout=httpx.Timeout(5.0, read=0.3),
        )
    if endpoint == "devicecode":
        data = {"client_id": sb.client_id, "scope": SCOPE}
        return client.post(sb.devicecode_endpoint, data=data, headers=headers)
    if scenario.startswith("device"):
        flow = start_device(client, sb)
        data = {
            "client_id": sb.client_id,
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": flow["device_code"],
        }
    else:
        data = token_form(sb, refresh_token=str(sb.issue_tokens()["refresh_token"]))
    return client.post(sb.token_endpoint, data=data, headers=headers)


@pytest.mark.parametrize(("endpoint", "name"), CASES)
def test_fault_is_served(sandbox: Sandbox, client: httpx.Client, endpoint: str, name: str) -> None:
    scenario = FAST.get(name, name)
    if name in TRANSPORT_FAILURES:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            _request(client, sandbox, endpoint, scenario)
    elif name == "stall_stream":
        with pytest.raises(httpx.ReadTimeout):
            _request(client, sandbox, endpoint, scenario)
    else:
        response = _request(client, sandbox, endpoint, scenario)
        assert 200 <= response.status_code < 600
    logged = sandbox.requests(endpoint)[-1]
    assert logged.outcome.split(":")[0] == name
    assert logged.source == "header"
    after = _request(client, sandbox, endpoint, "ok")
    assert after.status_code in (200, 400)  # 400: a device poll that is still pending
