"""The chat HTTP boundary: endpoint shapes, request bodies, error catalogue, defensive parsing."""

from __future__ import annotations

import json

import httpx
import pytest

from saga_magic.core.chat_wire import (
    PARSE_ERROR,
    Adaptations,
    EndpointShape,
    Remedy,
    build_body,
    build_headers,
    classify_failure,
    parse_completion,
    parse_endpoint,
    parse_error_body,
    parse_stream_event,
    parse_usage,
    request_id_of,
    transport_error,
)
from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.types import AITask, ChatMessage, TokenUsage

NOW = 1_700_000_000.0
DEPLOYMENTS = (
    "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
)


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _classify(status: int, payload: object = None, *, raw: bytes | None = None, **headers: str):
    content = raw if raw is not None else (b"" if payload is None else _json(payload))
    return classify_failure(
        status, httpx.Headers(headers), content, now=NOW, client_request_id="cid-1"
    )


# --------------------------------------------------------------------------- endpoint shapes


def test_endpoint_deployments_shape() -> None:
    endpoint = parse_endpoint(DEPLOYMENTS)
    assert endpoint.shape is EndpointShape.DEPLOYMENTS
    assert endpoint.deployment == "gpt4o"
    assert endpoint.host == "res.openai.azure.com"
    assert endpoint.model is None


def test_endpoint_deployments_with_model_and_trailing_slash() -> None:
    url = "https://res.openai.azure.com/openai/deployments/d1/chat/completions/?api-version=x"
    endpoint = parse_endpoint(url, model="m")
    assert endpoint.shape is EndpointShape.DEPLOYMENTS
    assert endpoint.model == "m"


def test_endpoint_deployments_without_api_version() -> None:
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_ENDPOINT") as info:
        parse_endpoint("https://res.openai.azure.com/openai/deployments/d/chat/completions")
    assert "api-version" in str(info.value)


def test_endpoint_v1_shape_needs_model() -> None:
    url = "https://res.openai.azure.com/openai/v1/chat/completions"
    assert parse_endpoint(url, model="dep").shape is EndpointShape.AZURE_V1
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_MODEL"):
        parse_endpoint(url)
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_MODEL"):
        parse_endpoint(url, model="")


def test_endpoint_openai_compatible_shape() -> None:
    endpoint = parse_endpoint("http://127.0.0.1:8080/v1/chat/completions", model="gpt")
    assert endpoint.shape is EndpointShape.OPENAI_COMPATIBLE
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_MODEL"):
        parse_endpoint("https://gw.example.com/v1/chat/completions")


@pytest.mark.parametrize(
    "url",
    [
        "http://res.openai.azure.com/openai/v1/chat/completions",
        "ftp://res/chat/completions",
        "not a url",
    ],
)
def test_endpoint_insecure_or_malformed(url: str) -> None:
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_ENDPOINT"):
        parse_endpoint(url, model="m")


def test_endpoint_must_be_chat_completions() -> None:
    with pytest.raises(ConfigurationError, match="/chat/completions"):
        parse_endpoint("https://res.openai.azure.com/", model="m")


# --------------------------------------------------------------------------- request


def test_body_order_and_optional_fields() -> None:
    task = AITask(
        "hi",
        system_prompt="sys",
        history=(ChatMessage("user", "q"), ChatMessage("assistant", "a")),
        max_tokens=5,
        temperature=0.2,
    )
    body = build_body(task, model="m", stream=False, adaptations=Adaptations())
    assert body == {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "hi"},
        ],
        "model": "m",
        "max_tokens": 5,
        "temperature": 0.2,
    }


def test_body_minimal_and_zero_temperature() -> None:
    body = build_body(AITask("hi"), model=None, stream=False, adaptations=Adaptations())
    assert body == {"messages": [{"role": "user", "content": "hi"}]}
    body = build_body(
        AITask("hi", temperature=0.0), model=None, stream=False, adaptations=Adaptations()
    )
    assert body["temperature"] == 0.0


