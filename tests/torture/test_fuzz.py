"""Issue 6 item 6: fuzzing the boundaries; only documented exceptions may come out.

Targets: JWT ``exp`` parsing (:func:`jwt_exp`), token-endpoint answers (:class:`EntraClient`
through a mock transport: refresh, device code, device poll), chat answers
(:func:`classify_failure`, :func:`parse_completion`, :func:`parse_error_body`), SSE streams
(:func:`open_sse` + :class:`StreamReader` over chunked bytes, and :func:`parse_stream_event`),
and ``Retry-After`` values (:func:`parse_retry_after`).

CI: 200 examples per target, derandomized (the same inputs every run), no example database.
The benchmark run (``--torture-full``) uses 10,000. Two bugs this fuzzing found (fixed in the
core since) keep a regression test each at the end of the module.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torture_helpers import Report, Scale

from saga_magic.core.chat_wire import (
    PARSE_ERROR,
    Completion,
    StreamChunk,
    classify_failure,
    parse_completion,
    parse_error_body,
    parse_stream_event,
)
from saga_magic.core.entra import DeviceCodeGrant, EntraClient, PollStatus, TokenGrant
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    TransientError,
)
from saga_magic.core.jwt import jwt_exp
from saga_magic.core.retry import PLAUSIBLE_WAIT_CEILING, parse_retry_after
from saga_magic.core.sse import StreamReader, open_sse

pytestmark = pytest.mark.torture

REFRESH_TOKEN = "1.AS-fuzz-refresh-token-0123456789abcdef"
DEVICE_CODE = "DAQABIQEAAAB-fuzz-device-code-0123456789"
_COUNTS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def fuzz(scale: Scale) -> settings:
    return settings(
        max_examples=scale.pick(200, 10_000),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def _report_counts(report: Report, scale: Scale) -> Any:
    yield
    report(
        "fuzz",
        {
            "examples_per_target": scale.pick(200, 10_000),
            "targets": len(_COUNTS),
            "examples": sum(c["examples"] for c in _COUNTS.values()),
            "undocumented_exceptions": 0,  # any would have failed its test
            "by_target": _COUNTS,
        },
    )


def count(target: str, key: str = "examples") -> None:
    bucket = _COUNTS.setdefault(target, {"examples": 0})
    bucket[key] = bucket.get(key, 0) + 1


# -- strategies ------------------------------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
numberish = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            " ",
            "soon",
            "nan",
            "inf",
            "-inf",
            "-5",
            "0",
            "1e100",
            "1e400",
            "0x10",
            " 7 ",
            "7.5",
            "1_000",
            "٣",
            "\x00",
            "86400",
            "604801",
        ]
    ),
)
http_date = st.builds(
    lambda when, minutes: email.utils.format_datetime(
        when.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    ),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-1439, max_value=1439),
)
header_value = st.one_of(numberish, http_date, st.text(alphabet=st.characters(max_codepoint=255)))
retry_headers = st.dictionaries(
    st.sampled_from(
        [
            "retry-after",
            "retry-after-ms",
            "x-ms-retry-after-ms",
            "Retry-After",
            "RETRY-AFTER-MS",
            "x-other",
        ]
    ),
    header_value,
    max_size=4,
)
wait_message = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.builds(
        "{} {} {}".format,
        st.sampled_from(["Please retry after", "Try again in", "retry after", "TRY AGAIN IN"]),
        numberish,
        st.sampled_from(["seconds", "second", "s", "ms", "milliseconds", "secs", "minutes"]),
    ),
)


def body_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Bytes of a JSON object with some of ``fields`` (each with a hostile value), or noise."""
    keys = sorted(fields)
    structured = st.fixed_dictionaries({}, optional={k: fields[k] | json_value for k in keys})
    return st.one_of(
        structured.map(lambda d: json.dumps(d).encode()),
        structured.map(lambda d: json.dumps(d).encode()[: len(json.dumps(d)) // 2]),
        json_value.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.sampled_from([b"", b"<html><body>500</body></html>", b"null", b"{", b"[]"]),
    )


ENTRA_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "error": st.sampled_from(
        [
            "invalid_grant",
            "interaction_required",
            "consent_required",
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "invalid_request",
            "authorization_pending",
            "slow_down",
            "authorization_declined",
            "access_denied",
            "expired_token",
            "bad_verification_code",
            "temporarily_unavailable",
            "",
        ]
    ),
    "error_description": st.one_of(
        st.text(max_size=60),
        st.builds(
            "AADSTS{}: {}\r\nTrace ID: x".format, st.integers(0, 999999), st.text(max_size=30)
        ),
        st.just(f"bad refresh_token {REFRESH_TOKEN} and device_code={DEVICE_CODE}"),
        st.sampled_from([" ", "\r\n", "\t \n"]),  # whitespace only: was an IndexError
    ),
    "error_codes": st.lists(st.integers(0, 10**7) | json_leaf, max_size=3) | st.just([50196]),
    "suberror": st.text(max_size=12),
    "trace_id": st.text(max_size=40),
    "correlation_id": st.text(max_size=40),
    "access_token": st.text(max_size=40),
    "refresh_token": st.text(max_size=40),
    "id_token": st.text(max_size=40),
    "expires_in": json_leaf | numberish,
    "refresh_in": json_leaf | numberish,
    "scope": st.text(max_size=30),
    "token_type": st.text(max_size=10),
    "device_code": st.text(max_size=40),
    "user_code": st.text(max_size=12),
    "verification_uri": st.text(max_size=40),
    "verification_url": st.text(max_size=40),
    "interval": json_leaf | numberish,
    "message": st.text(max_size=40),
}
statuses = st.one_of(
    st.sampled_from(
        [200, 201, 204, 301, 302, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503, 504, 505]
    ),
    st.integers(min_value=200, max_value=599),
)
answers = st.tuples(statuses, body_of(ENTRA_FIELDS), retry_headers)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- JWT ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_exp_never_raises(fuzz: settings) -> None:
    claims = st.one_of(
        json_value,
        st.dictionaries(st.just("exp"), json_leaf | st.integers() | st.floats()),
    )
    token = st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda c, head, sig: f"{head}.{_b64(json.dumps(c).encode())}.{sig}",
            claims,
            st.text(max_size=20),
            st.text(max_size=20),
        ),
        st.builds(lambda raw: f"eyJ.{_b64(raw)}.s", st.binary(max_size=60)),
    )

    @fuzz
    @given(token)
    def check(value: str) -> None:
        count("jwt_exp")
        exp = jwt_exp(value)
        assert exp is None or math.isfinite(exp)

    check()


