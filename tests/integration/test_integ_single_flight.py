"""Single flight over loopback: 100 coroutines, 4 processes, leader failures and cool-downs."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integ_helpers import USER, Clock, MakeAuth, MakeEngine, make_auth, seed
from integ_worker import Result, refresh_worker

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import (
    AuthenticationError,
    RateLimitError,
    TransientError,
)
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import Sandbox

WORKERS = 4


async def test_hundred_coroutines_one_post(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager, clock: Clock
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    async with asyncio.timeout(10):
        tokens = await asyncio.gather(*(auth.get_valid_token(USER) for _ in range(100)))
    assert len(set(tokens)) == 1
    assert sandbox.post_count("token") == 1
    saved = await store.get_token(USER)
    assert saved is not None
    assert saved["access_token"] == tokens[0]


async def test_hundred_chat_calls_share_one_refresh(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    engine_factory: MakeEngine,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    engine = engine_factory(auth)
    async with asyncio.timeout(15):
        results = await asyncio.gather(*(engine.reason(AITask(f"call {i}")) for i in range(100)))
    assert [r.response_text for r in results] == [f"call {i}" for i in range(100)]
    assert sandbox.post_count("token") == 1
    assert sandbox.post_count("chat") == 100
    assert len({r.headers["authorization"] for r in sandbox.requests("chat")}) == 1


async def test_hundred_forced_refreshes_one_post(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth: EntraIDAuthManager
) -> None:
    body = await seed(sandbox, store)
    rejected = str(body["access_token"])
    async with asyncio.timeout(10):
        tokens = await asyncio.gather(
            *(auth.force_refresh(USER, rejected_token=rejected) for _ in range(100))
        )
    assert len(set(tokens)) == 1
    assert tokens[0] != rejected
    assert sandbox.post_count("token") == 1


async def test_leader_relogin_failure_is_shared_without_a_storm(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth: EntraIDAuthManager,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    sandbox.script("token", ["rt_revoked"])
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(
            *(auth.get_valid_token(USER) for _ in range(100)), return_exceptions=True
        )
    assert all(type(o) is AuthenticationError for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1  # one refresh, one error, shared
    assert sandbox.post_count("token") == 1
    # Another "process" (its own manager and store connection) honours the recorded cool-down.
    with SQLiteEncryptedTokenStore(store_path, encryption_key=store_key, clock=clock) as other:
        async with asyncio.timeout(5):
            for _ in range(3):
                with pytest.raises(AuthenticationError) as caught:
                    await auth_factory(st=other).get_valid_token(USER)
                assert caught.value.code == "cooldown"
    assert sandbox.post_count("token") == 1
    (info,) = await store.list_tokens()
    assert info.relogin_required
    assert info.cooldown_until is not None
    assert info.cooldown_until > clock() + 3600


async def test_leader_transient_failure_is_shared_and_cooled_down(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth: EntraIDAuthManager,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    sandbox.script("token", ["500"] * 6)
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(
            *(auth.get_valid_token(USER) for _ in range(100)), return_exceptions=True
        )
    assert all(type(o) is TransientError for o in outcomes)
    assert sandbox.post_count("token") == 6  # one retry sequence, not 100
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    # Within the cool-down no process posts; the error is the same class with retry_after.
    other = auth_factory()
    with pytest.raises(TransientError) as caught:
        async with asyncio.timeout(5):
            await other.get_valid_token(USER)
    assert type(caught.value) is TransientError
    assert caught.value.code == "cooldown"
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 5
    assert sandbox.post_count("token") == 6
    clock.advance(5.01)  # cool-down over: the next call refreshes
    async with asyncio.timeout(5):
        token = await other.get_valid_token(USER)
    assert sandbox.post_count("token") == 7
    assert await auth.get_valid_token(USER) == token  # re-read from the store: no POST
    assert sandbox.post_count("token") == 7


async def test_throttled_leader_cool_down_carries_the_server_wait(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    sandbox.script("token", ["token_429:40"] * 2)
    auth = auth_factory(max_retries=1)
    with pytest.raises(RateLimitError):
        async with asyncio.timeout(5):
            await auth.get_valid_token(USER)
    assert sandbox.post_count("token") == 2
    with pytest.raises(RateLimitError) as caught:
        async with asyncio.timeout(5):
            await auth_factory().get_valid_token(USER)
    assert caught.value.code == "cooldown"
    assert caught.value.retry_after == pytest.approx(40, abs=1)
    assert sandbox.post_count("token") == 2


class _SignallingStore(SQLiteEncryptedTokenStore):
    """Process A's store: tells the test when A released its refresh lease."""

    released: asyncio.Event

    async def release_lease(self, user_id: str, *, owner: str) -> None:
        await super().release_lease(user_id, owner=owner)
        self.released.set()


