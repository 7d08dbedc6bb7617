"""The Entra ID boundary: classification of real answers, request shape, timeouts, parsing."""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from auth_helpers import (
    CORRELATION_ID,
    TRACE_ID,
    Entra,
    assert_clean_chain,
    device_ok,
    html,
    make_jwt,
    oauth_error,
    secret,
    token_ok,
)

from saga_magic.core.entra import (
    DEFAULT_EXPIRES_IN,
    EntraClient,
    PollStatus,
    TokenGrant,
)
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)

NOW = 1_700_000_000.0
Factory = Callable[..., tuple[EntraClient, Entra]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[tuple[EntraClient, httpx.AsyncClient]] = []

    def factory(**options: Any) -> tuple[EntraClient, Entra]:
        entra = Entra()
        client = entra.client()
        options.setdefault("scopes", ("s1", "offline_access"))
        boundary = EntraClient(
            authority_host="https://login.example.com",
            tenant_id="common",
            client_id="cid",
            http_client=client,
            clock=lambda: NOW,
            **options,
        )
        made.append((boundary, client))
        return boundary, entra

    yield factory
    for boundary, client in made:
        await boundary.close()
        assert not client.is_closed  # not ours
        await client.aclose()


async def refresh_error(make: Factory, *replies: Any, **options: Any) -> ArcSagaException:
    boundary, entra = make(**options)
    entra.reply(*replies)
    with pytest.raises(ArcSagaException) as caught:
        await boundary.refresh("rt-value-0123456789abcdef")
    return caught.value


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [
        (oauth_error(400, "invalid_grant", (70000,)), AuthenticationError, "invalid_grant"),
        (oauth_error(400, "invalid_grant", (700082,)), AuthenticationError, "invalid_grant"),
        (oauth_error(400, "invalid_grant", (50173,)), AuthenticationError, "invalid_grant"),
        (oauth_error(400, "invalid_grant", (70043,)), AuthenticationError, "invalid_grant"),
        (oauth_error(400, "interaction_required", (50079,)), AuthenticationError, None),
        (oauth_error(400, "consent_required", (65001,)), AuthenticationError, None),
        (oauth_error(400, "invalid_grant", (50196,)), RateLimitError, "invalid_grant"),
        (oauth_error(401, "invalid_client", (7000215,)), ConfigurationError, "invalid_client"),
        (oauth_error(401, "invalid_client", (7000222,)), ConfigurationError, "invalid_client"),
        (oauth_error(401, "invalid_client", (700025,)), ConfigurationError, "invalid_client"),
        (oauth_error(400, "unauthorized_client", (700016,)), ConfigurationError, None),
        (oauth_error(400, "invalid_scope", (70011,)), ConfigurationError, None),
        (oauth_error(400, "invalid_request", (900144,)), ConfigurationError, None),
        (oauth_error(400, "unsupported_grant_type", (70003,)), ConfigurationError, None),
        (oauth_error(400, "brand_new_error"), ConfigurationError, "brand_new_error"),
        (httpx.Response(400, json={"message": "no error field"}), ConfigurationError, None),
        (httpx.Response(404, text="Not Found"), ConfigurationError, None),
        (httpx.Response(302, headers={"location": "https://x"}), ConfigurationError, None),
        (httpx.Response(429), RateLimitError, None),
        (oauth_error(429, "temporarily_unavailable", (90055,)), RateLimitError, None),
        (oauth_error(500, "temporarily_unavailable", (50000,)), TransientError, None),
        (oauth_error(503, "invalid_grant", (70000,)), TransientError, None),
        (html(500), TransientError, None),
        (html(502, ""), TransientError, None),
        (httpx.Response(500, text='{"error": "temporarily_unav'), TransientError, None),
        (html(400), TransientError, None),
        (html(401, ""), TransientError, None),
        (httpx.Response(400, json=["not", "an", "object"]), TransientError, None),
        (httpx.Response(409), TransientError, None),
        (httpx.Response(408), RequestTimeoutError, None),
        (httpx.Response(504, text="Gateway Timeout"), RequestTimeoutError, None),
    ],
)
async def test_classification(make: Factory, reply: Any, kind: type, code: str | None) -> None:
    error = await refresh_error(make, reply)
    assert type(error) is kind
    assert error.status == reply.status_code
    if code is not None:
        assert error.code == code


async def test_error_context_comes_from_the_body_and_headers(make: Factory) -> None:
    error = await refresh_error(make, oauth_error(400, "invalid_grant", (50076,), suberror="x"))
    assert error.error_codes == (50076,)
    assert error.request_id == TRACE_ID
    assert error.correlation_id == CORRELATION_ID
    assert str(error).startswith("token refresh failed: HTTP 400 invalid_grant (x): AADSTS50076")
    assert "Trace ID" not in error.message  # first line of error_description only


