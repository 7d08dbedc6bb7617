"""Cell failures as one actionable line, without a traceback wall.

The cell must *fail* (so "Run All" stops), but show one line. IPython asks an exception for its
own traceback through ``_render_traceback_()``; ours returns the single line. We never install
``set_custom_exc`` (it would hijack every exception of the kernel). The core's exception stays
reachable as ``__cause__`` (``sys.last_value.__cause__``) for anyone who wants the details.
"""

from __future__ import annotations

import time

__all__ = ["CopilotError", "CopilotInterrupted", "describe_error"]

_ROLE_HINT = (
    "ask an admin to assign the 'Cognitive Services OpenAI User' role on the resource "
    "(a new assignment takes up to 5 min to apply)"
)


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


class CopilotError(Exception):
    """A ``%%copilot`` / ``%copilot`` failure, shown as one line.

    Args:
        line: What went wrong and what to do, one sentence.
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


def _login_command(user: str, default_user: str) -> str:
    return "%copilot login" if user == default_user else f"%copilot login --user {user}"


def describe_error(
    error: BaseException, *, user: str, default_user: str = "default", now: float | None = None
) -> str | None:
    """Turn a core exception into the one line the cell shows.

    Args:
        error: What the core raised.
        user: The user id of the request.
        default_user: The configured default user (login hints omit ``--user`` for it).
        now: Unix time, for "retry at HH:MM:SS"; the current time by default.

    Returns:
        The line, or ``None`` when ``error`` is not one of ours (a bug: let it show in full).
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
    message = _one_line(error.message, 160)
    hint = f" -> {error.hint}" if error.hint else ""
    attempts = f" after {error.attempts} attempts" if (error.attempts or 0) > 1 else ""
    if isinstance(error, PermissionDeniedError):
        return f"permission denied for user {user!r}: {message} -> {error.hint or _ROLE_HINT}"
    if isinstance(error, TokenPersistenceError | TokenStorageError):
        return f"token store: {message}{hint}"
    if isinstance(error, AuthenticationError):
        return (
            f"re-login needed for user {user!r} ({message}): "
            f"run {_login_command(user, default_user)}"
        )
    if isinstance(error, ConfigurationError):
        return f"configuration: {message}{hint}"
    if isinstance(error, InputValidationError):
        if not hint:
            if error.code == "context_length_exceeded":
                hint = " -> shorten the prompt, or start over with --new (or %copilot reset)"
            elif error.code == "content_filter":
                hint = " -> rephrase the prompt (the content filter blocked it)"
            else:
                hint = " -> change the prompt or the options and run the cell again"
        return f"request rejected: {message}{hint}"
    if isinstance(error, RateLimitError):
        if error.retry_after is not None:
            current = time.time() if now is None else now
            at = time.strftime("%H:%M:%S", time.localtime(current + error.retry_after))
            return f"rate limited{attempts}; retry after {error.retry_after:.0f} s (at {at})"
        return f"rate limited{attempts}; wait a minute and run the cell again"
    if isinstance(error, RequestTimeoutError):
        return (
            f"timed out{attempts}: {message} -> run the cell again, or ask for less (--max-tokens)"
        )
    if isinstance(error, TransientError):
        return f"request failed{attempts}: {message} -> run the cell again later"
    return f"{message}{hint}"