class _DescheduledStore(SQLiteEncryptedTokenStore):
    """Process B's store: its first cool-down read returns only after A released the lease,
    as when B is descheduled between reading (no cool-down yet) and acting on the answer."""

    released: asyncio.Event
    held = False

    async def get_cooldown(self, user_id: str, *, now: float) -> Any:
        value = await super().get_cooldown(user_id, now=now)
        if not self.held:
            self.held = True
            await self.released.wait()
        return value


async def test_cooldown_is_rechecked_under_the_lease(
    sandbox: Sandbox,
    store: SQLiteEncryptedTokenStore,
    store_path: Path,
    store_key: str,
    auth_factory: MakeAuth,
    clock: Clock,
) -> None:
    """Regression: a process whose cool-down read went stale while the leader failed must
    re-check the cool-down once it holds the lease, and not post again."""
    await seed(sandbox, store, expires_at=clock() - 1)
    sandbox.script("token", ["rt_revoked:delay_ms=300"])
    released = asyncio.Event()
    store_a = _SignallingStore(store_path, encryption_key=store_key, clock=clock)
    store_b = _DescheduledStore(store_path, encryption_key=store_key, clock=clock)
    store_a.released = store_b.released = released
    try:
        a, b = auth_factory(st=store_a), auth_factory(st=store_b)
        async with asyncio.timeout(10):
            leader = asyncio.create_task(a.get_valid_token(USER))
            while sandbox.post_count("token") == 0:  # A holds the lease, its POST is in flight
                await asyncio.sleep(0.005)
            follower = asyncio.create_task(b.get_valid_token(USER))
            outcomes = await asyncio.gather(leader, follower, return_exceptions=True)
    finally:
        store_a.close()
        store_b.close()
    assert isinstance(outcomes[0], AuthenticationError)
    assert sandbox.post_count("token") == 1, "B posted despite the recorded cool-down"
    assert isinstance(outcomes[1], AuthenticationError)