async def test_request_id_falls_back_to_trace_id_and_correlation_to_ours(make: Factory) -> None:
    body = {"error": "invalid_grant", "trace_id": "trace-from-body"}
    error = await refresh_error(make, httpx.Response(400, json=body))
    assert error.request_id == "trace-from-body"
    assert error.correlation_id  # our client-request-id
    echoed = await refresh_error(
        make, httpx.Response(400, json={"error": "x"}, headers={"client-request-id": "echo"})
    )
    assert echoed.correlation_id == "echo"


async def test_our_client_request_id_is_the_correlation_fallback(make: Factory) -> None:
    boundary, entra = make()
    entra.reply(html(500))
    with pytest.raises(TransientError) as caught:
        await boundary.refresh("rt-value-0123456789abcdef")
    assert caught.value.correlation_id == entra.requests[0].headers["client-request-id"]


async def test_odd_error_codes_are_ignored(make: Factory) -> None:
    body = {"error": "invalid_grant", "error_codes": ["50196", True, 70000]}
    error = await refresh_error(make, httpx.Response(400, json=body))
    assert type(error) is AuthenticationError
    assert error.error_codes == (70000,)
    body = {"error": "invalid_grant", "error_codes": "50196"}
    assert (await refresh_error(make, httpx.Response(400, json=body))).error_codes == ()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": email.utils.formatdate(NOW + 10, usegmt=True)}, 10.0),
        ({"Retry-After": "soon"}, None),
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
    ],
)
async def test_retry_after_on_429(
    make: Factory, headers: dict[str, str], expected: float | None
) -> None:
    error = await refresh_error(make, httpx.Response(429, headers=headers))
    assert isinstance(error, RateLimitError)
    assert error.retry_after == expected


async def test_retry_after_on_5xx_and_in_the_description(make: Factory) -> None:
    error = await refresh_error(make, httpx.Response(503, headers={"Retry-After": "4"}))
    assert isinstance(error, TransientError)
    assert error.retry_after == 4
    error = await refresh_error(
        make, oauth_error(429, "temporarily_unavailable", text="Please retry after 9 seconds.")
    )
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 9


async def test_messages_never_carry_secrets(make: Factory) -> None:
    refresh_token = "rt-value-0123456789abcdef"
    client_secret = "cs-value-9876543210fedcba"
    echo = f"AADSTS70000: The refresh token {refresh_token} (secret {client_secret}) is bad."
    boundary, entra = make(client_secret=client_secret)
    entra.reply(
        httpx.Response(400, json={"error": "invalid_grant", "error_description": echo}),
        httpx.Response(500, text=f"<html>{refresh_token}</html>"),
        httpx.ConnectError(f"failed sending refresh_token={refresh_token}"),
    )
    for _ in range(3):
        with pytest.raises(ArcSagaException) as caught:
            await boundary.refresh(refresh_token)
        for text in (str(caught.value), repr(caught.value), caught.value.message):
            assert refresh_token not in text
            assert client_secret not in text
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None


def _failing_transport(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    def fail(request: httpx.Request) -> httpx.Response:
        if kind == "connect":
            raise httpx.ConnectError("refused", request=request)
        if kind == "read_timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if kind == "decoding":
            raise httpx.DecodingError("bad gzip", request=request)
        raise httpx.RemoteProtocolError("peer closed", request=request)

    return fail


@pytest.mark.parametrize("kind", ["connect", "read_timeout", "decoding", "protocol"])
@pytest.mark.parametrize("call", ["refresh", "poll", "device_code"])
async def test_no_httpx_error_is_reachable_from_what_we_raise(
    make: Factory, kind: str, call: str
) -> None:
    # /tmp/r2.py: ``raise ... from None`` left the httpx error (with the form: refresh token,
    # client secret, device code) on __context__.
    refresh_token = secret("rt")
    client_secret = secret("cs")
    device_code = secret("dc")
    boundary, entra = make(client_secret=client_secret)
    entra.reply(_failing_transport(kind))
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "refresh": lambda: boundary.refresh(refresh_token),
        "poll": lambda: boundary.poll_device_code(device_code),
        "device_code": boundary.request_device_code,
    }
    with pytest.raises(TransientError) as caught:
        await calls[call]()
    assert_clean_chain(caught.value, refresh_token, client_secret, device_code)
    assert caught.value.code == {"read_timeout": "timeout", "decoding": "protocol"}.get(
        kind, "connection"
    )