# -- the Entra boundary -------------------------------------------------------------------------

ENTRA_ERRORS = (AuthenticationError, ConfigurationError, TransientError)


def wire_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as raw bytes (latin-1, as on the wire); values that cannot be sent are dropped."""
    raw = []
    for name, value in headers.items():
        try:
            encoded = value.encode("latin-1")
        except UnicodeEncodeError:
            continue
        if value.strip() == value and "\n" not in value and "\r" not in value:
            raw.append((name.encode(), encoded))
    return raw


def _entra_client(status: int, body: bytes, headers: dict[str, str]) -> EntraClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=wire_headers(headers))

    return EntraClient(
        authority_host="https://login.microsoftonline.com",
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        scopes=("https://cognitiveservices.azure.com/.default", "offline_access"),
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
        clock=lambda: 1_700_000_000.0,
    )


def _check_entra(
    target: str,
    call: Callable[[EntraClient], Any],
    answer: tuple[int, bytes, dict[str, str]],
    sent: str | None,
) -> Any:
    """Run one call against ``answer``; ``sent`` is the secret the call sent (echoed back in
    some generated bodies), which must not appear in the error."""
    status, body, headers = answer
    client = _entra_client(status, body, headers)
    count(target)

    async def go() -> Any:
        try:
            return await call(client)
        finally:
            assert client._http is not None
            await client._http.aclose()

    error: ArcSagaException | None = None
    try:
        result = run(go())
    except ArcSagaException as caught:
        error = caught
    if error is not None:
        assert isinstance(error, ENTRA_ERRORS), repr(error)
        assert sent is None or sent not in f"{error} {error!r}"
        return None
    # A token set only from a 2xx answer (a poll may be told "pending" under any status: the
    # OAuth error field decides, PROTOCOLS.md 1.4).
    assert isinstance(result, PollStatus) or 200 <= status < 300
    return result


def test_token_endpoint_answers(fuzz: settings) -> None:
    @fuzz
    @given(answers)
    def check(answer: tuple[int, bytes, dict[str, str]]) -> None:
        grant = _check_entra(
            "entra.refresh", lambda c: c.refresh(REFRESH_TOKEN), answer, REFRESH_TOKEN
        )
        if grant is not None:
            assert isinstance(grant, TokenGrant)
            assert grant.access_token
            assert math.isfinite(grant.expires_at)
            assert grant.expires_at >= 1_700_000_000.0  # expires_in may be tiny (1e-271)
            assert grant.refresh_token

    check()


def test_device_code_answers(fuzz: settings) -> None:
    @fuzz
    @given(answers)
    def check(answer: tuple[int, bytes, dict[str, str]]) -> None:
        grant = _check_entra("entra.devicecode", lambda c: c.request_device_code(), answer, None)
        if grant is not None:
            assert isinstance(grant, DeviceCodeGrant)
            assert grant.interval > 0
            assert grant.expires_at >= 1_700_000_000.0  # expires_in may be tiny (1e-271)

    check()


def test_device_poll_answers(fuzz: settings) -> None:
    @fuzz
    @given(answers)
    def check(answer: tuple[int, bytes, dict[str, str]]) -> None:
        outcome = _check_entra(
            "entra.poll", lambda c: c.poll_device_code(DEVICE_CODE), answer, DEVICE_CODE
        )
        assert outcome is None or isinstance(outcome, TokenGrant | PollStatus)

    check()


# -- chat bodies -----------------------------------------------------------------------------------

CHAT_ERROR_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "error": st.fixed_dictionaries(
        {},
        optional={
            "code": json_leaf
            | st.sampled_from(
                [
                    "context_length_exceeded",
                    "content_filter",
                    "unsupported_parameter",
                    "unsupported_value",
                    "DeploymentNotFound",
                    "PermissionDenied",
                    "429",
                ]
            ),
            "message": st.text(max_size=80),
            "param": json_leaf | st.sampled_from(["max_tokens", "temperature", "stream_options"]),
            "type": json_leaf,
            "innererror": json_value,
            "innerError": json_value,
        },
    ),
    "statusCode": json_leaf,
    "message": json_leaf,
    "code": json_leaf,
}
choice = st.fixed_dictionaries(
    {},
    optional={
        "message": st.fixed_dictionaries({}, optional={"content": json_value, "role": json_leaf}),
        "delta": st.fixed_dictionaries({}, optional={"content": json_value, "role": json_leaf}),
        "finish_reason": json_leaf,
        "content_filter_results": json_value,
        "index": json_leaf,
    },
)
CHAT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "choices": st.lists(choice | json_value, max_size=3),
    "usage": st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": json_leaf,
            "completion_tokens": json_leaf,
            "total_tokens": json_leaf,
            "completion_tokens_details": json_value,
        },
    ),
    "model": json_leaf,
    "error": json_value,
    "id": json_leaf,
}
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/html", "text/plain", ""]
)


def test_chat_error_answers(fuzz: settings) -> None:
    @fuzz
    @given(statuses, retry_headers, body_of(CHAT_ERROR_FIELDS))
    def check(status: int, headers: dict[str, str], body: bytes) -> None:
        count("chat.classify_failure")
        failure = classify_failure(status, headers, body, now=1_700_000_000.0)
        assert isinstance(failure.error, ArcSagaException)
        parse_error_body(body)

    check()


def test_chat_success_answers(fuzz: settings) -> None:
    @fuzz
    @given(body_of(CHAT_FIELDS), content_types)
    def check(body: bytes, content_type: str) -> None:
        count("chat.parse_completion")
        try:
            completion = parse_completion(body, content_type=content_type)
        except TransientError as error:
            code = error.code
        else:
            code = None
        if code is not None:
            assert code == PARSE_ERROR
            return
        assert isinstance(completion, Completion)
        assert isinstance(completion.text, str)

    check()


# -- SSE streams -----------------------------------------------------------------------------------

sse_payload = st.one_of(
    st.just("[DONE]"),
    st.fixed_dictionaries({}, optional=CHAT_FIELDS).map(json.dumps),
    json_value.map(json.dumps),
    st.text(max_size=30),
)
sse_line = st.one_of(
    sse_payload.map(lambda p: f"data: {p}"),
    sse_payload.map(lambda p: f"data:{p}"),
    st.sampled_from(
        [": keep-alive", "event: message", "id: 7", "retry: 100", "", "data:", "data: [DONE]"]
    ),
    st.text(max_size=20),
)
sse_stream = st.builds(
    lambda lines, eol: (eol.join(lines) + eol).encode(),
    st.lists(sse_line, max_size=12),
    st.sampled_from(["\n", "\r\n", "\r", "\n\n"]),
)


async def _read_stream(body: bytes, cuts: list[int]) -> str:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})

    async def chunks() -> AsyncIterator[bytes]:
        for start, end in itertools.pairwise(points):
            yield body[start:end]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        reader = await open_sse(
            client,
            "https://example.openai.azure.com/openai/v1/chat/completions",
            headers={},
            content=b"{}",
            wait_limit=5.0,
            idle_timeout=5.0,
            deadline_at=time.time() + 60,
            clock=time.time,
        )
        assert isinstance(reader, StreamReader)
        try:
            parts = []
            while (delta := await reader.next_delta()) is not None:
                parts.append(delta)
        finally:
            await reader.aclose()
    return "".join(parts)


def test_sse_streams(fuzz: settings) -> None:
    @fuzz
    @given(sse_stream, st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
    def check(body: bytes, cuts: list[int]) -> None:
        count("sse.stream")
        try:
            text = run(_read_stream(body, cuts))
        except TransientError:
            return
        assert isinstance(text, str)

    check()


def test_sse_event_payloads(fuzz: settings) -> None:
    @fuzz
    @given(sse_payload)
    def check(data: str) -> None:
        count("sse.parse_stream_event")
        try:
            chunk = parse_stream_event(data)
        except TransientError:
            return
        assert isinstance(chunk, StreamChunk)

    check()


# -- Retry-After -----------------------------------------------------------------------------------


def test_retry_after_values(fuzz: settings) -> None:
    @fuzz
    @given(retry_headers, wait_message, st.floats(min_value=0, max_value=4e9))
    def check(headers: dict[str, str], message: str | None, now: float) -> None:
        count("retry.parse_retry_after")
        wait = parse_retry_after(headers, message, now=now)
        assert wait is None or (math.isfinite(wait) and 0 < wait <= PLAUSIBLE_WAIT_CEILING)

    check()


def test_retry_after_http_dates_are_exact() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    later = email.utils.format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=now.timestamp()) == 90.0


# -- regressions: bugs this fuzzing found --------------------------------------------------------


def test_whitespace_only_error_description_is_a_documented_error() -> None:
    """Was: entra.py ``_failure`` took ``description.strip().splitlines()[0]`` -> IndexError."""
    body = json.dumps({"error": "invalid_grant", "error_description": " \r\n"}).encode()
    client = _entra_client(400, body, {})

    async def go() -> None:
        try:
            await client.refresh(REFRESH_TOKEN)
        finally:
            assert client._http is not None
            await client._http.aclose()

    with pytest.raises(AuthenticationError):
        run(go())


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_a_documented_error() -> None:
    """Was: chat_wire.py caught only ValueError from json.loads -> RecursionError escaped."""
    assert isinstance(classify_failure(502, {}, DEEP, now=0.0).error, TransientError)
    with pytest.raises(TransientError):
        parse_completion(DEEP)
    with pytest.raises(TransientError):
        parse_stream_event(DEEP.decode())
