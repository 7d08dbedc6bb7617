"""Cell failures as one actionable line, without a traceback wall.

The cell must *fail* (so "Run All" stops), but show one line. IPython asks an exception for its
own traceback through ``_render_traceback_()``; ours returns the single line. We never install
``set_custom_exc`` (it would hijack every exception of the kernel). The core's exception stays
reachable as ``__cause__`` (``sys.last_value.__cause__``) for anyone who wants the details.
"""

from __future__ import annotations

import time

from .timefmt import format_duration, moment

__all__ = [
    "LINE_LIMIT",
    "CopilotError",
    "CopilotInterrupted",
    "describe_error",
    "failure",
    "login_command",
]

LINE_LIMIT = 240
"""Longest line a failure shows; the message part is shortened, never the hint."""

_MESSAGE_LIMIT = 160
_MIN_MESSAGE = 24
_ARROW = " -> "
_ROLE_HINT = (
    "ask an admin to assign the 'Cognitive Services OpenAI User' role on the resource "
    "(a new assignment takes up to 5 min to apply)"
)
_CONTEXT_HINT = "shorten the prompt, or start over with --new (or %copilot reset)"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\N{HORIZONTAL ELLIPSIS}"


def _fit(head: str, message: str, tail: str = "", *, limit: int = LINE_LIMIT) -> str:
    """``head + message + tail`` in at most ``limit`` characters: only ``message`` shrinks."""
    budget = max(limit - len(head) - len(tail), _MIN_MESSAGE)
    return f"{head}{_cut(_flat(message), min(budget, _MESSAGE_LIMIT))}{tail}"


def _one_line(text: str, limit: int = LINE_LIMIT) -> str:
    flat = _flat(text)
    if len(flat) <= limit:
        return flat
    head, arrow, hint = flat.rpartition(_ARROW)
    if not arrow:
        return _cut(flat, limit)
    budget = max(limit - len(arrow) - len(hint), _MIN_MESSAGE)
    return _cut(head, budget) + arrow + hint


class CopilotError(Exception):
    """A ``%%copilot`` / ``%copilot`` failure, shown as one line.

    Args:
        line: What went wrong and what to do, one sentence; when it is too long, the part
            before the last ``" -> "`` (the message) is shortened, never the hint after it.
    """

    def __init__(self, line: str) -> None:
        self.line = _one_line(line)
        """The message shown in the cell."""
        super().__init__(self.line)

    def _render_traceback_(self) -> list[str]:
        return [f"CopilotError: {self.line}"]


class CopilotInterrupted(KeyboardInterrupt):
    """The request was cancelled by an interrupt (Ctrl-C, the kernel's stop button)."""

    def __init__(
        self, line: str = "interrupted: the request was cancelled; the kernel is ready"
    ) -> None:
        self.line = line
        """The message shown in the cell."""
        super().__init__(line)

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self.line}"]


def login_command(user: str, default_user: str) -> str:
    """The sign-in command for ``user``: ``--user`` only when it is not the default one.

    Args:
        user: Whose sign-in is needed.
        default_user: The configured default user.

    Returns:
        ``%copilot login`` or ``%copilot login --user USER``.
    """
    return "%copilot login" if user == default_user else f"%copilot login --user {user}"


def describe_error(
    error: BaseException,
    *,
    user: str,
    default_user: str = "default",
    now: float | None = None,
    deployment: str | None = None,
) -> str | None:
    """Turn a core exception into the one line the cell shows.

    Args:
        error: What the core raised.
        user: The user id of the request.
        default_user: The configured default user (login hints omit ``--user`` for it).
        now: Unix time, for "retry after ... (at ...)"; the current time by default.
        deployment: The deployment ``--model`` put in an Azure deployments URL, if any (a 404
            then names it).

    Returns:
        The line (at most :data:`LINE_LIMIT` characters plus a hint that is never cut), or
        ``None`` when ``error`` is not one of ours (a bug: let it show in full).
    """
    from saga_magic.core.errors import (
        ArcSagaException,
        AuthenticationError,
        ConfigurationError,
        InputValidationError,
        PermissionDeniedError,
        RateLimitError,
        RequestTimeoutError,
        TokenPersistenceError,
        TokenStorageError,
        TransientError,
    )

    if not isinstance(error, ArcSagaException):
        return None
    message = error.message
    hint = f"{_ARROW}{error.hint}" if error.hint else ""
    attempts = f" after {error.attempts} attempts" if (error.attempts or 0) > 1 else ""
    if isinstance(error, PermissionDeniedError):
        return _fit(
            f"permission denied for user {user!r}: ", message, f"{_ARROW}{error.hint or _ROLE_HINT}"
        )
    if isinstance(error, TokenPersistenceError | TokenStorageError):
        return _fit("token store: ", message, hint)
    if isinstance(error, AuthenticationError):
        return _fit(
            f"re-login needed for user {user!r} (",
            message,
            f"): run {login_command(user, default_user)}",
        )
    if isinstance(error, ConfigurationError):
        if deployment is not None and error.status == 404:
            return _fit(
                f"configuration: deployment {deployment!r} (from --model) was not found: ",
                message,
                f"{_ARROW}check the --model name (a deployment of this resource), or drop --model",
            )
        return _fit("configuration: ", message, hint)
    if isinstance(error, InputValidationError):
        if error.code == "context_length_exceeded":  # the magic knows --new and %copilot reset
            hint = f"{_ARROW}{_CONTEXT_HINT}"
        elif not hint:
            if error.code == "content_filter":
                hint = f"{_ARROW}rephrase the prompt (the content filter blocked it)"
            else:
                hint = f"{_ARROW}change the prompt or the options and run the cell again"
        return _fit("request rejected: ", message, hint)
    if isinstance(error, RateLimitError):
        if error.retry_after is not None:
            current = time.time() if now is None else now
            wait = format_duration(error.retry_after, round_up=True)
            at = moment(current + error.retry_after, now=current)
            return f"rate limited{attempts}; retry after {wait} (at {at})"
        return f"rate limited{attempts}; wait a minute and run the cell again"
    if isinstance(error, RequestTimeoutError):
        return _fit(
            f"timed out{attempts}: ",
            message,
            f"{_ARROW}run the cell again, or ask for less (--max-tokens)",
        )
    if isinstance(error, TransientError):
        return _fit(f"request failed{attempts}: ", message, f"{_ARROW}run the cell again later")
    return _fit("", message, hint)


def failure(
    error: BaseException,
    *,
    user: str,
    default_user: str = "default",
    now: float | None = None,
    deployment: str | None = None,
) -> CopilotError | None:
    """Wrap a core exception in the one-line :class:`CopilotError` (see :func:`describe_error`).

    Args:
        error: What the core raised.
        user: The user id of the request.
        default_user: The configured default user.
        now: Unix time, for rate-limit hints.
        deployment: The deployment ``--model`` put in the URL, if any.

    Returns:
        The error to raise (``from error``), or ``None`` when ``error`` is not one of ours.
    """
    line = describe_error(
        error, user=user, default_user=default_user, now=now, deployment=deployment
    )
    return CopilotError(line) if line is not None else None
