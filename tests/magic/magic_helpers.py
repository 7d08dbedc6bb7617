"""Test doubles for the magic's tests: a fake engine and stream, a shell harness."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output

from saga_magic.core.events import log_with_context
from saga_magic.core.types import AIProvider, AIResult, AITask, TokenUsage
from saga_magic.magic.session import CopilotSession

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_log = logging.getLogger("saga.test")


def plain(text: str) -> str:
    """Strip ANSI colours."""
    return _ANSI.sub("", text)


def texts(captured: CapturedIO, mime: str = "text/plain") -> list[str]:
    """The ``mime`` part of every captured display (creation and updates)."""
    return [item["data"].get(mime, "") for item in captured._outputs]


@dataclass
class FakeEngine:
    """Answers with ``answer(task)``; can emit retry events, fail, or block until cancelled."""

    user: str
    model: str | None
    answer: Callable[[AITask], str] = lambda task: f"echo: {task.prompt}"
    chunks: int = 3
    retries: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    block: bool = False
    tasks: list[AITask] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    cancelled: bool = False
    closed: bool = False
    delay: float = 0.0

    def _result(self, task: AITask, text: str) -> AIResult:
        return AIResult(
            response_text=text,
            finish_reason="stop",
            usage=TokenUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
            provider=AIProvider.COPILOT_CHAT,
            task_id=task.task_id,
            latency_ms=12.0,
            request_id="req-1",
            model=self.model or "fake-model",
            attempts=1 + len(self.retries),
        )

    async def _prelude(self, task: AITask) -> None:
        self.tasks.append(task)
        try:
            await self._work(task)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def _work(self, task: AITask) -> None:
        for retry in self.retries:
            context = {
                "attempt": 1,
                "max_attempts": 6,
                "wait_s": 4.0,
                "next_attempt_at": time.time() + 4.0,
                "reason": "429",
                "task_id": task.task_id,
                **retry,
            }
            event = context.pop("event", "copilot_retry")
            user = context.pop("user_id", self.user)
            log_with_context(_log, logging.WARNING, event, user_id=user, op_id="op1", **context)
            await asyncio.sleep(0.12)
        if self.block:
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error

    async def reason(self, task: AITask) -> AIResult:
        self.modes.append("reason")
        await self._prelude(task)
        return self._result(task, self.answer(task))

    def stream(self, task: AITask) -> FakeStream:
        self.modes.append("stream")
        return FakeStream(self, task)

    async def close(self) -> None:
        self.closed = True


class FakeStream:
    """Async iterator of deltas with ``.result`` and ``aclose()``, like the core's ChatStream."""

    def __init__(self, engine: FakeEngine, task: AITask) -> None:
        self._engine = engine
        self._task = task
        self._pieces: list[str] | None = None
        self.result: AIResult | None = None
        self.closed = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> str:
        if self._pieces is None:
            await self._engine._prelude(self._task)
            text = self._engine.answer(self._task)
            size = max(1, -(-len(text) // self._engine.chunks))
            self._pieces = [text[i : i + size] for i in range(0, len(text), size)]
            self._text = text
        if not self._pieces:
            self.result = self._engine._result(self._task, self._text)
            raise StopAsyncIteration
        await asyncio.sleep(0.01)
        return self._pieces.pop(0)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Harness:
    """The shell with the extension loaded on a session whose engines are fakes."""

    shell: InteractiveShell
    session: CopilotSession
    engines: dict[tuple[str, str | None], FakeEngine]
    configure: Callable[[FakeEngine], None] = lambda engine: None

    def engine(self, user: str = "default", model: str | None = None) -> FakeEngine:
        return self.engines[(user, model)]

    def run(self, source: str) -> tuple[Any, CapturedIO]:
        with capture_output() as captured:
            result = self.shell.run_cell(source, store_history=True)
        return result, captured
