"""Rendering in a terminal IPython: incremental text and a ``\\r``-redrawn retry line.

A terminal shell (``TerminalInteractiveShell``, no kernel, no front end) prints every display
update as a new output, so the in-place views of :mod:`saga_magic.magic.display` would reprint
the whole answer at each update. Here the answer is written as it arrives, delta by delta, and
the retry line is one line redrawn with a carriage return and wiped when done. Markdown and text
answers stream; ``code`` and ``json`` answers are printed once, in their final form.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from .display import NotJSONError, describe_retry, final_bundle

__all__ = ["TerminalAnswerView", "TerminalProgressView", "TerminalScreen", "is_terminal"]

Write = Callable[[str], None]


def is_terminal(shell: Any) -> bool:
    """Tell whether ``shell`` is a terminal IPython (not a kernel with a front end).

    Args:
        shell: The running shell.

    Returns:
        True for a ``TerminalInteractiveShell`` (the module is looked up, never imported: a
        shell of that class has imported it already).
    """
    module = sys.modules.get("IPython.terminal.interactiveshell")
    return module is not None and isinstance(shell, module.TerminalInteractiveShell)


class TerminalScreen:
    """The terminal both views write to: answer text, and at most one status line below it.

    Args:
        write: Writes text (and flushes), e.g. to ``sys.stdout``.
    """

    def __init__(self, write: Write) -> None:
        self._write = write
        self._status = ""
        self._at_line_start = True

    def text(self, chunk: str) -> None:
        """Write answer text (wiping the status line first).

        Args:
            chunk: Text to append.
        """
        if not chunk:
            return
        self.status("")
        self._write(chunk)
        self._at_line_start = chunk.endswith("\n")

    @property
    def status_shown(self) -> bool:
        """Whether a status line is on screen (answer text wipes it)."""
        return bool(self._status)

    def end_line(self) -> None:
        """Finish the current answer line, if one was started."""
        if not self._at_line_start:
            self.text("\n")

    def status(self, line: str) -> None:
        """Show ``line`` as the status line ("" wipes it), redrawn in place with ``\\r``.

        Args:
            line: The new status.
        """
        if line == self._status:
            return
        if line and not self._at_line_start:
            self._write("\n")  # never draw over a half-written answer line
            self._at_line_start = True
        pad = " " * max(0, len(self._status) - len(line))
        self._write(f"\r{line}{pad}" + ("\r" if not line else ""))
        self._status = line


class TerminalAnswerView:
    """The answer written to the terminal as it arrives (same interface as ``AnswerView``).

    Args:
        screen: Where to write.
        fmt: The final format; ``markdown`` and ``text`` stream, ``code`` and ``json`` are
            printed once finished.
    """

    def __init__(self, screen: TerminalScreen, *, fmt: str = "markdown") -> None:
        self._screen = screen
        self._fmt = fmt
        self._streams = fmt in ("markdown", "text")
        self._written = ""
        self.text = ""
        """Text received so far."""
        self.updates = 0
        """Writes made."""

    def append(self, delta: str) -> None:
        """Add streamed text (written at the next :meth:`refresh`).

        Args:
            delta: The new piece of the answer.
        """
        self.text += delta

    def refresh(self, *, force: bool = False) -> None:
        """Write what arrived since the last call (no throttle: writes are incremental).

        Args:
            force: Accepted for interface parity; every call writes what is new.
        """
        if not self._streams or len(self.text) == len(self._written):
            return
        self._screen.text(self.text[len(self._written) :])
        self._written = self.text
        self.updates += 1

    def abandon(self) -> None:
        """End the partly written answer's line (the request failed mid-way)."""
        self._screen.end_line()

    def finish(self, text: str) -> None:
        """Complete the answer: write what is missing, or the final form of code / JSON.

        Args:
            text: The whole answer.

        Raises:
            NotJSONError: ``json`` format and the answer is not JSON (the raw text is written).
        """
        self.text = text
        if self._streams:
            if text.startswith(self._written):
                self._screen.text(text[len(self._written) :])
            else:  # not what was streamed (should not happen): show the whole answer again
                self._screen.end_line()
                self._screen.text(text)
        else:
            try:
                shown = str(final_bundle(text, self._fmt)["text/plain"])
            except NotJSONError:
                self._screen.text(text)
                self._screen.end_line()
                raise
            self._screen.text(shown)
        self._written = text
        self.updates += 1
        self._screen.end_line()


class TerminalProgressView:
    """The retry line, redrawn in place with ``\\r`` (same interface as ``ProgressView``).

    Args:
        screen: Where to write.
        clock: Unix-time clock, for the countdown.
    """

    def __init__(self, screen: TerminalScreen, *, clock: Callable[[], float] = time.time) -> None:
        self._screen = screen
        self._clock = clock
        self._event: tuple[str, dict[str, Any]] | None = None
        self.history: list[str] = []
        """Every distinct line shown."""

    @property
    def active(self) -> bool:
        """Whether a line is currently shown."""
        return self._event is not None

    def _show(self, line: str) -> None:
        if not self.history or self.history[-1] != line:
            self.history.append(line)
        self._screen.status(line)

    def retry(self, event: str, context: dict[str, Any]) -> None:
        """Show a retry event.

        Args:
            event: The event name.
            context: The event's context.
        """
        self._event = (event, context)
        self._show(describe_retry(event, context, now=self._clock()))

    def tick(self) -> None:
        """Redraw the countdown of the shown retry, if any (answer text ends the retry)."""
        if self._event is not None and not self._screen.status_shown:
            self._event = None  # the answer is arriving: the wait is over
        if self._event is not None:
            self._show(describe_retry(*self._event, now=self._clock()))

    def clear(self) -> None:
        """Wipe the line (if one was shown)."""
        self._screen.status("")
        self._event = None
