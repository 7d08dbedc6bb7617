"""One ``%%copilot`` cell: interpolate, ask on the loop thread, render on the kernel's thread.

The background coroutine pushes ``("delta", text)`` items into a thread-safe queue; the retry
events of this request (``copilot_retry``, ``token_refresh_retry`` for the same user, emitted on
the loop thread while the request runs) go into the same queue. The calling thread drains it,
updates the answer and the retry line, and returns when the job is done. An interrupt while it
waits cancels the job on its loop, waits for its cleanup, and fails the cell with one line.
"""

from __future__ import annotations

import concurrent.futures
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .display import AnswerView, NotJSONError, ProgressView
from .failure import CopilotError, CopilotInterrupted, describe_error
from .interpolate import interpolate
from .session import LastRequest

if TYPE_CHECKING:
    from saga_magic.core.events import Event
    from saga_magic.core.types import AIResult

    from .options import CellOptions
    from .session import CopilotSession

__all__ = ["RETRY_EVENTS", "run_cell"]

RETRY_EVENTS = frozenset({"copilot_retry", "token_refresh_retry"})
"""Events shown on the live retry line."""

POLL_INTERVAL = 0.05
"""Seconds between two drains of the queue while waiting (bounds the display latency)."""


def _matches(event: Event, *, user: str, task_id: str) -> bool:
    if event.event not in RETRY_EVENTS or event.user_id != user:
        return False
    other = event.context.get("task_id")
    return other is None or other == task_id


def _wait(
    job: Any,
    items: queue.SimpleQueue[tuple[str, Any]],
    answer: AnswerView,
    progress: ProgressView,
) -> None:
    while True:
        finished = job.done()
        try:
            item: tuple[str, Any] | None = items.get(timeout=0 if finished else POLL_INTERVAL)
        except queue.Empty:
            item = None
        while item is not None:
            kind, payload = item
            if kind == "delta":
                answer.append(payload)
            else:
                progress.retry(payload.event, dict(payload.context))
            try:
                item = items.get_nowait()
            except queue.Empty:
                item = None
        answer.refresh(force=finished)
        progress.tick()
        if finished:
            return


def run_cell(
    session: CopilotSession,
    namespace: dict[str, Any],
    options: CellOptions,
    cell: str,
    *,
    display: Callable[..., Any],
    warn: Callable[[str], None],
) -> AIResult:
    """Ask the cell's question and render the answer.

    Args:
        session: The extension's session.
        namespace: The user namespace (read for interpolation; ``_copilot`` and ``-o`` are set).
        options: The parsed cell options.
        cell: The cell body (the prompt template).
        display: ``IPython.display.display``.
        warn: Prints a one-line note (unresolved ``In``/``Out``/``Err`` references).

    Returns:
        The result (also stored as ``_copilot``).

    Raises:
        UsageError: empty prompt.
        CopilotError: the request failed (one line), or ``--format json`` got no JSON.
        CopilotInterrupted: interrupted; the request was cancelled.
    """
    from saga_magic.core import events
    from saga_magic.core.types import AITask

    prompt = interpolate(cell, namespace, errors=session.errors)
    text = prompt.text.strip("\r\n").rstrip()
    if not text:
        raise UsageError("the cell is empty: write the question on the lines below %%copilot")
    if prompt.missing:
        warn(f"note: left as typed (nothing recorded): {', '.join(prompt.missing)}")
    settings = session.settings
    user = options.user or settings.user
    if options.new:
        session.memory.reset(user)
    task = AITask(
        text,
        system_prompt=options.system,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        history=session.memory.history(user),
    )
    items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def on_event(event: Event) -> None:
        if _matches(event, user=user, task_id=task.task_id):
            items.put(("retry", event))

    answer = AnswerView(display, fmt=options.format)
    progress = ProgressView(display, clock=session.clock)
    unsubscribe = events.subscribe(on_event)
    try:
        job = session.runner.submit(
            session.ask(task, user=user, model=options.model, stream=options.stream, emit=items.put)
        )
        try:
            _wait(job, items, answer, progress)
        except KeyboardInterrupt:
            job.cancel()
            answer.abandon()
            session.last = LastRequest(
                at=session.clock(), user=user, result=None, error="interrupted"
            )
            raise CopilotInterrupted() from None
    finally:
        unsubscribe()
        progress.clear()
    try:
        result: AIResult = job.result()
    except concurrent.futures.CancelledError:
        raise CopilotInterrupted() from None
    except Exception as error:
        answer.abandon()
        line = describe_error(error, user=user, default_user=settings.user, now=time.time())
        session.last = LastRequest(
            at=session.clock(), user=user, result=None, error=line or repr(error)
        )
        if line is None:
            raise
        raise CopilotError(line) from error
    session.memory.add(user, text, result.response_text)
    session.last = LastRequest(at=session.clock(), user=user, result=result)
    namespace["_copilot"] = result
    if options.output:
        namespace[options.output] = result
    try:
        answer.finish(result.response_text)
    except NotJSONError as error:
        raise CopilotError(str(error)) from None
    return result
