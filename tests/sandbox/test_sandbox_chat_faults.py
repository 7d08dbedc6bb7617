"""Scripted chat faults (PROTOCOLS 4.2): error answers, body variants, transport faults."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx
import pytest
from sbx_helpers import FakeClock, bearer, chat, user_message

from saga_magic.sandbox import Sandbox

API = "2024-10-21"
TPM = (
    f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {API} have "
    "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {n}. "
    "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the "
    "default rate limit."
)
LATER = "Rate limit is exceeded. Try again later."


def _scripted(sandbox: Sandbox, client: httpx.Client, entry: Any, **kwargs: Any) -> httpx.Response:
    sandbox.script("chat", [entry])
    return chat(client, sandbox, **kwargs)


@pytest.mark.parametrize(
    ("entry", "headers", "message"),
    [
        ("429_both", {"retry-after": "2", "retry-after-ms": "1500"}, TPM.format(n="2 seconds")),
        ("429_both:0.2", {"retry-after": "1", "retry-after-ms": "200"}, TPM.format(n="1 second")),
        ("429_ms_only", {"retry-after-ms": "1500"}, TPM.format(n="2 seconds")),
        ("429_seconds_only", {"retry-after": "2"}, TPM.format(n="2 seconds")),
        ("429_seconds_only:1", {"retry-after": "1"}, TPM.format(n="1 second")),
        ("429_no_header", {}, "Rate limit is exceeded. Try again in 3 seconds."),
        ("429_garbage", {"retry-after": "soon"}, LATER),
        ("429_garbage:1e100", {"retry-after": "1e100"}, LATER),
        ("429_garbage:-5", {"retry-after": "-5"}, LATER),
        ("429", {"retry-after": "1"}, TPM.format(n="1 second")),
        ("429:retry_after=1.5", {"retry-after": "1.5"}, TPM.format(n="2 seconds")),
        ("429:retry_after_ms=300", {"retry-after-ms": "300"}, TPM.format(n="1 second")),
        ("429:x_ms_retry_after_ms=2500", {"x-ms-retry-after-ms": "2500"},
         TPM.format(n="3 seconds")),
        ("429:retry_after=nan", {"retry-after": "nan"}, LATER),
        ("429:retry_after=soon", {"retry-after": "soon"}, LATER),
        ("429:retry_after=soon,message_s=4", {"retry-after": "soon"}, TPM.format(n="4 seconds")),
    ],
)  # fmt: skip
def test_429_variants(
    sandbox: Sandbox, client: httpx.Client, entry: str, headers: dict[str, str], message: str
) -> None:
    response = _scripted(sandbox, client, entry)
    assert response.status_code == 429
    for name in ("retry-after", "retry-after-ms", "x-ms-retry-after-ms"):
        assert response.headers.get(name) == headers.get(name)
    assert response.json() == {"error": {"code": "429", "message": message}}
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "apim-request-id" in response.headers


def test_429_quota_and_capacity(sandbox: Sandbox, client: httpx.Client) -> None:
    quota = _scripted(sandbox, client, "429_quota")
    assert quota.headers["retry-after"] == "86400"
    assert "Please retry after 86400 seconds" in quota.json()["error"]["message"]
    capacity = _scripted(sandbox, client, "429_capacity")
    assert capacity.headers["retry-after"] == "6"
    assert capacity.json()["error"]["message"].startswith(
        "The system is currently experiencing high demand"
    )
    assert capacity.json()["error"]["message"].endswith("Please retry after 6 seconds.")


@pytest.mark.parametrize("entry", ["429_http_date", "429:http_date=3"])
def test_429_http_date(sandbox: Sandbox, client: httpx.Client, entry: str) -> None:
    response = _scripted(sandbox, client, entry)
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
    assert 1 <= when - time.time() <= 4
    assert "Please retry after 3 seconds" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("entry", "status", "content_type", "check"),
    [
        ("500_json", 500, "application/json", '"type":"server_error"'),
        ("500", 500, "application/json", "The server had an error"),
        ("503", 503, "application/json", "ServiceUnavailable"),
        ("502_json", 502, "application/json", "BadGateway"),
        ("504_json", 504, "application/json", "GatewayTimeout"),
        ("502_html", 502, "text/html", "<h1>502 Bad Gateway</h1>"),
        ("502", 502, "text/html", "Microsoft-Azure-Application-Gateway"),
        ("500_html", 500, "text/html", "500 Internal Server Error"),
        ("503_html", 503, "text/html", "503 Service Temporarily Unavailable"),
        ("504_html", 504, "text/html", "504 Gateway Time-out"),
        ("504_text", 504, "text/plain", "upstream request timeout"),
        ("504", 504, "text/plain", "upstream request timeout"),
        ("503_text", 503, "text/plain", "upstream connect error"),
        ("500_text", 500, "text/plain", "Internal Server Error"),
        ("502_text", 502, "text/plain", "Bad Gateway"),
        ("413", 413, "text/plain", "Request Entity Too Large"),
    ],
)
def test_server_errors(
    sandbox: Sandbox,
    client: httpx.Client,
    entry: str,
    status: int,
    content_type: str,
    check: str,
) -> None:
    response = _scripted(sandbox, client, entry)
    assert response.status_code == status
    assert response.headers["content-type"] == f"{content_type}; charset=utf-8"
    assert check in response.text
    assert response.headers.get("retry-after") == ("1" if entry == "503" else None)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_empty_5xx(sandbox: Sandbox, client: httpx.Client, status: int) -> None:
    response = _scripted(sandbox, client, f"{status}_empty:retry_after=2")
    assert response.status_code == status
    assert response.content == b""
    assert "content-type" not in response.headers
    assert response.headers["retry-after"] == "2"


TIMEOUT = {"error": {"code": "Timeout", "message": "The operation was timeout."}}
NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
DENIED = {
    "error": {
        "code": "PermissionDenied",
        "message": "Principal does not have access to API/Operation.",
    }
}
GATEWAY_401 = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.",
}


@pytest.mark.parametrize(
    ("entry", "status", "body"),
    [
        ("408_timeout", 408, TIMEOUT),
        ("408", 408, TIMEOUT),
        ("404_path", 404, NOT_FOUND),
        ("404", 404, NOT_FOUND),
        ("404_apim", 404, {"statusCode": 404, "message": "Resource not found"}),
        ("auth_gateway_401", 401, GATEWAY_401),
        ("401", 401, GATEWAY_401),
        ("permission_denied", 401, DENIED),
        ("403", 403, DENIED),
    ],
)
def test_error_bodies(
    sandbox: Sandbox, client: httpx.Client, entry: str, status: int, body: Any
) -> None:
    response = _scripted(sandbox, client, entry)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body


def test_404_deployment(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _scripted(sandbox, client, "404_deployment")
    assert response.json()["error"]["code"] == "DeploymentNotFound"
    assert "within the last 5 minutes" in response.json()["error"]["message"]


def test_400_bodies(sandbox: Sandbox, client: httpx.Client) -> None:
    context = _scripted(sandbox, client, "400_context").json()["error"]
    assert context["code"] == "context_length_exceeded"
    assert context["type"] == "invalid_request_error"
    assert "maximum context length is 128000 tokens" in context["message"]
    assert "resulted in 128001 tokens" in context["message"]
    filtered = _scripted(sandbox, client, "400_filter").json()["error"]
    assert filtered["code"] == "content_filter"
    assert filtered["param"] == "prompt"
    assert filtered["status"] == 400
    inner = filtered["innererror"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    assert inner["content_filter_result"]["violence"] == {"filtered": True, "severity": "medium"}
    assert inner["content_filter_result"]["hate"] == {"filtered": False, "severity": "safe"}
    jailbreak = _scripted(sandbox, client, "400_filter:jailbreak").json()["error"]
    assert jailbreak["innererror"]["content_filter_result"]["jailbreak"] == {
        "filtered": True,
        "detected": True,
    }
    custom = _scripted(sandbox, client, "400_filter:indirect_attack").json()["error"]
    assert custom["innererror"]["content_filter_result"]["indirect_attack"]["filtered"] is True
    unsupported = _scripted(sandbox, client, "400_unsupported").json()["error"]
    assert unsupported["code"] == "unsupported_parameter"
    assert unsupported["param"] == "max_tokens"
    temperature = _scripted(sandbox, client, "400_unsupported:temperature").json()["error"]
    assert temperature["code"] == "unsupported_value"
    other = _scripted(sandbox, client, "400_unsupported:logprobs").json()["error"]
    assert other["message"] == "Unsupported parameter: 'logprobs' is not supported with this model."


def test_error_faults_come_before_auth(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["500_json"])
    assert chat(client, sandbox, headers={}).status_code == 500


def test_expire_token_after(sandbox: Sandbox, client: httpx.Client) -> None:
    auth = bearer(sandbox)
    sandbox.script("chat", ["expire_token_after:2"])
    assert chat(client, sandbox, headers=auth).status_code == 200
    assert chat(client, sandbox, headers=auth).status_code == 200
    expired = chat(client, sandbox, headers=auth)
    assert expired.status_code == 401
    assert expired.json()["statusCode"] == 401
    assert chat(client, sandbox, headers=auth).status_code == 401
    assert chat(client, sandbox).status_code == 200  # a fresh token succeeds
    now = bearer(sandbox)
    sandbox.script("chat", ["expire_token_after:0"])
    assert chat(client, sandbox, headers=now).status_code == 401
    sandbox.script("chat", ["expire_token_after"])
    assert chat(client, sandbox, headers={"api-key": sandbox.api_key}).status_code == 200


@pytest.mark.parametrize(
    ("entry", "check"),
    [
        ("missing_choices", lambda b: "choices" not in b and "usage" in b),
        ("empty_choices", lambda b: b["choices"] == []),
        ("null_content", lambda b: b["choices"][0]["message"]["content"] is None
         and b["choices"][0]["finish_reason"] == "stop"),
        ("no_usage", lambda b: "usage" not in b and b["choices"]),
        ("filtered_output", lambda b: b["choices"][0]["finish_reason"] == "content_filter"
         and b["choices"][0]["message"]["content"] is None
         and b["choices"][0]["content_filter_results"]["violence"]["filtered"] is True),
        ("filter_down", lambda b: b["choices"][0]["content_filter_results"] == {
            "error": {"code": "content_filter_error", "message": "The contents are not filtered"}}
         and b["choices"][0]["message"]["content"]),
    ],
)  # fmt: skip
def test_body_variants(sandbox: Sandbox, client: httpx.Client, entry: str, check: Any) -> None:
    response = _scripted(sandbox, client, entry)
    assert response.status_code == 200
    assert check(response.json())


def test_variants_need_a_valid_request(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["missing_choices"])
    assert chat(client, sandbox, headers={}).status_code == 401


def test_malformed_and_html_200(sandbox: Sandbox, client: httpx.Client) -> None:
    malformed = _scripted(sandbox, client, "malformed_json")
    assert malformed.status_code == 200
    assert malformed.headers["content-type"] == "application/json"
    assert malformed.content == b'{"choices":[{"message":'
    with pytest.raises(json.JSONDecodeError):
        malformed.json()
    html = _scripted(sandbox, client, "html_200")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "Sign in to your account" in html.text


def test_slow_headers(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["slow_headers:0.2", "slow_headers:0.3"])
    started = time.monotonic()
    assert chat(client, sandbox).status_code == 200
    assert time.monotonic() - started >= 0.2
    with pytest.raises(httpx.ReadTimeout):
        chat(client, sandbox, timeout=0.05)


def test_slow_body_defeats_read_timeouts(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["slow_body:0.3"])
    started = time.monotonic()
    response = chat(client, sandbox, timeout=httpx.Timeout(5.0, read=0.1))
    assert time.monotonic() - started >= 0.3
    assert response.json()["choices"][0]["message"]["content"] == "hello there wide world"


def test_slow_body_arrives_in_pieces(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["slow_body:0.2"])
    with client.stream(
        "POST", sandbox.chat_endpoint, json=user_message(), headers=bearer(sandbox)
    ) as r:
        pieces = list(r.iter_raw())
    assert len(pieces) > 5
    assert json.loads(b"".join(pieces))["object"] == "chat.completion"


@pytest.mark.parametrize("entry", ["reset_mid_body", "reset_mid_body:0.1", "reset"])
def test_resets(sandbox: Sandbox, client: httpx.Client, entry: str) -> None:
    sandbox.script("chat", [entry])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(client, sandbox)
    assert chat(client, sandbox).status_code == 200


def test_delay_ms_on_any_fault(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", [{"fault": "500_json", "delay_ms": 150}, "ok:delay_ms=100"])
    started = time.monotonic()
    assert chat(client, sandbox).status_code == 500
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    assert chat(client, sandbox).status_code == 200
    assert time.monotonic() - started >= 0.1
    assert [r.outcome for r in sandbox.requests("chat")] == [
        "500_json:delay_ms=150",
        "ok:delay_ms=100",
    ]


def test_per_deployment_queue(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["503"], deployment="o4-mini")
    sandbox.script("chat", ["500"])
    assert chat(client, sandbox).status_code == 500
    mini = chat(client, sandbox, user_message(), url=sandbox.chat_url("o4-mini"))
    assert mini.status_code == 503
    assert chat(client, sandbox, user_message(), url=sandbox.chat_url("o4-mini")).status_code == 200
    with pytest.raises(ValueError, match="only the chat endpoint"):
        sandbox.script("token", ["ok"], deployment="x")


def test_scenario_header(sandbox: Sandbox, client: httpx.Client) -> None:
    headers = {**bearer(sandbox), "x-sandbox-scenario": "429:retry_after=1.5,delay_ms=10"}
    response = chat(client, sandbox, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1.5"
    bad = chat(client, sandbox, headers={**headers, "x-sandbox-scenario": "rt_revoked"})
    assert bad.status_code == 400
    assert "does not apply" in bad.json()["sandbox_error"]


def test_http_date_follows_the_sandbox_clock(
    clocked: Sandbox, client: httpx.Client, clock: FakeClock
) -> None:
    clocked.script("chat", ["429_http_date:7", "429:http_date=9"])
    for wait in (7, 9):
        response = chat(client, clocked)
        when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
        assert when == int(clock.now) + wait


@pytest.mark.parametrize("entry", ["429_http_date:0.2", "429:http_date=0.2"])
def test_http_date_is_never_in_the_past(client: httpx.Client, entry: str) -> None:
    """Finding 5: an HTTP-date has no fraction, so it is rounded up, not down."""
    clock = FakeClock(1_800_000_000.5)
    with Sandbox(clock=clock) as sb:
        sb.script("chat", [entry])
        response = chat(client, sb)
        when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
        assert when == 1_800_000_001 >= clock.now + 0.2
