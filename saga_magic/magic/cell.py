"""One ``%%copilot`` cell: interpolate, ask on the loop thread, render on the kernel's thread.

The background coroutine pushes ``("delta", text)`` items into a thread-safe queue; the retry
events of this request (``copilot_retry``, ``token_refresh_retry`` for the same user, emitted on
the loop thread while the request runs) go into the same queue. The calling thread drains it,
updates the answer and the retry line, and returns when the job is done. An interrupt while it
waits cancels the job on its loop, waits for its cleanup (a second interrupt stops that wait),
and fails the cell with one line; any other failure while rendering cancels the job too.

Every core failure, before or during the request, is described once (one line), recorded in
``session.last`` for ``%copilot status``, and raised as :class:`CopilotError`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .display import AnswerView, NotJSONError, ProgressView
from .failure import CopilotError, CopilotInterrupted, failure
from .interpolate import interpolate
from .runner import POLL_INTERVAL
from .session import LastRequest
from .terminal import TerminalAnswerView, TerminalProgressView, TerminalScreen

if TYPE_CHECKING:
    from saga_magic.core.events import Event
    from saga_magic.core.types import AIResult

    from .options import CellOptions
    from .session import CopilotSession

__all__ = ["RETRY_EVENTS", "run_cell"]

RETRY_EVENTS = frozenset({"copilot_retry", "token_refresh_retry"})
"""Events shown on the live retry line."""

Answer = AnswerView | TerminalAnswerView
Progress = ProgressView | TerminalProgressView


def _matches(event: Event, *, user: str, task_id: str) -> bool:
    if event.event not in RETRY_EVENTS or event.user_id != user:
        return False
    other = event.context.get("task_id")
    return other is None or other == task_id


def _wait(
    job: Any,
    items: queue.SimpleQueue[tuple[str, Any]],
    answer: Answer,
    progress: Progress,
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


def _cancel(job: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C during the cleanup wait
        job.cancel()


def _substituted(references: Sequence[str]) -> str:
    unique = dict.fromkeys(references)
    return ", ".join(f"{{{reference}}}" for reference in unique)


def run_cell(
    session: CopilotSession,
    namespace: dict[str, Any],
    options: CellOptions,
    cell: str,
    *,
    display: Callable[..., Any],
    warn: Callable[[str], None],
    inputs: Sequence[str] | None = None,
    write: Callable[[str], None] | None = None,
) -> AIResult:
    """Ask the cell's question and render the answer.

    Args:
        session: The extension's session.
        namespace: The user namespace (read for interpolation; ``_copilot`` and ``-o`` are set).
        options: The parsed cell options.
        cell: The cell body (the prompt template).
        display: ``IPython.display.display``.
        warn: Prints a one-line note: the variables inserted, unresolved ``In``/``Out``/``Err``.
        inputs: The cells as typed (``history_manager.input_hist_raw``), for ``{In[n]}``.
        write: In a terminal IPython, writes to the terminal (the answer streams as text and
            the retry line is redrawn with ``\\r``); ``None`` uses ``display`` updates in place.

    Returns:
        The result (also stored as ``_copilot``).

    Raises:
        UsageError: empty prompt.
        CopilotError: the request (or reading the settings) failed, a variable could not be
            inserted, or ``--format json`` got no JSON; one line.
        CopilotInterrupted: interrupted; the request was cancelled.
    """
    user = options.user or session.default_user
    deployment: str | None = None
    try:
        session.observe()
        user = options.user or session.settings.user
        deployment = session.deployment_for(options.model)
        return _ask(
            session,
            namespace,
            options,
            cell,
            user=user,
            display=display,
            warn=warn,
            inputs=inputs,
            write=write,
        )
    except (CopilotError, UsageError, KeyboardInterrupt):
        raise
    except Exception as error:
        wrapped = failure(
            error,
            user=user,
            default_user=session.default_user,
            now=session.clock(),
            deployment=deployment,
        )
        session.last = LastRequest(
            at=session.clock(),
            user=user,
            result=None,
            error=wrapped.line if wrapped is not None else repr(error),
        )
        if wrapped is None:
            raise
        raise wrapped from error


def _ask(
    session: CopilotSession,
    namespace: dict[str, Any],
    options: CellOptions,
    cell: str,
    *,
    user: str,
    display: Callable[..., Any],
    warn: Callable[[str], None],
    inputs: Sequence[str] | None,
    write: Callable[[str], None] | None,
) -> AIResult:
    from saga_magic.core import events
    from saga_magic.core.types import AITask

    prompt = interpolate(cell, namespace, errors=session.errors, inputs=inputs)
    text = prompt.text.strip("\r\n").rstrip()
    if not text:
        raise UsageError("the cell is empty: write the question on the lines below %%copilot")
    if prompt.replaced:
        warn(f"note: inserted {_substituted(prompt.replaced)}")
    if prompt.missing:
        warn(f"note: left as typed (nothing recorded): {', '.join(prompt.missing)}")
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

    answer: Answer
    progress: Progress
    if write is not None:
        screen = TerminalScreen(write)
        answer = TerminalAnswerView(screen, fmt=options.format)
        progress = TerminalProgressView(screen, clock=session.clock)
    else:
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
            _cancel(job)
            answer.abandon()
            session.last = LastRequest(
                at=session.clock(), user=user, result=None, error="interrupted"
            )
            raise CopilotInterrupted() from None
        except BaseException:  # a display failure must not orphan the request
            _cancel(job)
            raise
    finally:
        unsubscribe()
        progress.clear()
    try:
        result: AIResult = job.result()
    except concurrent.futures.CancelledError:
        raise CopilotInterrupted() from None
    except Exception:
        answer.abandon()
        raise
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
