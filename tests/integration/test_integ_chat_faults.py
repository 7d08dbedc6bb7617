"""Every chat fault of PROTOCOLS 4.2 through the engine, over loopback, table-driven (part 1:
non-streaming calls, budgets, adaptations, 401s; the stream faults are in
``test_integ_chat_stream``).

Each call runs under ``asyncio.timeout``: a fault must end in the documented exception or
result, never in a hang. Waits are fake (shared fake clock); only real-socket faults take real
time, in a few hundred milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from integ_helpers import (
    PROMPT,
    USER,
    Clock,
    MakeAuth,
    MakeEngine,
    reason_within,
    seed,
    stream_within,
)

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TransientError,
)
from saga_magic.core.events import Event
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox

# -- retried, then answered -----------------------------------------------------------------------


@dataclass(frozen=True)
class Retried:
    fault: str
    min_wait: float
    """The wait before the second attempt is at least this (the server's, or our 1 s)."""
    max_wait: float | None = None


RETRIED = [
    Retried("429_both", 1.5, 1.99),  # retry-after-ms (1.5 s) wins over retry-after (2 s)
    Retried("429_ms_only", 1.5),
    Retried("429_seconds_only", 2.0),
    Retried("429_http_date", 3.0),
    Retried("429_no_header", 3.0),
    Retried("429_capacity", 6.0),
    Retried("429:x_ms_retry_after_ms=2500", 2.5),
    Retried("429:retry_after=1,retry_after_ms=4000", 4.0),
    Retried("429_garbage", 1.0, 1.0),
    Retried("429_garbage:nan", 1.0, 1.0),
    Retried("429_garbage:-5", 1.0, 1.0),
    Retried("429_garbage:1e100", 1.0, 1.0),
    *(
        Retried(f"{status}_{body}", 1.0, 1.0)
        for status in (500, 502, 503, 504)
        for body in ("json", "html", "text", "empty")
    ),
    Retried("503_json:retry_after=4", 4.0),
    Retried("408_timeout", 1.0, 1.0),
    Retried("reset", 1.0, 1.0),
    Retried("reset_mid_body", 1.0, 1.0),
    Retried("malformed_json", 1.0, 1.0),
    Retried("html_200", 1.0, 1.0),
    Retried("missing_choices", 1.0, 1.0),
    Retried("empty_choices", 1.0, 1.0),
    Retried("stream_azure", 1.0, 1.0),  # SSE to a non-streaming call: a parse glitch
]


@pytest.mark.parametrize("case", RETRIED, ids=[c.fault for c in RETRIED])
async def test_retried_then_answered(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    clock: Clock,
    events: list[Event],
    case: Retried,
) -> None:
    sandbox.script("chat", [case.fault])
    result = await reason_within(engine)
    assert result.response_text == PROMPT
    assert result.attempts == 2
    assert [r.outcome != "ok" for r in sandbox.requests("chat")] == [True, False]
    (wait,) = clock.sleeps
    assert wait >= case.min_wait
    if case.max_wait is not None:
        assert wait <= case.max_wait
    retry = next(e for e in events if e.event == "copilot_retry")
    assert retry.context["attempt"] == 1
    assert retry.context["wait_s"] == pytest.approx(wait)
    assert retry.context["next_attempt_at"] == pytest.approx(clock())
    assert sandbox.post_count("token") == 0


# -- permanent failures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fails:
    fault: str
    error: type[ArcSagaException]
    status: int | None
    code: str | None = None
    says: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


PERMANENT = [
    Fails("400_context", InputValidationError, 400, "context_length_exceeded", "too long"),
    Fails("400_filter", InputValidationError, 400, "content_filter", "violence"),
    Fails("400_filter:category=hate", InputValidationError, 400, "content_filter", "hate"),
    Fails("413", InputValidationError, 413),
    Fails("404_deployment", ConfigurationError, 404, "DeploymentNotFound"),
    Fails("404_path", ConfigurationError, 404, "404"),
    Fails("404_apim", ConfigurationError, 404),
    Fails("permission_denied", PermissionDeniedError, 401, "PermissionDenied"),
    Fails("permission_denied:403", PermissionDeniedError, 403, "PermissionDenied"),
    Fails("403", PermissionDeniedError, 403),
    Fails("429_quota", RateLimitError, 429, says="86400", attrs={"retry_after": 86400.0}),
]


@pytest.mark.parametrize("case", PERMANENT, ids=[c.fault for c in PERMANENT])
@pytest.mark.parametrize("streaming", [False, True], ids=["reason", "stream"])
async def test_permanent_failures_are_not_retried(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    clock: Clock,
    events: list[Event],
    case: Fails,
    streaming: bool,
) -> None:
    sandbox.script("chat", [case.fault])
    with pytest.raises(case.error) as caught:
        await (stream_within(engine) if streaming else reason_within(engine))
    error = caught.value
    assert type(error) is case.error
    assert error.status == case.status
    if case.code is not None:
        assert error.code == case.code
    if case.says is not None:
        assert case.says in error.message
    for name, value in case.attrs.items():
        assert getattr(error, name) == value
    assert error.request_id  # apim-request-id, on every answer
    assert error.correlation_id
    assert error.attempts == 1
    assert clock.sleeps == []  # no wait at all, not even for the quota
    assert sandbox.post_count("chat") == 1
    assert sandbox.post_count("token") == 0
    failed = [e for e in events if e.event in ("copilot_error", "copilot_auth_failed")]
    assert [e.context["error"] for e in failed] == [case.error.__name__]


# -- exhausted budgets ----------------------------------------------------------------------------

EXHAUSTED: list[tuple[str, type[ArcSagaException], str | None]] = [
    ("500_json", TransientError, None),
    ("503_html", TransientError, None),
    ("502_empty", TransientError, None),
    ("504_text", RequestTimeoutError, None),
    ("408_timeout", RequestTimeoutError, None),
    ("429_seconds_only", RateLimitError, None),
    ("reset", TransientError, "connection"),
]


@pytest.mark.parametrize(("fault", "error", "code"), EXHAUSTED, ids=[e[0] for e in EXHAUSTED])
async def test_exhausted_budget(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    clock: Clock,
    fault: str,
    error: type[ArcSagaException],
    code: str | None,
) -> None:
    sandbox.script("chat", [fault] * 6)
    with pytest.raises(error) as caught:
        await reason_within(engine)
    assert type(caught.value) is error
    assert caught.value.attempts == 6
    if code is not None:
        assert caught.value.code == code
    assert sandbox.post_count("chat") == 6
    assert len(clock.sleeps) == 5
    assert all(w >= s for w, s in zip(clock.sleeps, [1, 2, 4, 8, 16], strict=True))


async def test_a_malformed_answer_is_retried_once_only(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    events: list[Event],
) -> None:
    sandbox.script("chat", ["malformed_json", "html_200", "ok"])
    with pytest.raises(TransientError) as caught:
        await reason_within(engine)
    assert caught.value.code == "parse_error"
    assert caught.value.attempts == 2
    assert len(caught.value.message) < 250  # a short preview of the page at most
    assert "Sign in to continue" not in caught.value.message
    assert sandbox.post_count("chat") == 2
    parse = [e for e in events if e.event == "copilot_parse_error"]
    assert [e.context["will_retry"] for e in parse] == [True, False]


async def test_the_quota_wait_fails_fast_even_with_retries_left(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, clock: Clock
) -> None:
    sandbox.script("chat", ["503_json", "429_quota"])
    with pytest.raises(RateLimitError) as caught:
        await reason_within(engine)
    assert caught.value.retry_after == 86400
    assert clock.sleeps == [1.0]  # the 503's backoff only
    assert "quota" in caught.value.message


# -- answers that are results ---------------------------------------------------------------------


async def test_null_content_is_an_empty_result_with_a_warning(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, events: list[Event]
) -> None:
    sandbox.script("chat", ["null_content"])
    result = await reason_within(engine)
    assert result.response_text == ""
    assert result.finish_reason == "stop"
    assert "copilot_empty_response" in [e.event for e in events]


async def test_filtered_output_is_a_result(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, events: list[Event]
) -> None:
    sandbox.script("chat", ["filtered_output"])
    result = await reason_within(engine)
    assert result.finish_reason == "content_filter"
    assert result.response_text == ""
    complete = next(e for e in events if e.event == "copilot_request_complete")
    assert complete.context["filtered"] == ["violence"]


@pytest.mark.parametrize("fault", ["no_usage", "filter_down", "ok"])
async def test_variant_answers_are_results(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, fault: str
) -> None:
    sandbox.script("chat", [fault])
    result = await reason_within(engine)
    assert result.response_text == PROMPT
    assert result.attempts == 1
    if fault == "no_usage":
        assert result.usage.total_tokens == 0
    else:
        assert result.usage.total_tokens == 6


async def test_length_is_a_result(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine
) -> None:
    result = await reason_within(engine, AITask(PROMPT, max_tokens=1))
    assert (result.response_text, result.finish_reason) == ("hello", "length")


# -- adaptations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "task", "sent", "dropped"),
    [
        ("400_unsupported", AITask(PROMPT, max_tokens=9), "max_completion_tokens", "max_tokens"),
        (
            "400_unsupported:param=temperature",
            AITask(PROMPT, temperature=0.3),
            None,
            "temperature",
        ),
        ("reasoning", AITask(PROMPT, max_tokens=40), "max_completion_tokens", "max_tokens"),
    ],
)
async def test_parameter_adaptations(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    clock: Clock,
    fault: str,
    task: AITask,
    sent: str | None,
    dropped: str,
) -> None:
    sandbox.script("chat", [fault])
    result = await reason_within(engine, task)
    assert result.response_text == PROMPT
    first, second = sandbox.requests("chat")
    assert first.status == 400
    assert second.status == 200
    assert isinstance(second.body, dict)
    assert dropped not in second.body
    if sent is not None:
        assert sent in second.body
    assert clock.sleeps == []  # outside the retry budget, no wait


