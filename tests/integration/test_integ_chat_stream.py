"""Chat streams (SSE) through the engine over loopback: every stream fault of PROTOCOLS 4.2.

Before the first delta a failure is retried like a non-streaming call; after it, it is raised
with the partial text attached and never retried. Every read runs under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integ_helpers import (
    CALL_LIMIT,
    PROMPT,
    Clock,
    MakeEngine,
    stream_within,
)

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import RequestTimeoutError, TransientError
from saga_magic.core.events import Event
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox


@pytest.mark.parametrize(
    ("fault", "min_wait"),
    [
        ("429_both", 1.5),
        ("429_ms_only", 1.5),
        ("429_seconds_only", 2.0),
        ("429_http_date", 3.0),
        ("429_no_header", 3.0),
        ("429_capacity", 6.0),
        ("503_html", 1.0),
        ("504_text", 1.0),
        ("408_timeout", 1.0),
        ("reset", 1.0),
    ],
)
async def test_streams_are_retried_before_the_first_delta(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    clock: Clock,
    fault: str,
    min_wait: float,
) -> None:
    sandbox.script("chat", [fault])
    assert "".join(await stream_within(engine)) == PROMPT
    (wait,) = clock.sleeps
    assert wait >= min_wait
    assert sandbox.post_count("chat") == 2


async def test_stream_options_rejected_is_adapted(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine
) -> None:
    sandbox.script("chat", ["stream_options_rejected"])
    assert "".join(await stream_within(engine)) == PROMPT
    assert engine.adaptations.omit_stream_options
    first, second = sandbox.requests("chat")
    assert (first.status, second.status) == (400, 200)
    assert isinstance(second.body, dict)
    assert "stream_options" not in second.body


async def test_401_on_a_stream_refreshes_once(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine
) -> None:
    sandbox.expire_access_tokens()
    assert "".join(await stream_within(engine)) == PROMPT
    assert sandbox.post_count("token") == 1


async def test_slow_stream_headers_time_out_and_are_retried(
    sandbox: Sandbox, seeded: dict[str, Any], quick: CopilotReasoningEngine
) -> None:
    sandbox.script("chat", ["slow_headers:1.0"])
    assert "".join(await stream_within(quick)) == PROMPT
    assert sandbox.post_count("chat") == 2


# -- stream faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "text", "finish"),
    [
        ("stream_azure", PROMPT, "stop"),
        ("stream_comments", PROMPT, "stop"),
        ("done_no_finish", PROMPT, None),
        ("stream_async_filter_block", "hello sandbox", "content_filter"),
        ("stream_async_filter_block:k=0", "", "content_filter"),
    ],
)
async def test_stream_variants_that_end_well(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    engine: CopilotReasoningEngine,
    fault: str,
    text: str,
    finish: str | None,
) -> None:
    sandbox.script("chat", [fault])
    async with asyncio.timeout(CALL_LIMIT):
        stream = engine.stream(AITask(PROMPT))
        deltas = [delta async for delta in stream]
    assert "".join(deltas) == text
    assert stream.result is not None
    assert stream.result.finish_reason == finish
    assert stream.result.response_text == text
    assert sandbox.post_count("chat") == 1


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ("stream_error_event", TransientError, "server_error"),
        ("stream_bad_json:k=2", TransientError, "parse_error"),
        ("stall_stream:k=2", RequestTimeoutError, "idle_timeout"),
        ("reset_mid_stream:k=2", TransientError, None),
        ("close_no_done:k=2", TransientError, "truncated"),
    ],
)
async def test_stream_failures_after_a_delta_keep_the_partial_text(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    quick: CopilotReasoningEngine,
    events: list[Event],
    fault: str,
    error: type[TransientError],
    code: str | None,
) -> None:
    sandbox.script("chat", [fault])
    deltas: list[str] = []
    stream = quick.stream(AITask(PROMPT))

    async def read() -> None:
        async with asyncio.timeout(CALL_LIMIT):
            async for delta in stream:
                deltas.append(delta)

    with pytest.raises(error) as caught:
        await read()
    assert type(caught.value) is error
    assert "".join(deltas) == "hello sandbox"
    assert caught.value.partial_text == "hello sandbox"
    if code is not None:
        assert caught.value.code == code
    assert sandbox.post_count("chat") == 1  # never retried once text was shown
    assert stream.result is None
    failed = next(e for e in events if e.event == "copilot_error")
    assert failed.context["partial_chars"] == len("hello sandbox")


@pytest.mark.parametrize(
    "fault",
    [
        "stream_error_event:k=0",
        "stream_bad_json:k=0",
        "stall_stream:k=0",
        "reset_mid_stream:k=0",
        "close_no_done:k=0",
        "malformed_json",
        "html_200",
    ],
)
async def test_stream_failures_before_any_delta_are_retried(
    sandbox: Sandbox,
    seeded: dict[str, Any],
    quick: CopilotReasoningEngine,
    clock: Clock,
    fault: str,
) -> None:
    sandbox.script("chat", [fault])
    assert "".join(await stream_within(quick)) == PROMPT
    assert sandbox.post_count("chat") == 2
    assert clock.sleeps == [1.0]


async def test_stopping_a_stream_early_closes_it(
    sandbox: Sandbox, seeded: dict[str, Any], engine: CopilotReasoningEngine
) -> None:
    async with asyncio.timeout(CALL_LIMIT):
        stream = engine.stream(AITask("one two three four five six"))
        async with stream:
            async for _delta in stream:
                break
        assert stream.result is None
        # The engine still works afterwards (the connection went back or was dropped).
        assert (await engine.reason(AITask("after"))).response_text == "after"


async def test_cancelling_a_stream_mid_answer(
    sandbox: Sandbox, seeded: dict[str, Any], engine_factory: MakeEngine, auth: EntraIDAuthManager
) -> None:
    engine = engine_factory(auth, idle_timeout=30.0)
    sandbox.script("chat", ["stall_stream:k=1"])
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _delta in engine.stream(AITask(PROMPT)):
            got_one.set()

    async with asyncio.timeout(CALL_LIMIT):
        task = asyncio.create_task(consume())
        await got_one.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await engine.reason(AITask("still fine"))).response_text == "still fine"


async def test_old_api_version_rejects_stream_options_and_is_adapted(
    sandbox: Sandbox, seeded: dict[str, Any], auth: EntraIDAuthManager, engine_factory: MakeEngine
) -> None:
    url = sandbox.chat_url().replace("2024-10-21", "2024-06-01")
    assert "2024-06-01" in url
    engine = engine_factory(auth, endpoint=url)
    assert "".join(await stream_within(engine)) == PROMPT
    assert "".join(await stream_within(engine)) == PROMPT  # remembered: no second 400
    assert [r.status for r in sandbox.requests("chat")] == [400, 200, 200]
