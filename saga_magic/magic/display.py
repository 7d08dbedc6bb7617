"""Rendering in the cell: the streamed answer, the live retry line, and the final formats.

Everything here runs on the kernel's (calling) thread. Updates go through IPython's display
machinery with a ``display_id``, so a front end redraws one output in place; answer updates are
throttled (at most one every ``min_interval`` seconds, plus the final one). The model's text is
sent as ``text/markdown`` only through :func:`~saga_magic.magic.markdown.safe_markdown` (raw
HTML escaped outside code): front ends render live outputs as trusted. A terminal IPython, which
cannot redraw an output in place, uses :mod:`saga_magic.magic.terminal` instead.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from .markdown import safe_markdown

__all__ = [
    "AnswerView",
    "NotJSONError",
    "ProgressView",
    "describe_retry",
    "extract_code",
    "final_bundle",
]

Bundle = dict[str, Any]
Display = Callable[..., Any]
"""``IPython.display.display``-compatible callable (tests pass a recorder)."""

_FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_CURSOR = " \N{LEFT HALF BLOCK}"
_LANGUAGE = re.compile(r"[\w.+#-]*")


class NotJSONError(ValueError):
    """``--format json`` was asked for but the answer does not parse as JSON."""


def extract_code(text: str) -> tuple[str, str]:
    """Return the code of the first fenced block in ``text`` (or all of it) and its language.

    Args:
        text: The model's answer.

    Returns:
        ``(code, language)``; language is ``""`` when the fence named none.
    """
    match = _FENCE.search(text)
    if match is None:
        return text.strip("\n"), ""
    info = match.group("info").strip().split()
    return match.group("body").rstrip("\n"), info[0] if info else ""


def _fenced(code: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=2)
    fence = "`" * max(3, longest + 1)
    match = _LANGUAGE.match(language)
    info = match.group(0) if match is not None else ""
    return f"{fence}{info}\n{code}\n{fence}"


def final_bundle(text: str, fmt: str) -> Bundle:
    """Build the mime bundle of a finished answer.

    Args:
        text: The answer.
        fmt: ``markdown``, ``text``, ``code`` or ``json``.

    Returns:
        A mime bundle; always with a ``text/plain`` fallback; its Markdown never carries raw
        HTML from ``text``.

    Raises:
        NotJSONError: ``fmt`` is ``json`` and ``text`` (or its first fenced block) is not JSON.
    """
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "code":
        code, language = extract_code(text)
        return {"text/markdown": _fenced(code, language or "python"), "text/plain": code}
    if fmt == "json":
        candidate = extract_code(text)[0] if _FENCE.search(text) else text
        try:
            value = json.loads(candidate)
        except ValueError as error:
            preview = " ".join(text.split())[:60]
            raise NotJSONError(
                f"the answer is not valid JSON ({error.args[0].split(':')[0]}): {preview!r}; "
                "ask for JSON only, or use --format markdown"
            ) from None
        plain = json.dumps(value, indent=2, ensure_ascii=False)
        if isinstance(value, dict | list):
            return {"application/json": value, "text/plain": plain}
        return {"text/plain": plain}
    return {"text/markdown": safe_markdown(text), "text/plain": text}


class AnswerView:
    """The answer's output, created on first use and updated in place.

    Args:
        display: ``IPython.display.display`` (or a double).
        fmt: The final format; while streaming, Markdown streams as Markdown, other formats as
            plain text.
        min_interval: Least seconds between two streaming updates.
        clock: Monotonic clock (seconds).
    """

    def __init__(
        self,
        display: Display,
        *,
        fmt: str = "markdown",
        min_interval: float = 0.08,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._display = display
        self._fmt = fmt
        self._min_interval = min_interval
        self._clock = clock
        self._handle: Any = None
        self._last_update = float("-inf")
        self._shown = ""
        self.text = ""
        """Text received so far."""
        self.updates = 0
        """Display calls made (creation included)."""

    def append(self, delta: str) -> None:
        """Add streamed text (shown at the next :meth:`refresh`).

        Args:
            delta: The new piece of the answer.
        """
        self.text += delta

    def _show(self, bundle: Bundle) -> None:
        if self._handle is None:
            self._handle = self._display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self.updates += 1

    def refresh(self, *, force: bool = False) -> None:
        """Redraw the streamed text if it changed and the throttle allows.

        Args:
            force: Ignore the throttle.
        """
        now = self._clock()
        if self.text == self._shown or (not force and now - self._last_update < self._min_interval):
            return
        shown = self.text + _CURSOR
        self._show(
            {"text/markdown": safe_markdown(shown), "text/plain": shown}
            if self._fmt == "markdown"
            else {"text/plain": shown}
        )
        self._shown = self.text
        self._last_update = now

    def abandon(self) -> None:
        """Redraw what was streamed without the cursor (the request failed mid-way)."""
        if self._handle is not None and self.text:
            self._show({"text/plain": self.text})

    def finish(self, text: str) -> None:
        """Show the finished answer in its final format (replacing the streamed one).

        Args:
            text: The whole answer.

        Raises:
            NotJSONError: ``json`` format and the answer is not JSON (the raw text stays shown).
        """
        self.text = text
        try:
            bundle = final_bundle(text, self._fmt)
        except NotJSONError:
            self._show({"text/plain": text})
            raise
        self._show(bundle)


def describe_retry(event: str, context: dict[str, Any], *, now: float) -> str:
    """Say what a retry event means, e.g. "rate limited (429), retrying in 4 s, attempt 2 of 6".

    Args:
        event: ``copilot_retry`` or ``token_refresh_retry``.
        context: The event's context (attempt, max_attempts, reason, next_attempt_at, wait_s).
        now: Current unix time, for the countdown.

    Returns:
        One line.
    """
    reason = str(context.get("reason", ""))
    if reason == "429":
        what = "rate limited (429)"
    elif reason.isdigit():
        what = f"server error ({reason})" if reason.startswith("5") else f"HTTP {reason}"
    elif reason:
        what = {"timeout": "timed out", "connection": "connection failed"}.get(
            reason, f"failed ({reason})"
        )
    else:
        what = "failed"
    if event.startswith("token"):
        what = f"token refresh {what}"
    next_at = context.get("next_attempt_at")
    wait = (
        float(next_at) - now
        if isinstance(next_at, int | float)
        else float(context.get("wait_s") or 0.0)
    )
    attempt = context.get("attempt")
    next_attempt = attempt + 1 if isinstance(attempt, int) else "?"
    when = f"retrying in {max(1, round(wait))} s" if wait >= 0.5 else "retrying now"
    return f"{what}, {when}, attempt {next_attempt} of {context.get('max_attempts', '?')}"


class ProgressView:
    """A one-line status output (retries), updated in place and cleared when done.

    Args:
        display: ``IPython.display.display`` (or a double).
        clock: Unix-time clock, for the countdown.
    """

    def __init__(self, display: Display, *, clock: Callable[[], float] = time.time) -> None:
        self._display = display
        self._clock = clock
        self._handle: Any = None
        self._event: tuple[str, dict[str, Any]] | None = None
        self._line = ""
        self.history: list[str] = []
        """Every distinct line shown (for tests and the final summary)."""

    @property
    def active(self) -> bool:
        """Whether a line is currently shown."""
        return self._event is not None

    def _show(self, line: str) -> None:
        if line == self._line:
            return
        bundle = {"text/plain": line}
        if self._handle is None:
            self._handle = self._display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        self._line = line
        if line:
            self.history.append(line)

    def retry(self, event: str, context: dict[str, Any]) -> None:
        """Show a retry event.

        Args:
            event: The event name.
            context: The event's context.
        """
        self._event = (event, context)
        self._show(describe_retry(event, context, now=self._clock()))

    def tick(self) -> None:
        """Redraw the countdown of the shown retry, if any."""
        if self._event is not None:
            self._show(describe_retry(*self._event, now=self._clock()))

    def clear(self) -> None:
        """Blank the line (if one was shown)."""
        if self._handle is not None:
            self._show("")
        self._event = None