def test_body_adapted_and_streaming() -> None:
    adapted = Adaptations(max_completion_tokens=True, omit_temperature=True)
    task = AITask("hi", max_tokens=7, temperature=1.5)
    body = build_body(task, model=None, stream=True, adaptations=adapted)
    assert body["max_completion_tokens"] == 7
    assert "max_tokens" not in body
    assert "temperature" not in body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    adapted.omit_stream_options = True
    assert "stream_options" not in build_body(task, model=None, stream=True, adaptations=adapted)


def test_headers() -> None:
    headers = build_headers("tok", "cid", stream=False)
    assert headers == {
        "Authorization": "Bearer tok",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "x-ms-client-request-id": "cid",
    }
    assert build_headers("tok", "cid", stream=True)["Accept"] == "text/event-stream"


def test_request_id_precedence() -> None:
    both = httpx.Headers({"x-request-id": "x", "apim-request-id": "a", "x-ms-request-id": "m"})
    assert request_id_of(both) == "a"
    assert request_id_of(httpx.Headers({"x-request-id": "x", "x-ms-request-id": "m"})) == "x"
    assert request_id_of(httpx.Headers({"x-ms-request-id": "m"})) == "m"
    assert request_id_of(httpx.Headers({"apim-request-id": ""})) is None


def test_transport_errors() -> None:
    timeout = transport_error(httpx.ReadTimeout("slow"))
    assert isinstance(timeout, RequestTimeoutError)
    assert timeout.code == "timeout"
    reset = transport_error(httpx.ConnectError("refused"))
    assert type(reset) is TransientError
    assert reset.code == "connection"
    assert "ConnectError" in reset.message


# --------------------------------------------------------------------------- error bodies


def test_error_body_shapes() -> None:
    shape_a = parse_error_body(
        _json({"error": {"code": 429, "message": "m", "param": "p", "type": "t"}})
    )
    assert (shape_a.shape, shape_a.code, shape_a.param, shape_a.type) == ("A", "429", "p", "t")
    inner = parse_error_body(_json({"error": {"code": None, "innerError": {"code": "X"}}}))
    assert inner.inner_code == "X"
    assert inner.code is None
    assert parse_error_body(_json({"statusCode": 404, "message": "nf"})).shape == "B"
    bare = parse_error_body(_json({"error": "Unauthorized"}))
    assert (bare.shape, bare.message) == ("A", "Unauthorized")
    assert parse_error_body(b"<html>oops</html>").shape == "C"
    listed = parse_error_body(b"[1, 2]")
    assert (listed.shape, listed.message) == ("C", "[1, 2]")
    assert parse_error_body(b"").shape == "C"
    odd = parse_error_body(_json({"error": {"code": True, "innererror": "x"}}))
    assert odd.code is None
    assert odd.inner_code is None


def _context_400(code: str) -> dict[str, object]:
    return {"error": {"code": code, "message": "This model's maximum context length is 8 tokens"}}


def test_400_context_length() -> None:
    failure = _classify(400, _context_400("context_length_exceeded"), **{"apim-request-id": "r1"})
    assert isinstance(failure.error, InputValidationError)
    assert failure.error.code == "context_length_exceeded"
    assert failure.error.request_id == "r1"
    assert failure.error.correlation_id == "cid-1"
    assert failure.error.status == 400
    assert failure.remedy is Remedy.NONE


def test_400_content_filter_reports_categories() -> None:
    payload = {
        "error": {
            "code": "content_filter",
            "status": 400,
            "param": "prompt",
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "high"},
                    "jailbreak": {"filtered": True, "detected": True},
                    "weird": "x",
                },
            },
        }
    }
    failure = _classify(400, payload)
    assert isinstance(failure.error, InputValidationError)
    assert "jailbreak, violence" in failure.error.message


