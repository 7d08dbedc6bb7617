"""End to end over loopback: sandbox-issued tokens in a real store -> engine -> echo answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from integ_helpers import PROMPT, USER, Clock, MakeAuth, MakeEngine, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.config import Settings
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AIProvider, AITask, ChatMessage
from saga_magic.sandbox import Sandbox


async def test_reason_returns_the_echo(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    engine_factory: MakeEngine,
) -> None:
    await seed(sandbox, store, expires_at=None)
    # Their own HTTP clients this time (created and closed by the manager and the engine).
    engine = engine_factory(auth_factory(http_client=None), http_client=None)
    async with asyncio.timeout(5):
        result = await engine.reason(AITask(PROMPT, system_prompt="be brief"))
    assert result.response_text == PROMPT
    assert result.finish_reason == "stop"
    assert result.provider is AIProvider.COPILOT_CHAT
    assert result.usage.prompt_tokens == 5  # "be brief" + three words, counted by whitespace
    assert result.usage.completion_tokens == 3
    assert result.usage.total_tokens == 8
    assert result.request_id
    assert result.model == "gpt-4o-2024-11-20"
    assert result.attempts == 1
    assert sandbox.post_count("token") == 0  # the saved token was fresh
    again = await engine.reason(AITask("again"))  # and the same clients serve again
    assert again.response_text == "again"
    request = sandbox.requests("chat")[0]
    assert isinstance(request.body, dict)
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    assert request.headers["authorization"].startswith("Bearer ")


async def test_history_and_max_tokens_reach_the_wire(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, engine: CopilotReasoningEngine
) -> None:
    await seed(sandbox, store)
    task = AITask(
        "one two three four five",
        max_tokens=2,
        temperature=0.5,
        history=(ChatMessage("user", "earlier"), ChatMessage("assistant", "reply")),
    )
    async with asyncio.timeout(5):
        result = await engine.reason(task)
    assert result.response_text == "one two"
    assert result.finish_reason == "length"
    (request,) = sandbox.requests("chat")
    assert isinstance(request.body, dict)
    assert request.body["max_tokens"] == 2
    assert request.body["temperature"] == 0.5
    assert [m["content"] for m in request.body["messages"]] == [
        "earlier",
        "reply",
        "one two three four five",
    ]


async def test_stream_yields_deltas_and_a_result_with_usage(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, engine: CopilotReasoningEngine
) -> None:
    await seed(sandbox, store)
    deltas: list[str] = []
    async with asyncio.timeout(5):
        stream = engine.stream(AITask(PROMPT))
        async with stream:
            async for delta in stream:
                deltas.append(delta)
    assert len(deltas) == 3
    assert "".join(deltas) == PROMPT
    result = stream.result
    assert result is not None
    assert result.response_text == PROMPT
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens == 3
    assert result.usage.completion_tokens == 3
    assert result.usage.total_tokens == 6
    assert result.request_id
    (request,) = sandbox.requests("chat")
    assert isinstance(request.body, dict)
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("shape", "model"),
    [("deployments", None), ("v1", "gpt-4o"), ("openai", "gpt-4o")],
)
async def test_the_three_endpoint_shapes(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
    shape: str,
    model: str | None,
) -> None:
    await seed(sandbox, store)
    engine = engine_factory(auth, endpoint=sandbox.chat_url(shape=shape), model=model)
    async with asyncio.timeout(5):
        result = await engine.reason(AITask(PROMPT))
        stream = engine.stream(AITask("streamed " + PROMPT))
        text = "".join([delta async for delta in stream])
    assert result.response_text == PROMPT
    assert text == "streamed " + PROMPT
    assert stream.result is not None
    assert stream.result.usage.total_tokens > 0
    requests = sandbox.requests("chat")
    assert [r.status for r in requests] == [200, 200]
    for request in requests:
        assert request.deployment == "gpt-4o"
        assert isinstance(request.body, dict)
        assert request.body.get("model") == model


async def test_reasoning_deployment_adapts_and_reports_reasoning_tokens(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
) -> None:
    await seed(sandbox, store)
    engine = engine_factory(auth, endpoint=sandbox.chat_url("o4-mini"))
    async with asyncio.timeout(5):
        result = await engine.reason(AITask("think about it", max_tokens=40, temperature=0.2))
        again = await engine.reason(AITask("and again", max_tokens=40, temperature=0.2))
    assert result.response_text == "think about it"
    assert result.usage.reasoning_tokens == 16
    assert engine.adaptations.max_completion_tokens
    assert engine.adaptations.omit_temperature
    # 400 max_tokens, 400 temperature, 200; then the adaptations are remembered: one request.
    assert [r.status for r in sandbox.requests("chat")] == [400, 400, 200, 200]
    assert again.attempts == 1


async def test_from_settings_runs_on_the_sandbox_environment(
    sandbox: Sandbox, tmp_path: Path, clock: Clock
) -> None:
    """The README's path: point the environment at the sandbox, build everything from it."""
    home = tmp_path / "home"
    env = {**sandbox.env(), "ARC_SAGA_HOME": str(home), "ARC_SAGA_USER": "someone"}
    settings = Settings.from_env(env)
    # Seed the token through a store opened the same way the product opens it (key file in home).
    with SQLiteEncryptedTokenStore(
        settings.token_store_path, key_path=home / ".token_key", settings=settings
    ) as seeding:
        await seed(sandbox, seeding, user="someone")
    async with httpx.AsyncClient() as client:
        engine = CopilotReasoningEngine.from_settings(settings, http_client=client)
        try:
            async with asyncio.timeout(5):
                result = await engine.reason(AITask(PROMPT))
        finally:
            await engine.close()
        assert not client.is_closed  # the engine never closes a client it was given
    assert result.response_text == PROMPT
    assert (home / ".token_key").stat().st_mode & 0o077 == 0


async def test_two_users_have_separate_tokens(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
) -> None:
    await seed(sandbox, store, user="alice", sandbox_user="alice@contoso.com")
    await seed(sandbox, store, user="bob", sandbox_user="bob@contoso.com")
    alice = engine_factory(auth, user_id="alice")
    bob = engine_factory(auth, user_id="bob")
    async with asyncio.timeout(5):
        answers = await asyncio.gather(alice.reason(AITask("from alice")), bob.reason(AITask("b")))
    assert [a.response_text for a in answers] == ["from alice", "b"]
    tokens = {r.headers["authorization"] for r in sandbox.requests("chat")}
    assert len(tokens) == 2
    assert {i.user_id for i in await auth.token_infos()} == {"alice", "bob"}
    assert USER not in {i.user_id for i in await store.list_tokens()}


async def test_reasoning_deployment_streams_after_adapting(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
) -> None:
    await seed(sandbox, store)
    engine = engine_factory(auth, endpoint=sandbox.chat_url("o4-mini"))
    async with asyncio.timeout(5):
        stream = engine.stream(AITask("stream some thoughts", max_tokens=40, temperature=0.7))
        text = "".join([delta async for delta in stream])
    assert text == "stream some thoughts"
    assert stream.result is not None
    assert stream.result.usage.reasoning_tokens == 16
    assert [r.status for r in sandbox.requests("chat")] == [400, 400, 200]