# -- 401: one forced refresh ----------------------------------------------------------------------


async def test_401_after_expire_token_after_refreshes_once(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, events: list[Event]
) -> None:
    sandbox.script("chat", ["expire_token_after:1"])
    first = await reason_within(engine)  # the token serves this one request...
    second = await reason_within(engine)  # ...then 401 -> forced refresh -> resend
    assert first.response_text == second.response_text == PROMPT
    assert sandbox.post_count("token") == 1
    assert [r.status for r in sandbox.requests("chat")] == [200, 401, 200]
    tokens = [r.headers["authorization"] for r in sandbox.requests("chat")]
    assert tokens[0] == tokens[1] != tokens[2]
    assert second.attempts == 2
    retry = next(e for e in events if e.event == "copilot_retry")
    assert retry.context["reason"] == "token_rejected"


async def test_401_twice_is_an_authentication_error(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine, events: list[Event]
) -> None:
    sandbox.script("chat", ["auth_gateway_401", "auth_gateway_401"])
    with pytest.raises(AuthenticationError) as caught:
        await reason_within(engine)
    assert type(caught.value) is AuthenticationError
    assert caught.value.status == 401
    assert sandbox.post_count("token") == 1  # one refresh, not a loop
    assert sandbox.post_count("chat") == 2
    failed = next(e for e in events if e.event == "copilot_auth_failed")
    assert failed.context["token_refreshed"] is True