def test_400_inner_policy_violation_without_categories() -> None:
    payload = {"error": {"code": "other", "innererror": {"code": "ResponsibleAIPolicyViolation"}}}
    failure = _classify(400, payload)
    assert isinstance(failure.error, InputValidationError)
    assert "unspecified" in failure.error.message


@pytest.mark.parametrize(
    ("code", "param", "remedy"),
    [
        ("unsupported_parameter", "max_tokens", Remedy.USE_MAX_COMPLETION_TOKENS),
        ("unsupported_value", "temperature", Remedy.OMIT_TEMPERATURE),
        ("unsupported_parameter", "top_p", Remedy.NONE),
        ("unsupported_value", None, Remedy.NONE),
    ],
)
def test_400_unsupported(code: str, param: str | None, remedy: Remedy) -> None:
    failure = _classify(400, {"error": {"code": code, "param": param, "message": "no"}})
    assert isinstance(failure.error, ConfigurationError)
    assert failure.remedy is remedy
    assert failure.body is not None


@pytest.mark.parametrize(
    "payload",
    [
        {"error": {"code": "invalid_request_error", "param": "stream_options", "message": "x"}},
        {"error": {"message": "Unrecognized request argument supplied: stream_options"}},
    ],
)
def test_400_stream_options_rejected(payload: dict[str, object]) -> None:
    failure = _classify(400, payload)
    assert failure.remedy is Remedy.OMIT_STREAM_OPTIONS
    assert isinstance(failure.error, ConfigurationError)


@pytest.mark.parametrize("code", ["OperationNotSupported", "InvalidApiVersion"])
def test_400_config_codes(code: str) -> None:
    failure = _classify(400, {"error": {"code": code, "message": "m"}})
    assert isinstance(failure.error, ConfigurationError)
    assert "api-version" in (failure.error.hint or "")


def test_400_other_is_input() -> None:
    failure = _classify(400, raw=b"bad")
    assert isinstance(failure.error, InputValidationError)
    assert "bad" in failure.error.message


def test_401_gateway_asks_for_refresh() -> None:
    payload = {"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid"}
    failure = _classify(401, payload)
    assert type(failure.error) is AuthenticationError
    assert failure.remedy is Remedy.FORCE_REFRESH


@pytest.mark.parametrize("status", [401, 403])
def test_permission_denied_no_refresh(status: int) -> None:
    payload = {"error": {"code": "PermissionDenied", "message": "Principal does not have access"}}
    failure = _classify(status, payload)
    assert isinstance(failure.error, PermissionDeniedError)
    assert failure.remedy is Remedy.NONE
    assert "Cognitive Services OpenAI User" in (failure.error.hint or "")
    assert "5 min" in (failure.error.hint or "")


def test_403_other() -> None:
    failure = _classify(403, raw=b"Forbidden")
    assert isinstance(failure.error, PermissionDeniedError)


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        ({"error": {"code": "DeploymentNotFound", "message": "no"}}, "5 minutes"),
        ({"error": {"code": "404", "message": "Resource not found"}}, "api-version"),
        ({"statusCode": 404, "message": "Resource not found"}, "gateway"),
    ],
)
def test_404_shapes(payload: dict[str, object], hint: str) -> None:
    failure = _classify(404, payload)
    assert isinstance(failure.error, ConfigurationError)
    assert hint in (failure.error.hint or "")


@pytest.mark.parametrize("status", [408, 504])
def test_timeouts(status: int) -> None:
    failure = _classify(
        status, {"error": {"code": "Timeout", "message": "The operation was timeout."}}
    )
    assert isinstance(failure.error, RequestTimeoutError)
    assert failure.error.status == status


@pytest.mark.parametrize("status", [413, 422])
def test_too_large_or_unprocessable(status: int) -> None:
    failure = _classify(status, raw=b"Request Entity Too Large")
    assert isinstance(failure.error, InputValidationError)


