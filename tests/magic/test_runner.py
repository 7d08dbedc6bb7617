"""The background loop thread: submit, results, errors, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from saga_magic.magic.runner import Job, LoopThread


@pytest.fixture
def loop_thread() -> LoopThread:
    runner = LoopThread(name="test-loop")
    yield runner
    runner.stop()
    assert not runner.running


def test_runs_coroutines_on_its_own_thread(loop_thread: LoopThread) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert not loop_thread.running
    assert loop_thread.run(where()) == "test-loop"
    assert loop_thread.running
    assert loop_thread.run(where()) == "test-loop"  # the same thread, started once


def test_errors_propagate(loop_thread: LoopThread) -> None:
    async def fail() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        loop_thread.run(fail())


def test_timeout_cancels(loop_thread: LoopThread) -> None:
    seen: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        loop_thread.run(slow(), timeout=0.15)
    assert seen == ["cancelled"]


def test_cancel_waits_for_cleanup(loop_thread: LoopThread) -> None:
    started = threading.Event()
    cleaned = threading.Event()

    async def job() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)  # cleanup that needs the loop
            cleaned.set()

    handle = loop_thread.submit(job())
    assert started.wait(2)
    assert not handle.done()
    assert handle.cancel(wait=2.0)
    assert cleaned.is_set()
    assert handle.done()
    assert handle.cancel()  # idempotent once done
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result()


def test_interrupt_while_waiting_cancels_the_job(
    loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled = threading.Event()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    real_wait = Job.wait

    def wait(self: Job[Any], timeout: float | None = None) -> bool:
        if started.is_set():
            raise KeyboardInterrupt  # what a Ctrl-C does to the waiting kernel thread
        return real_wait(self, timeout)

    monkeypatch.setattr(Job, "wait", wait)
    with pytest.raises(KeyboardInterrupt):
        loop_thread.run(forever())
    monkeypatch.setattr(Job, "wait", real_wait)
    assert cancelled.is_set()

    async def answer() -> int:
        return 42

    assert loop_thread.run(answer()) == 42


def test_stop_cancels_pending_work_and_is_idempotent() -> None:
    runner = LoopThread()
    runner.stop()  # never started: nothing to do

    async def forever() -> None:
        await asyncio.Event().wait()

    job = runner.submit(forever())
    runner.stop()
    assert job.done()
    assert not runner.running
    runner.stop()
    coro = forever()
    with pytest.raises(RuntimeError):  # the loop is closed: nothing can be scheduled on it
        Job(job._loop, coro)
    assert job.cancel()


def test_cancel_after_the_loop_closed() -> None:
    async def never() -> None:  # pragma: no cover - never scheduled
        pass

    loop = asyncio.new_event_loop()
    coro = never()
    job = Job(loop, coro)  # queued on a loop that never runs
    loop.close()
    assert job.cancel(wait=0.01) is False
    coro.close()


def test_a_second_interrupt_stops_the_cleanup_wait(loop_thread: LoopThread) -> None:
    started = threading.Event()
    release = threading.Event()

    async def slow_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(release.wait, 5)  # a cleanup that takes a while

    handle = loop_thread.submit(slow_cleanup())
    assert started.wait(2)

    class Impatient:
        """A finished-event whose wait is cut short by Ctrl-C (the second interrupt)."""

        def __init__(self, real: threading.Event) -> None:
            self.real = real

        def wait(self, timeout: float | None = None) -> bool:
            raise KeyboardInterrupt

        def is_set(self) -> bool:
            return self.real.is_set()

    real = handle._finished
    handle._finished = Impatient(real)  # type: ignore[assignment]
    assert handle.cancel(wait=5.0) is False  # no KeyboardInterrupt escapes from the cleanup
    handle._finished = real
    release.set()
    assert handle.wait(5)
    with pytest.raises(concurrent.futures.CancelledError):
        handle.result()