async def test_the_budget_timeout_leaves_no_chain() -> None:
    async def trickle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    async with httpx.AsyncClient(transport=httpx.MockTransport(trickle)) as client:
        boundary = EntraClient(
            authority_host="https://login.example.com",
            tenant_id="common",
            client_id="cid",
            client_secret="cs-value-9876543210fedcba",
            scopes=("s",),
            http_client=client,
        )
        with pytest.raises(RequestTimeoutError) as caught:
            await boundary.refresh("rt-value-0123456789abcdef", budget=0.01)
    assert caught.value.__context__ is None
    assert_clean_chain(caught.value, "rt-value-0123456789abcdef", "cs-value-9876543210fedcba")


async def test_long_descriptions_are_cut(make: Factory) -> None:
    error = await refresh_error(make, oauth_error(400, "invalid_grant", (70000,), text="x" * 500))
    assert len(error.message) < 260


# -- transport -----------------------------------------------------------------------------------


async def test_transport_errors(make: Factory) -> None:
    error = await refresh_error(make, httpx.ConnectError("connection refused"))
    assert type(error) is TransientError
    assert error.code == "connection"
    assert "ConnectError" in error.message
    error = await refresh_error(make, httpx.ConnectTimeout("slow"))
    assert type(error) is RequestTimeoutError
    assert error.code == "timeout"


async def test_the_whole_attempt_is_bounded_by_the_budget() -> None:
    async def trickle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    async with httpx.AsyncClient(transport=httpx.MockTransport(trickle)) as client:
        boundary = EntraClient(
            authority_host="https://login.example.com",
            tenant_id="common",
            client_id="cid",
            scopes=("s",),
            http_client=client,
            timeout=30.0,
        )
        with pytest.raises(RequestTimeoutError):
            await boundary.refresh("rt-value-0123456789abcdef", budget=0.02)


@pytest.mark.parametrize(
    ("timeout", "budget", "phases", "total"),
    [
        (30.0, None, (30.0, 30.0, 30.0, 30.0), 30.0),
        (30.0, 5.0, (5.0, 5.0, 5.0, 5.0), 5.0),
        (30.0, -1.0, (0.001, 0.001, 0.001, 0.001), 0.001),
        (httpx.Timeout(10.0, read=None), None, (10.0, None, 10.0, 10.0), None),
        (httpx.Timeout(10.0, read=None), 4.0, (4.0, 4.0, 4.0, 4.0), 4.0),
        (httpx.Timeout(2.0, read=20.0), 4.0, (2.0, 4.0, 2.0, 2.0), 4.0),
    ],
)
async def test_timeouts(
    make: Factory, timeout: Any, budget: float | None, phases: tuple[Any, ...], total: Any
) -> None:
    boundary, _ = make(timeout=timeout)
    limits, bound = boundary._limits(budget)
    assert (limits.connect, limits.read, limits.write, limits.pool) == phases
    assert bound == total


async def test_close_only_closes_a_client_it_created() -> None:
    def boundary_factory() -> EntraClient:
        return EntraClient(
            authority_host="https://login.example.com",
            tenant_id="common",
            client_id="c",
            scopes=("s",),
        )

    await boundary_factory().close()  # never used: nothing to close
    boundary = boundary_factory()
    with respx.mock:
        respx.post("https://login.example.com/common/oauth2/v2.0/token").mock(
            return_value=token_ok()
        )
        await boundary.refresh("rt-value-0123456789abcdef")
    client = boundary._http
    assert client is not None
    await boundary.close()
    assert client.is_closed
    assert boundary._http is None
    # Used after close: an error, not a new client that nobody would close.
    with pytest.raises(ArcSagaException) as caught:
        await boundary.refresh("rt-value-0123456789abcdef")
    assert caught.value.code == "closed"
    assert boundary._http is None


# -- success parsing -----------------------------------------------------------------------------


async def test_grant_parsing(make: Factory) -> None:
    boundary, entra = make()
    access = make_jwt(exp=NOW + 100)
    entra.reply(token_ok(access, "new-rt-0123456789abcdef", expires_in="3599", refresh_in=1800))
    grant = await boundary.refresh("rt-value-0123456789abcdef", budget=60)
    assert isinstance(grant, TokenGrant)
    assert grant.access_token == access
    assert grant.refresh_token == "new-rt-0123456789abcdef"
    assert grant.expires_at == NOW + 3599
    assert grant.refresh_at == NOW + 1800
    assert grant.token_type == "Bearer"
    assert grant.request_id == TRACE_ID
    assert access not in repr(grant)
    assert "new-rt" not in repr(grant)
    record = grant.to_record()
    assert record["refresh_at"] == NOW + 1800
    assert set(record) == {
        "access_token",
        "refresh_token",
        "expires_at",
        "scope",
        "token_type",
        "refresh_at",
    }