def test_429_retry_after_sources() -> None:
    both = _classify(
        429,
        {"error": {"code": "429", "message": "retry after 2 seconds"}},
        **{"retry-after": "2", "retry-after-ms": "1500"},
    )
    assert isinstance(both.error, RateLimitError)
    assert both.error.retry_after == 1.5
    message_only = _classify(
        429, {"error": {"message": "Rate limit is exceeded. Try again in 3 seconds."}}
    )
    assert isinstance(message_only.error, RateLimitError)
    assert message_only.error.retry_after == 3
    quota = _classify(
        429,
        {"error": {"code": "429", "message": "Please retry after 86400 seconds"}},
        **{"retry-after": "86400"},
    )
    assert isinstance(quota.error, RateLimitError)
    assert quota.error.retry_after == 86400
    garbage = _classify(429, raw=b"", **{"retry-after": "soon"})
    assert isinstance(garbage.error, RateLimitError)
    assert garbage.error.retry_after is None


@pytest.mark.parametrize("status", [409, 500, 502, 503])
def test_transient(status: int) -> None:
    failure = _classify(status, raw=b"<html>Bad gateway</html>", **{"retry-after": "4"})
    assert type(failure.error) is TransientError
    assert failure.error.retry_after == 4


def test_server_error_code_falls_back_to_type() -> None:
    failure = _classify(500, {"error": {"code": None, "type": "server_error", "message": "Sorry"}})
    assert failure.error.code == "server_error"


@pytest.mark.parametrize("status", [302, 405, 418])
def test_unexpected_status_is_configuration(status: int) -> None:
    failure = _classify(status, raw=b"")
    assert isinstance(failure.error, ConfigurationError)
    assert "no message" in failure.error.message


AZURE_TPM = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
    "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 "
    "seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)
AZURE_QUOTA = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
    "have exceeded call rate limit of your current AIServices S0 pricing tier. Please retry after "
    "86400 seconds."
)
AZURE_CAPACITY = (
    "The system is currently experiencing high demand and cannot process your request. Your "
    "request exceeds the maximum usage size allowed during peak load. For improved capacity "
    "reliability, consider switching to Provisioned Throughput. Please retry after 6 seconds."
)


@pytest.mark.parametrize(
    ("message", "wait"), [(AZURE_TPM, 7), (AZURE_QUOTA, 86400), (AZURE_CAPACITY, 6)]
)
def test_429_wait_read_past_the_message_cut(message: str, wait: float) -> None:
    # B4 (/tmp/r1.py): real Azure messages put the wait after the 160 characters shown.
    assert message.index("retry after") > 160
    failure = _classify(429, {"error": {"code": "429", "message": message}})
    assert isinstance(failure.error, RateLimitError)
    assert failure.error.retry_after == wait
    assert failure.body is not None
    assert len(failure.body.message) == 160  # what the exception shows stays short
    assert failure.body.detail == message
    assert "detail" not in repr(failure.body)
    assert message not in str(failure.error)


def test_400_stream_options_named_past_the_message_cut() -> None:
    message = "x " * 100 + "Unrecognized request argument supplied: stream_options"
    failure = _classify(400, {"error": {"code": "invalid_request_error", "message": message}})
    assert failure.remedy is Remedy.OMIT_STREAM_OPTIONS
    assert failure.body is not None
    assert "stream_options" not in failure.body.message


def test_error_body_detail_is_redacted_but_whole() -> None:
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
    body = parse_error_body(_json({"error": {"message": f"{'word ' * 60}{jwt} retry after 2s"}}))
    assert jwt not in body.detail
    assert body.detail.endswith("retry after 2s")
    html = parse_error_body(b"<html>" + b"x" * 300 + b" retry after 9 seconds</html>")
    assert (html.shape, len(html.message)) == ("C", 100)
    assert "retry after 9 seconds" in html.detail


def test_error_message_never_holds_raw_secret() -> None:
    body = b"<html>login page token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln Bearer abcdef</html>"
    failure = _classify(502, raw=body)
    text = str(failure.error)
    assert "eyJhbGciOiJub25lIn0" not in text
    assert "abcdef" not in text


