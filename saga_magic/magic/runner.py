"""A private asyncio loop on a daemon thread, so the magic works inside a running kernel loop.

ipykernel already runs an asyncio loop in the main thread, so ``asyncio.run()`` fails there and
``loop.run_until_complete`` would re-enter it. The core's coroutines run on this loop instead;
the kernel's thread submits them, waits, and does every display update itself.

A :class:`Job` can be cancelled from the calling thread and waited for: on an interrupt the
coroutine gets ``CancelledError`` on its own loop, cleans up (closes its HTTP stream, releases
its lease) and only then does the cell return. A second interrupt during that short wait stops
the waiting (the cancellation still goes on in the background) instead of escaping as a raw
``KeyboardInterrupt`` from the cleanup.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ["POLL_INTERVAL", "Job", "LoopThread"]

T = TypeVar("T")

POLL_INTERVAL = 0.05
"""Seconds between checks while the calling thread waits: keeps it interruptible, and bounds
the display latency of a ``%%copilot`` cell (which drains its queue at this pace)."""


class Job(Generic[T]):
    """A coroutine running on a :class:`LoopThread`.

    Args:
        loop: The loop to run on (owned by another thread).
        coro: The coroutine.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> None:
        self._loop = loop
        self._task: asyncio.Task[T] | None = None
        self._finished = threading.Event()
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        """Completes when the coroutine has finished (result, exception or cancellation)."""
        try:
            loop.call_soon_threadsafe(self._start, coro)
        except RuntimeError:
            coro.close()
            raise

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.future.cancel()
        elif (error := task.exception()) is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(task.result())
        self._finished.set()

    def _cancel_in_loop(self) -> None:
        if self._task is not None:  # always set: _start was queued before any cancel
            self._task.cancel()

    def done(self) -> bool:
        """Whether the coroutine has finished."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the coroutine has finished.

        Args:
            timeout: Seconds to wait; ``None`` waits for ever.

        Returns:
            Whether it has finished.
        """
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the coroutine's result.

        Args:
            timeout: Seconds to wait; ``None`` waits for ever.

        Returns:
            What the coroutine returned.

        Raises:
            TimeoutError: not finished within ``timeout``.
            concurrent.futures.CancelledError: the job was cancelled.
            Exception: whatever the coroutine raised.
        """
        return self.future.result(timeout)

    def cancel(self, *, wait: float = 2.0) -> bool:
        """Cancel the coroutine on its loop and wait (briefly) until it has cleaned up.

        Args:
            wait: Seconds to wait for the coroutine to finish its cleanup.

        Returns:
            True when the coroutine has finished by the end of the wait; False after ``wait``
            seconds, or when a (second) interrupt cut the wait short.
        """
        if self.future.done():
            return True
        try:
            self._loop.call_soon_threadsafe(self._cancel_in_loop)
        except RuntimeError:  # loop already closed: nothing left to cancel
            return self.future.done()
        # concurrent.futures.wait() is not woken by Future.cancel(): wait on our own event.
        try:
            return self._finished.wait(wait)
        except KeyboardInterrupt:  # Ctrl-C again while cleaning up: stop waiting, quietly
            return False


class LoopThread:
    """An event loop on a daemon thread, started lazily, stopped explicitly.

    Args:
        name: Thread name (shows in debuggers and ``threading.enumerate()``).
    """

    def __init__(self, *, name: str = "saga-magic-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        import asyncio  # lazily: a terminal IPython has not imported it yet (~40 ms)

        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name=self._name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Job[T]:
        """Schedule ``coro`` on the loop (starting the thread on first use).

        Args:
            coro: The coroutine to run.

        Returns:
            Its :class:`Job`.
        """
        return Job(self._ensure(), coro)

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it; an interrupt cancels it cleanly.

        Args:
            coro: The coroutine.
            timeout: Seconds to wait; ``None`` waits for ever.

        Returns:
            What the coroutine returned.

        Raises:
            KeyboardInterrupt: interrupted while waiting (the coroutine was cancelled first).
            Exception: whatever the coroutine raised.
        """
        job = self.submit(coro)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Short waits, not one long one: a blocked lock wait is not woken by a simulated
            # interrupt (``_thread.interrupt_main``), nor by Ctrl-C on Windows.
            while not job.wait(POLL_INTERVAL):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"not finished within {timeout} s")
            return job.result(0)
        except BaseException:
            job.cancel()
            raise

    def stop(self, *, timeout: float = 5.0) -> None:
        """Cancel what is still running, stop the loop, join the thread and close the loop.

        Args:
            timeout: Seconds to wait for the thread.
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        import asyncio

        async def shutdown() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