async def test_a_crashed_holders_lease_is_taken_over_after_its_ttl(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    start = clock()
    assert await store.try_acquire_lease(USER, owner="crashed-process", ttl=3.0, now=start)
    auth = auth_factory(lease_poll_interval=0.25)
    async with asyncio.timeout(10):
        token = await auth.get_valid_token(USER)
    assert token
    assert sandbox.post_count("token") == 1
    assert clock() >= start + 3.0  # it waited for the lease to expire, then refreshed


async def test_waiting_for_a_stuck_lease_is_bounded_by_the_deadline(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    await seed(sandbox, store, expires_at=clock() - 1)
    assert await store.try_acquire_lease(USER, owner="stuck-process", ttl=1000.0, now=clock())
    auth = auth_factory(lease_poll_interval=1.0, refresh_deadline=20.0)
    with pytest.raises(TransientError) as caught:
        async with asyncio.timeout(10):
            await auth.get_valid_token(USER)
    assert caught.value.code == "lease_timeout"
    assert sandbox.post_count("token") == 0


async def test_a_valid_token_is_used_while_another_process_refreshes(
    sandbox: Sandbox, store: SQLiteEncryptedTokenStore, auth_factory: MakeAuth, clock: Clock
) -> None:
    body = await seed(sandbox, store, expires_at=clock() + 100)  # valid, inside the buffer
    assert await store.try_acquire_lease(USER, owner="busy-process", ttl=60.0, now=clock())
    async with asyncio.timeout(5):
        assert await auth_factory().get_valid_token(USER) == body["access_token"]
    assert sandbox.post_count("token") == 0
    assert clock.sleeps == []


# -- across processes -----------------------------------------------------------------------------


@pytest.fixture
def real_sandbox() -> Iterator[Sandbox]:
    """A sandbox on the real clock: the child processes use the real clock too."""
    with Sandbox(token_lifetime=3600) as sb:
        yield sb


class Workers:
    """Four spawned processes sharing the store file and key (see ``integ_worker``)."""

    def __init__(self, sb: Sandbox, db_path: Path, key: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.round_two = ctx.Event()
        self.results: Any = ctx.Queue()
        target = {
            "tenant_id": sb.tenant_id,
            "client_id": sb.client_id,
            "authority_host": sb.authority_host,
        }
        # Kept on self: a spawn child unpickles it after start(), so it must outlive that.
        self.barrier = ctx.Barrier(WORKERS)
        self.processes = [
            ctx.Process(
                target=refresh_worker,
                args=(str(db_path), key, target, self.barrier, self.round_two, self.results),
            )
            for _ in range(WORKERS)
        ]
        for process in self.processes:
            process.start()

    def collect(self) -> list[Result]:
        """Wait for one result from every process (blocking: run it in a thread)."""
        return [self.results.get(timeout=60) for _ in self.processes]

    def stop(self) -> list[int | None]:
        """Let the processes end (releasing round two), join them, return their exit codes."""
        self.round_two.set()
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        codes = [p.exitcode for p in self.processes]
        for process in self.processes:
            process.close()
        self.results.close()
        self.results.join_thread()
        return codes


@pytest.mark.slow
async def test_four_processes_one_post_then_a_shared_cool_down(
    real_sandbox: Sandbox, store: SQLiteEncryptedTokenStore, store_path: Path, store_key: str
) -> None:
    old = await seed(real_sandbox, store, expires_at=time.time() - 60)
    workers = Workers(real_sandbox, store_path, store_key)
    try:
        # Round one: four processes, an expired token, one POST, one token for all.
        first = await asyncio.to_thread(workers.collect)
        assert [r[2] for r in first] == ["ok"] * WORKERS, first
        tokens = {r[3] for r in first}
        assert len(tokens) == 1
        assert len({r[0] for r in first}) == WORKERS  # really four processes
        assert real_sandbox.post_count("token") == 1
        saved = await store.get_token(USER)
        assert saved is not None
        assert saved["access_token"] in tokens
        assert saved["refresh_token"] != old["refresh_token"]
        # This process's forced refresh fails (re-login): a cool-down is recorded in the store.
        real_sandbox.script("token", ["rt_revoked"])
        parent = make_auth(real_sandbox, store)
        try:
            with pytest.raises(AuthenticationError):
                async with asyncio.timeout(5):
                    await parent.force_refresh(USER)
        finally:
            await parent.close()
        assert real_sandbox.post_count("token") == 2
        # Round two: every process honours it: the same error class, and no POST at all.
        workers.round_two.set()
        second = await asyncio.to_thread(workers.collect)
    finally:
        codes = await asyncio.to_thread(workers.stop)
    assert codes == [0] * WORKERS
    assert [r[2] for r in second] == ["AuthenticationError"] * WORKERS, second
    assert real_sandbox.post_count("token") == 2
    for _, _, _, detail, messages in first + second:
        assert "locked" not in detail.lower()
        assert not [m for m in messages if "database is locked" in m.lower()]