# --------------------------------------------------------------------------- 200 bodies


def _completion(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-2024-11-20",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    body.update(overrides)
    return body


def test_parse_completion_success() -> None:
    completion = parse_completion(_json(_completion()))
    assert completion.text == "hello"
    assert completion.finish_reason == "stop"
    assert completion.usage == TokenUsage(3, 1, 4)
    assert completion.model == "gpt-4o-2024-11-20"


def test_parse_completion_null_content_and_filter() -> None:
    choice = {
        "message": {"role": "assistant", "content": None},
        "finish_reason": "content_filter",
        "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
    }
    completion = parse_completion(_json(_completion(choices=[choice])))
    assert completion.text == ""
    assert completion.finish_reason == "content_filter"
    assert completion.filtered == ("violence",)


def test_parse_completion_content_parts() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image"},
        "junk",
        {"type": "text", "text": "b"},
    ]
    choice = {"message": {"content": parts}, "finish_reason": None}
    completion = parse_completion(_json(_completion(choices=[choice])))
    assert completion.text == "ab"
    assert completion.finish_reason is None


@pytest.mark.parametrize(
    ("content", "content_type", "reason"),
    [
        (b"<html><body>Sign in</body></html>", "text/html", "HTML"),
        (b"  <!doctype html>", "application/json", "HTML"),
        (b'{"choices":[{"message":', "application/json", "malformed JSON"),
        (b"[1]", "application/json", "not an object"),
        (_json({"error": {"message": "boom"}}), "application/json", "error object"),
        (_json({"error": {}}), "application/json", "error object"),
        (_json({"id": "x"}), "application/json", "no 'choices'"),
        (_json({"choices": []}), "application/json", "empty 'choices'"),
        (_json({"choices": [{"finish_reason": "stop"}]}), "application/json", "without 'message'"),
        (_json({"choices": ["x"]}), "application/json", "without 'message'"),
        (_json({"choices": [{"message": {"content": 5}}]}), "application/json", "unexpected type"),
    ],
)
def test_parse_completion_failures(content: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(TransientError, match=reason) as info:
        parse_completion(content, content_type=content_type)
    assert info.value.code == PARSE_ERROR


ANSWER = "The secret plan is to meet at dawn by the old mill"


@pytest.mark.parametrize(
    ("content", "content_type", "described"),
    [
        (f'{{"choices":[{{"message":{{"content":"{ANSWER}'.encode(), "application/json", "JSON"),
        (f"<html>{ANSWER}</html>".encode(), "text/html", "HTML"),
    ],
)
def test_parse_failure_quotes_the_answer_only_on_request(
    content: bytes, content_type: str, described: str
) -> None:
    # S4: a malformed 200 body is the model's answer: size and content type only by default.
    with pytest.raises(TransientError, match=described) as info:
        parse_completion(content, content_type=content_type)
    assert "dawn" not in str(info.value)
    assert f"({len(content)} bytes, {content_type})" in info.value.message
    with pytest.raises(TransientError) as shown:
        parse_completion(content, content_type=content_type, preview=True)
    assert "The secret plan" in shown.value.message


def test_parse_failure_without_content_type() -> None:
    with pytest.raises(TransientError, match=r"\(3 bytes, no content type\)"):
        parse_completion(b"{x:", content_type="")


def test_parse_failure_error_object_always_shows_the_server_message() -> None:
    with pytest.raises(TransientError, match="an error object: boom"):
        parse_completion(_json({"error": {"message": "boom"}}))


@pytest.mark.parametrize(
    "parse",
    [
        lambda: parse_completion(b'{"choices": [' + ANSWER.encode()),
        lambda: parse_stream_event('{"choices": [' + ANSWER),
    ],
    ids=["completion", "stream_event"],
)
def test_parse_failure_chains_nothing(parse: object) -> None:
    # A json.JSONDecodeError on __context__ would carry the whole body (doc) = the answer.
    with pytest.raises(TransientError) as info:
        parse()  # type: ignore[operator]
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


def test_parse_usage_defensive() -> None:
    assert parse_usage(None) == TokenUsage()
    assert parse_usage({"prompt_tokens": 2, "completion_tokens": 3}) == TokenUsage(2, 3, 5)
    odd = parse_usage(
        {
            "prompt_tokens": True,
            "completion_tokens": -1,
            "total_tokens": "x",
            "completion_tokens_details": {"reasoning_tokens": 64},
        }
    )
    assert odd == TokenUsage(0, 0, 0, 64)
    assert (
        parse_usage({"completion_tokens_details": {"reasoning_tokens": -3}}).reasoning_tokens
        is None
    )
    assert parse_usage({"completion_tokens_details": "x"}).reasoning_tokens is None


# --------------------------------------------------------------------------- stream events


def test_stream_azure_chunks() -> None:
    first = parse_stream_event(
        json.dumps({"id": "", "model": "", "prompt_filter_results": [{}], "choices": []})
    )
    assert (first.delta, first.finish_reason, first.model, first.usage) == ("", None, None, None)
    role = parse_stream_event(
        json.dumps(
            {"model": "gpt", "choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        )
    )
    assert (role.delta, role.model) == ("", "gpt")
    delta = parse_stream_event(json.dumps({"choices": [{"delta": {"content": "Hi"}}]}))
    assert delta.delta == "Hi"
    finish = parse_stream_event(json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    assert finish.finish_reason == "stop"
    annotation = parse_stream_event(
        json.dumps(
            {
                "id": "",
                "choices": [
                    {
                        "content_filter_results": {"protected_material_text": {"filtered": True}},
                        "content_filter_offsets": {"check_offset": 0},
                        "finish_reason": "content_filter",
                    }
                ],
            }
        )
    )
    assert annotation.filtered == ("protected_material_text",)
    assert annotation.finish_reason == "content_filter"
    usage = parse_stream_event(json.dumps({"choices": [], "usage": {"prompt_tokens": 1}}))
    assert usage.usage == TokenUsage(1, 0, 1)
    assert parse_stream_event(" [DONE] ").done


def test_stream_odd_chunks_tolerated() -> None:
    assert parse_stream_event(json.dumps({"choices": ["x"]})).delta == ""
    assert parse_stream_event(json.dumps({"choices": [{"delta": "x"}]})).delta == ""
    assert (
        parse_stream_event(
            json.dumps({"choices": [{"delta": {"content": None}}], "usage": None})
        ).usage
        is None
    )


def test_stream_error_event() -> None:
    with pytest.raises(TransientError, match="boom") as info:
        parse_stream_event(json.dumps({"error": {"code": "server_error", "message": "boom"}}))
    assert info.value.code == "server_error"
    with pytest.raises(TransientError) as info:
        parse_stream_event(json.dumps({"error": {}}))
    assert info.value.code == "stream_error"


@pytest.mark.parametrize("data", ["{not json", "[1]"])
def test_stream_bad_json(data: str) -> None:
    with pytest.raises(TransientError) as info:
        parse_stream_event(data)
    assert info.value.code == PARSE_ERROR


def test_stream_bad_json_quotes_the_event_only_on_request() -> None:
    data = '{"choices": [{"delta": {"content": "' + ANSWER
    with pytest.raises(TransientError) as info:
        parse_stream_event(data)
    assert info.value.message.endswith(f"not JSON ({len(data)} characters)")
    assert "dawn" not in str(info.value)
    with pytest.raises(TransientError, match="The secret plan"):
        parse_stream_event(data, preview=True)


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_a_parse_error_not_a_crash() -> None:
    assert isinstance(classify_failure(502, {}, DEEP, now=0.0).error, TransientError)
    with pytest.raises(TransientError):
        parse_completion(DEEP)
    with pytest.raises(TransientError):
        parse_stream_event(DEEP.decode())
