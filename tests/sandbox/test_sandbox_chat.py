"""Chat completions: routes, authentication, validation, deterministic answers, headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sbx_helpers import FakeClock, bearer, chat, user_message

from saga_magic.sandbox import Deployment, Sandbox, fingerprint

GATEWAY_401 = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.",
}


def test_answer_shape_and_headers(sandbox: Sandbox, client: httpx.Client) -> None:
    response = chat(
        client,
        sandbox,
        {"messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "hello  there\nworld"}]},
        headers={**bearer(sandbox), "x-ms-client-request-id": "req-42"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    for name in (
        "apim-request-id",
        "x-request-id",
        "x-ms-region",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
    ):
        assert response.headers[name]
    assert response.headers["x-ms-client-request-id"] == "req-42"
    assert int(response.headers["x-ratelimit-remaining-requests"]) == 999
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-2024-11-20"
    assert body["system_fingerprint"].startswith("fp_")
    [choice] = body["choices"]
    assert choice["message"] == {
        "content": "hello  there\nworld",
        "refusal": None,
        "role": "assistant",
    }
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert choice["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["usage"]["prompt_tokens"] == 5
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == 8
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    logged = sandbox.requests("chat")[0]
    assert logged.deployment == "gpt-4o"
    assert logged.headers["authorization"].startswith("Bearer sha256:")
    assert logged.body["messages"][1]["content"] == "hello  there\nworld"  # type: ignore[index]


def test_truncation_to_max_tokens(sandbox: Sandbox, client: httpx.Client) -> None:
    body = chat(client, sandbox, user_message("one two  three four", max_tokens=2)).json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    exact = chat(client, sandbox, user_message("one two", max_completion_tokens=2)).json()
    assert exact["choices"][0]["finish_reason"] == "stop"


def test_content_parts_and_no_user_message(sandbox: Sandbox, client: httpx.Client) -> None:
    content = [{"type": "text", "text": "from parts"}, {"type": "image_url", "image_url": {}}]
    parts = {"messages": [{"role": "user", "content": content}]}
    assert chat(client, sandbox, parts).json()["choices"][0]["message"]["content"] == "from parts"
    system_only = {"messages": [{"role": "system", "content": None}]}
    body = chat(client, sandbox, system_only).json()
    assert body["choices"][0]["message"]["content"] == ""
    assert body["usage"]["prompt_tokens"] == 0


@pytest.mark.parametrize(
    ("shape", "body_extra", "status"),
    [("v1", {"model": "gpt-4o"}, 200), ("openai", {"model": "gpt-4o"}, 200),
     ("v1", {}, 400), ("openai", {"model": "nope"}, 404)],
)  # fmt: skip
def test_route_shapes(
    sandbox: Sandbox, client: httpx.Client, shape: str, body_extra: dict[str, Any], status: int
) -> None:
    response = chat(client, sandbox, user_message(**body_extra), url=sandbox.chat_url(shape=shape))
    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["message"] == "you must provide a model parameter"
    if status == 404:
        assert response.json()["error"]["code"] == "DeploymentNotFound"


def test_deployment_routes(sandbox: Sandbox, client: httpx.Client) -> None:
    base = f"{sandbox.base_url}/openai/deployments/gpt-4o/chat/completions"
    for url in (base, f"{base}?api-version=latest", f"{base}?api-version=2024-13"):
        response = chat(client, sandbox, url=url)
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
        assert "apim-request-id" in response.headers
    preview = chat(client, sandbox, url=f"{base}?api-version=2025-01-01-preview")
    assert preview.status_code == 200
    unknown = chat(client, sandbox, url=sandbox.chat_url("nope"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "DeploymentNotFound"
    assert client.get(sandbox.chat_endpoint).status_code == 404
    with pytest.raises(ValueError, match="unknown chat URL shape"):
        sandbox.chat_url(shape="weird")


def test_unknown_paths(sandbox: Sandbox, client: httpx.Client) -> None:
    openai = client.get(f"{sandbox.base_url}/openai/models")
    assert openai.json() == {"error": {"code": "404", "message": "Resource not found"}}
    apim = client.get(f"{sandbox.base_url}/whatever")
    assert apim.json() == {"statusCode": 404, "message": "Resource not found"}
    assert [r.endpoint for r in sandbox.requests()] == ["other", "other"]


def test_auth_failures(clocked: Sandbox, client: httpx.Client, clock: FakeClock) -> None:
    graph_token = clocked.issue_tokens(scope="User.Read offline_access")["access_token"]
    fresh = bearer(clocked)
    for headers in (
        {},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Basic abc"},
        {"authorization": f"Bearer {graph_token}"},  # wrong audience
    ):
        response = chat(client, clocked, headers=headers)
        assert response.status_code == 401
        assert response.json() == GATEWAY_401
    assert chat(client, clocked, headers=fresh).status_code == 200
    clock.advance(3600)
    assert chat(client, clocked, headers=fresh).status_code == 401  # expired
    short = bearer(clocked, expires_in=5)
    assert chat(client, clocked, headers=short).status_code == 200
    assert clocked.expire_access_tokens() >= 1
    assert chat(client, clocked, headers=short).status_code == 401


def test_api_key(client: httpx.Client) -> None:
    with Sandbox(api_key="k-123") as sb:
        assert sb.api_key == "k-123"
        assert chat(client, sb, headers={"api-key": "k-123"}).status_code == 200
        wrong = chat(client, sb, headers={"api-key": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "401"
        assert sb.requests("chat")[0].headers["api-key"] == fingerprint("k-123")
    with Sandbox() as sb:
        assert sb.api_key.startswith("sbx-")


def test_opaque_token_accepted(sandbox: Sandbox, client: httpx.Client) -> None:
    assert chat(client, sandbox, headers=bearer(sandbox, opaque=True)).status_code == 200


def test_permission_denied_deployment(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_deployment(Deployment("locked", permission_denied=403))
    response = chat(client, sandbox, url=sandbox.chat_url("locked"))
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "PermissionDenied",
            "message": "Principal does not have access to API/Operation.",
        }
    }
    assert chat(client, sandbox, url=sandbox.chat_url("locked"), headers={}).status_code == 401


def test_v1_route_with_unparsable_body(sandbox: Sandbox, client: httpx.Client) -> None:
    response = client.post(sandbox.chat_url(shape="v1"), content=b"{nope", headers=bearer(sandbox))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("We could not parse the JSON body")


@pytest.mark.parametrize(
    ("content", "json_body", "message"),
    [
        (b"{not json", None, "We could not parse the JSON body"),
        (None, [1, 2], "We could not parse the JSON body"),
        (None, {}, "'messages' is a required property"),
        (None, {"messages": []}, "[] is too short - 'messages'"),
        (None, {"messages": ["hi"]}, "'role' is a required property"),
        (None, {"messages": [{"content": "x"}]}, "'role' is a required property"),
        (None, user_message(max_tokens=0), "Invalid 'max_tokens'"),
        (None, user_message(max_tokens=True), "Invalid 'max_tokens'"),
        (None, user_message(max_completion_tokens="9"), "Invalid 'max_completion_tokens'"),
        (None, user_message(temperature=3), "Invalid 'temperature'"),
        (None, user_message(temperature="hot"), "Invalid 'temperature'"),
        (None, user_message(stream="yes"), "Invalid type for 'stream'"),
        (None, user_message(stream_options={"include_usage": True}), "only allowed when 'stream'"),
    ],
)
def test_validation(
    sandbox: Sandbox,
    client: httpx.Client,
    content: bytes | None,
    json_body: object,
    message: str,
) -> None:
    headers = {**bearer(sandbox), "content-type": "application/json"}
    if content is None:
        response = client.post(sandbox.chat_endpoint, json=json_body, headers=headers)
    else:
        response = client.post(sandbox.chat_endpoint, content=content, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"


def test_context_window(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_deployment(Deployment("tiny", context_window=3))
    response = chat(client, sandbox, url=sandbox.chat_url("tiny"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert error["message"].startswith("This model's maximum context length is 3 tokens.")
    assert "resulted in 4 tokens" in error["message"]


def test_reasoning_deployment(sandbox: Sandbox, client: httpx.Client) -> None:
    url = sandbox.chat_url("o4-mini")
    refused = chat(client, sandbox, user_message(max_tokens=10), url=url)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
    hot = chat(client, sandbox, user_message(temperature=0.2), url=url).json()["error"]
    assert hot["code"] == "unsupported_value"
    assert hot["param"] == "temperature"
    assert "Only the default (1) value is supported" in hot["message"]
    ok = chat(client, sandbox, user_message("a b c d", temperature=1), url=url).json()
    assert ok["model"] == "o4-mini-2025-04-16"
    assert ok["usage"]["completion_tokens_details"]["reasoning_tokens"] == 16
    assert ok["usage"]["completion_tokens"] == 4 + 16
    starved = chat(client, sandbox, user_message("a b", max_completion_tokens=10), url=url).json()
    assert starved["choices"][0]["message"]["content"] == ""
    assert starved["choices"][0]["finish_reason"] == "length"
    assert starved["usage"]["completion_tokens_details"]["reasoning_tokens"] == 10
    room = chat(client, sandbox, user_message("a b c", max_completion_tokens=18), url=url).json()
    assert room["choices"][0]["message"]["content"] == "a b"
    sandbox.script("chat", ["reasoning"])
    assert chat(client, sandbox, user_message(max_tokens=5)).status_code == 400


def test_stream_options_rules(sandbox: Sandbox, client: httpx.Client) -> None:
    body = user_message(stream=True, stream_options={"include_usage": True})
    old = sandbox.chat_endpoint.replace("2024-10-21", "2024-06-01")
    rejected = chat(client, sandbox, body, url=old)
    assert rejected.status_code == 400
    assert rejected.json()["error"]["message"] == (
        "Unrecognized request argument supplied: stream_options"
    )
    assert chat(client, sandbox, user_message(stream=True), url=old).status_code == 200
    sandbox.set_deployment(Deployment("legacy", stream_options_rejected=True))
    assert chat(client, sandbox, body, url=sandbox.chat_url("legacy")).status_code == 400
    sandbox.script("chat", ["stream_options_rejected"])
    assert chat(client, sandbox, body).status_code == 400
    assert chat(client, sandbox, body).status_code == 200


def test_rate_limit_headers_count_down(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    auth = bearer(clocked)
    first = chat(client, clocked, user_message("a b", max_tokens=10), headers=auth)
    second = chat(client, clocked, user_message("a b", max_tokens=10), headers=auth)
    assert int(first.headers["x-ratelimit-remaining-requests"]) == 999
    assert int(second.headers["x-ratelimit-remaining-requests"]) == 998
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 150_000 - 12
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 150_000 - 24
    clock.advance(10)
    third = chat(client, clocked, headers=auth)
    assert int(third.headers["x-ratelimit-remaining-requests"]) == 999


def test_empty_api_key_accepts_no_key(client: httpx.Client) -> None:
    """Finding 17: Sandbox(api_key="") switches api-key authentication off."""
    with Sandbox(api_key="") as sb:
        for key in ("", "anything"):
            refused = chat(client, sb, headers={"api-key": key})
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "401"
        assert chat(client, sb).status_code == 200  # bearer tokens still work


def test_non_ascii_api_key_is_refused_not_a_crash(client: httpx.Client) -> None:
    with Sandbox(api_key="k-1") as sb:
        response = chat(client, sb, headers={"api-key": "k\u00e9y".encode()})  # type: ignore[dict-item]
        assert response.status_code == 401


def test_deeply_nested_body_is_a_400(sandbox: Sandbox, client: httpx.Client) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    response = client.post(sandbox.chat_endpoint, content=nested, headers=bearer(sandbox))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("We could not parse the JSON body")
    assert sandbox.requests("chat")[-1].status == 400