@pytest.mark.parametrize(
    "expires_in", [None, "soon", -5, 0, True, float("nan"), 10**400, [1], {"a": 1}]
)
async def test_odd_expires_in_falls_back_to_an_hour(make: Factory, expires_in: Any) -> None:
    boundary, entra = make()
    body = {"access_token": "at-0123456789abcdef"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    entra.reply(httpx.Response(200, content=_dumps(body)))
    grant = await boundary.refresh("rt-value-0123456789abcdef")
    assert grant.expires_at == NOW + DEFAULT_EXPIRES_IN
    assert grant.refresh_at is None
    assert grant.refresh_token == "rt-value-0123456789abcdef"  # none returned: keep ours
    assert grant.scope == "s1 offline_access"
    assert grant.token_type == "Bearer"
    assert "refresh_at" not in grant.to_record()


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>login page</html>"),
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, json={"access_token": ""}),
        httpx.Response(200, json={"access_token": 42}),
        httpx.Response(200, content=b""),
    ],
)
async def test_a_200_without_a_token_is_transient(make: Factory, reply: httpx.Response) -> None:
    error = await refresh_error(make, reply)
    assert type(error) is TransientError
    assert error.code == "parse"


async def test_id_token_is_registered_but_not_kept(make: Factory) -> None:
    boundary, entra = make()
    entra.reply(token_ok(id_token=make_jwt(sub="someone")))
    grant = await boundary.refresh("rt-value-0123456789abcdef")
    assert "id_token" not in grant.to_record()


# -- device code ---------------------------------------------------------------------------------


async def test_device_code_request(make: Factory) -> None:
    boundary, entra = make()
    entra.reply(device_ok("dc-0123456789abcdef", expires_in="600", interval=3))
    grant = await boundary.request_device_code(budget=10)
    assert grant.device_code == "dc-0123456789abcdef"
    assert grant.expires_at == NOW + 600
    assert grant.interval == 3
    assert "dc-0123456789abcdef" not in repr(grant)
    assert str(entra.requests[0].url) == "https://login.example.com/common/oauth2/v2.0/devicecode"


@pytest.mark.parametrize(
    "body",
    [
        {"user_code": "A", "verification_uri": "https://x"},
        {"device_code": "dc-0123456789abcdef", "verification_uri": "https://x"},
        {"device_code": "dc-0123456789abcdef", "user_code": "A"},
    ],
)
async def test_device_code_answer_without_codes(make: Factory, body: dict[str, Any]) -> None:
    boundary, entra = make()
    entra.reply(httpx.Response(200, json=body))
    with pytest.raises(TransientError) as caught:
        await boundary.request_device_code()
    assert caught.value.code == "parse"


async def test_device_code_errors(make: Factory) -> None:
    boundary, entra = make()
    entra.reply(oauth_error(400, "invalid_client", (7000215,)))
    with pytest.raises(ConfigurationError):
        await boundary.request_device_code()


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (oauth_error(400, "authorization_pending", (70016,)), PollStatus.PENDING),
        (oauth_error(400, "slow_down"), PollStatus.SLOW_DOWN),
    ],
)
async def test_poll_statuses(make: Factory, reply: httpx.Response, outcome: PollStatus) -> None:
    boundary, entra = make()
    entra.reply(reply)
    assert await boundary.poll_device_code("dc-0123456789abcdef", budget=5) is outcome


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (oauth_error(400, "authorization_declined"), AuthenticationError),
        (oauth_error(400, "expired_token", (70019,)), AuthenticationError),
        (oauth_error(400, "bad_verification_code", (70018,)), AuthenticationError),
        (oauth_error(400, "invalid_grant", (70000,)), AuthenticationError),
        (oauth_error(400, "invalid_grant", (50196,)), RateLimitError),
        (html(502), TransientError),
        (httpx.Response(400, text="garbage"), TransientError),
    ],
)
async def test_poll_failures(make: Factory, reply: httpx.Response, kind: type) -> None:
    boundary, entra = make()
    entra.reply(reply)
    with pytest.raises(kind):
        await boundary.poll_device_code("dc-0123456789abcdef")


async def test_poll_success_and_secret_scrubbing(make: Factory) -> None:
    boundary, entra = make()
    device_code = secret("dc")
    entra.reply(
        oauth_error(400, "bad_verification_code", text=f"Code {device_code} unknown."),
        token_ok(),
    )
    with pytest.raises(AuthenticationError) as caught:
        await boundary.poll_device_code(device_code)
    assert device_code not in str(caught.value)
    grant = await boundary.poll_device_code(device_code)
    assert grant.refresh_token is not None


async def test_a_whitespace_only_description_is_still_classified(make: Factory) -> None:
    reply = httpx.Response(400, json={"error": "invalid_grant", "error_description": " \r\n"})
    error = await refresh_error(make, reply)
    assert type(error) is AuthenticationError
    assert error.code == "invalid_grant"