async def test_401_whose_refresh_needs_relogin(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine
) -> None:
    sandbox.script("chat", ["auth_gateway_401"])
    sandbox.script("token", ["rt_revoked"])
    with pytest.raises(AuthenticationError) as caught:
        await reason_within(engine)
    assert caught.value.code == "invalid_grant"
    assert sandbox.post_count("chat") == 1


async def test_no_stored_token_is_an_authentication_error(
    sandbox: Sandbox, engine: CopilotReasoningEngine
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await reason_within(engine)
    assert "login" in (caught.value.hint or "")
    assert sandbox.post_count("chat") == 0


# -- real-socket timing faults --------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["slow_headers:1.0", "slow_body:1.0"])
async def test_slow_answers_time_out_and_are_retried(
    sandbox: Sandbox, seeded: dict[str, Any], quick: CopilotReasoningEngine, fault: str
) -> None:
    sandbox.script("chat", [fault])
    result = await reason_within(quick)
    assert result.response_text == PROMPT
    assert result.attempts == 2


async def test_slow_answers_end_as_a_timeout(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine_factory: MakeEngine,
    auth: EntraIDAuthManager,
) -> None:
    engine = engine_factory(auth, timeout=0.15, max_retries=1)
    sandbox.script("chat", ["slow_headers:0.5", "slow_body:0.5"])
    with pytest.raises(RequestTimeoutError) as caught:
        await reason_within(engine)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.attempts == 2


async def test_faults_on_one_deployment_leave_the_other_alone(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
) -> None:
    sandbox.script("chat", ["404_deployment"], deployment="o4-mini")
    o4 = engine_factory(auth, endpoint=sandbox.chat_url("o4-mini"))
    gpt = engine_factory(auth)
    with pytest.raises(ConfigurationError):
        await reason_within(o4)
    assert (await reason_within(gpt)).response_text == PROMPT


async def test_the_engine_deadline_bounds_retries(
    sandbox: Sandbox, seeded: dict[str, Any], engine_factory: MakeEngine, auth_factory: MakeAuth
) -> None:
    engine = engine_factory(auth_factory(), deadline=10.0)
    sandbox.script("chat", ["500_json"] * 6)
    with pytest.raises(TransientError) as caught:
        await reason_within(engine)
    # waits 1 + 2 + 4 = 7 s; the next (8 s) would pass the 10 s deadline: stop at attempt 4
    assert caught.value.attempts == 4
    assert sandbox.post_count("chat") == 4


async def test_429_http_date_follows_the_sandbox_clock(
    fake_clock: Clock,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    engine_factory: MakeEngine,
) -> None:
    """Regression: the chat HTTP date is written with the sandbox's clock, not the wall clock."""
    fake_clock.now = 1_700_000_000.0
    with Sandbox(token_lifetime=3600, clock=fake_clock) as sb:
        await seed(sb, store)
        engine = engine_factory(auth_factory(sb), sb)
        sb.script("chat", ["429_http_date:4"])
        assert (await reason_within(engine)).response_text == PROMPT
    (wait,) = fake_clock.sleeps
    assert wait >= 4.0


async def test_an_unreachable_service_ends_in_an_error_not_a_hang(
    clock: Clock,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    engine_factory: MakeEngine,
) -> None:
    with Sandbox(token_lifetime=3600, clock=clock) as sb:
        await seed(sb, store, expires_at=clock() - 1)
        auth = auth_factory(sb, max_retries=2)
        engine = engine_factory(auth, sb, max_retries=2)
    # The sandbox is gone: nothing listens on its port any more.
    with pytest.raises(TransientError) as caught:
        await reason_within(engine)
    assert caught.value.code == "connection"
    assert clock.sleeps == [1.0, 2.0]  # the token refresh's retries, then its failure
    # With a valid token in hand the chat call itself retries, then fails the same way.
    await store.save_token(USER, {"access_token": "x" * 40, "expires_at": clock() + 3600})
    clock.sleeps.clear()
    with pytest.raises(TransientError) as chat:
        await reason_within(engine)
    assert chat.value.code == "connection"
    assert chat.value.attempts == 3
    assert clock.sleeps == [1.0, 2.0]
