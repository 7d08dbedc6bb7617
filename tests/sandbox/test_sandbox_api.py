"""The Python API surface: addresses, env, scripts, log, reset, deployments, async use."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from sbx_helpers import chat, refresh

import saga_magic.sandbox as sandbox_pkg
from saga_magic.sandbox import Deployment, Sandbox


def test_public_surface() -> None:
    assert sandbox_pkg.__all__ == sorted(sandbox_pkg.__all__)
    assert set(sandbox_pkg.__all__) == {
        "CATALOGUE", "DEFAULT_API_VERSION", "DEFAULT_CLIENT_ID", "DEFAULT_SCOPE",
        "DEFAULT_TENANT_ID", "DEFAULT_USER", "Deployment", "DeviceCodeInfo", "FaultKind",
        "FaultSpec", "Outcome", "RecordedRequest", "Sandbox", "decode_jwt_claims", "fault_names",
        "fingerprint", "parse_outcome",
    }  # fmt: skip
    for name in sandbox_pkg.__all__:
        assert getattr(sandbox_pkg, name) is not None


def test_import_hygiene() -> None:
    code = (
        "import sys, saga_magic.sandbox; "
        "print(sorted(m for m in sys.modules if m.startswith(('saga_magic.core', 'IPython', "
        "'textual', 'httpx'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_addresses_and_env(sandbox: Sandbox) -> None:
    base = sandbox.base_url
    assert base.startswith("http://127.0.0.1:")
    assert sandbox.port == int(base.rsplit(":", 1)[1])
    assert sandbox.authority_host == base
    assert sandbox.token_endpoint == f"{base}/{sandbox.tenant_id}/oauth2/v2.0/token"
    assert sandbox.devicecode_endpoint == f"{base}/{sandbox.tenant_id}/oauth2/v2.0/devicecode"
    assert sandbox.chat_endpoint == (
        f"{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    )
    assert sandbox.chat_url("o4-mini").startswith(f"{base}/openai/deployments/o4-mini/")
    assert sandbox.chat_url(shape="v1") == f"{base}/openai/v1/chat/completions"
    assert sandbox.chat_url(shape="openai") == f"{base}/v1/chat/completions"
    assert sandbox.env() == {
        "AZURE_AUTHORITY_HOST": base,
        "AZURE_TENANT_ID": sandbox.tenant_id,
        "AZURE_CLIENT_ID": sandbox.client_id,
        "ARC_SAGA_COPILOT_ENDPOINT": sandbox.chat_endpoint,
    }
    assert sandbox.client_secret is None
    assert sandbox.default_user == "ada@contoso.com"


def test_custom_identity() -> None:
    with Sandbox(
        tenant_id="t-1",
        client_id="c-1",
        default_user="grace@contoso.com",
        deployments=[Deployment("mine")],
        default_deployment="mine",
        api_version="2024-06-01",
    ) as sb:
        assert sb.env()["ARC_SAGA_COPILOT_ENDPOINT"].endswith(
            "/openai/deployments/mine/chat/completions?api-version=2024-06-01"
        )
        assert [d.name for d in sb.deployments()] == ["mine"]
        assert sb.token_endpoint.endswith("/t-1/oauth2/v2.0/token")
        assert sb.issue_tokens()["scope"]


def test_script_validation_is_all_or_nothing(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.script("chat", ["429_both", "nope"])
    assert sandbox.pending() == {}
    with pytest.raises(ValueError, match="must be a list"):
        sandbox.script("chat", "429_both")
    with pytest.raises(ValueError, match="must be a list"):
        sandbox.script("chat", {"fault": "429_both"})
    sandbox.script("chat", ["500", "ok"])
    sandbox.script("chat", ["503"], replace=True)
    assert sandbox.pending("chat") == {"chat": ["503_json:retry_after=1"]}
    assert sandbox.pending("token") == {}


def test_requests_post_count_and_reset(sandbox: Sandbox, client: httpx.Client) -> None:
    seed = str(sandbox.issue_tokens()["refresh_token"])
    chat(client, sandbox, url=sandbox.chat_url("o4-mini"))
    chat(client, sandbox)
    refresh(client, sandbox, seed)
    assert sandbox.post_count("chat") == 2
    assert sandbox.post_count("token") == 1
    assert [r.deployment for r in sandbox.requests("chat", deployment="o4-mini")] == ["o4-mini"]
    json.dumps([r.to_dict() for r in sandbox.requests()])
    with pytest.raises(ValueError, match="unknown endpoint"):
        sandbox.post_count("mail")
    sandbox.script("chat", ["500"])
    sandbox.rt_reuse_strict()
    sandbox.set_deployment(Deployment("extra"))
    sandbox.reset()
    assert sandbox.requests() == []
    assert sandbox.pending() == {}
    assert sandbox.post_count("chat") == 0
    assert refresh(client, sandbox, seed).json()["error_codes"] == [70000]  # tokens forgotten
    assert [d.name for d in sandbox.deployments()] == ["gpt-4o", "o4-mini"]
    with pytest.raises(KeyError):
        sandbox.deployment("extra")


def test_expire_access_tokens_per_user(sandbox: Sandbox) -> None:
    sandbox.issue_tokens()
    sandbox.issue_tokens("bob@contoso.com")
    assert sandbox.expire_access_tokens("bob@contoso.com") == 1
    assert sandbox.expire_access_tokens() == 2


async def test_async_context_manager() -> None:
    async with Sandbox() as sb, httpx.AsyncClient(verify=False) as aclient:
        tokens = sb.issue_tokens()
        response = await aclient.post(
            sb.chat_endpoint,
            json={"messages": [{"role": "user", "content": "inside a loop"}]},
            headers={"authorization": f"Bearer {tokens['access_token']}"},
        )
        assert response.json()["choices"][0]["message"]["content"] == "inside a loop"
    assert not sb.running


def test_reset_restores_auto_approve() -> None:
    """Finding 11: reset() returns auto_approve to the constructor's value."""
    with Sandbox(auto_approve=True) as sb:
        sb.auto_approve = False
        sb.reset()
        assert sb.auto_approve
    with Sandbox() as sb:
        sb.auto_approve = True
        sb.reset()
        assert not sb.auto_approve


def test_addresses_raise_after_stop() -> None:
    """Finding 14: a stopped sandbox has no address to hand out."""
    sb = Sandbox().start()
    sb.stop()
    for name in ("base_url", "port", "authority_host", "token_endpoint", "chat_endpoint"):
        with pytest.raises(RuntimeError, match="sandbox stopped"):
            getattr(sb, name)
    with pytest.raises(RuntimeError, match="sandbox stopped"):
        sb.env()
    with sb:  # a restart hands out the new address
        assert sb.base_url.startswith("http://127.0.0.1:")


def test_permission_denied_is_401_or_403(sandbox: Sandbox, client: httpx.Client) -> None:
    """Finding 15: PermissionDenied is answered with 401 or 403 only."""
    for status in (401, 403, None):
        assert Deployment("d", permission_denied=status).permission_denied == status
    with pytest.raises(ValueError, match="permission_denied must be 401, 403 or None"):
        Deployment("d", permission_denied=500)
    refused = client.post(
        f"{sandbox.base_url}/_sandbox/deployments", json={"name": "d", "permission_denied": 200}
    )
    assert refused.status_code == 400
    assert "permission_denied must be" in refused.json()["error"]
    with pytest.raises(ValueError, match="expected 401 or 403"):
        sandbox.script("chat", ["permission_denied:418"])
