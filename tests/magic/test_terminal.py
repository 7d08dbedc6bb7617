"""Terminal IPython (no kernel): the answer is written incrementally, the retry line uses \\r."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from magic_helpers import Harness

from saga_magic import magics
from saga_magic.magic.display import NotJSONError
from saga_magic.magic.terminal import (
    TerminalAnswerView,
    TerminalProgressView,
    TerminalScreen,
    is_terminal,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _screen() -> tuple[TerminalScreen, list[str]]:
    written: list[str] = []
    return TerminalScreen(written.append), written


def test_is_terminal_looks_the_class_up_without_importing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class TerminalInteractiveShell:
        pass

    fake = types.ModuleType("IPython.terminal.interactiveshell")
    fake.TerminalInteractiveShell = TerminalInteractiveShell  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "IPython.terminal.interactiveshell", raising=False)
    assert not is_terminal(TerminalInteractiveShell())  # module not loaded: not a terminal
    monkeypatch.setitem(sys.modules, "IPython.terminal.interactiveshell", fake)
    assert is_terminal(TerminalInteractiveShell())
    assert not is_terminal(object())


def test_answer_streams_incrementally_and_ends_its_line() -> None:
    screen, written = _screen()
    view = TerminalAnswerView(screen)
    view.refresh()
    view.append("Hel")
    view.refresh()
    view.refresh(force=True)  # nothing new: nothing written
    view.append("lo")
    view.refresh()
    view.finish("Hello!")
    assert written == ["Hel", "lo", "!", "\n"]
    assert view.updates == 3


def test_answer_not_streamed_is_written_once() -> None:
    screen, written = _screen()
    TerminalAnswerView(screen, fmt="text").finish("whole answer\n")
    assert written == ["whole answer\n"]
    screen, written = _screen()
    view = TerminalAnswerView(screen)
    view.append("partial ans")
    view.refresh()
    view.finish("a different answer")  # not what was streamed: shown whole on its own line
    assert written == ["partial ans", "\n", "a different answer", "\n"]


def test_code_and_json_are_printed_in_their_final_form() -> None:
    screen, written = _screen()
    view = TerminalAnswerView(screen, fmt="code")
    view.append("Here:\n```py\nx = 1\n```")
    view.refresh()  # not streamed
    assert written == []
    view.finish("Here:\n```py\nx = 1\n```")
    assert written == ["x = 1", "\n"]
    screen, written = _screen()
    TerminalAnswerView(screen, fmt="json").finish('{"a": 1}')
    assert written == ['{\n  "a": 1\n}', "\n"]
    screen, written = _screen()
    with pytest.raises(NotJSONError):
        TerminalAnswerView(screen, fmt="json").finish("nope")
    assert written == ["nope", "\n"]


def test_abandon_ends_a_half_written_line() -> None:
    screen, written = _screen()
    view = TerminalAnswerView(screen)
    view.abandon()
    assert written == []
    view.append("half")
    view.refresh()
    view.abandon()
    assert written == ["half", "\n"]


def test_progress_line_is_redrawn_in_place_and_wiped() -> None:
    screen, written = _screen()
    clock = Clock()
    progress = TerminalProgressView(screen, clock=clock)
    progress.tick()
    progress.clear()
    assert written == []  # nothing shown: nothing to wipe
    context = {"reason": "429", "attempt": 1, "max_attempts": 6, "next_attempt_at": 103.0}
    progress.retry("copilot_retry", context)
    assert progress.active
    progress.tick()  # same text: no redraw
    clock.now += 1
    progress.tick()
    answer = TerminalAnswerView(screen)
    answer.append("ok")
    answer.refresh()  # the answer wipes the status line first
    progress.clear()
    assert not progress.active
    line1 = "rate limited (429), retrying in 3 s, attempt 2 of 6"
    line2 = "rate limited (429), retrying in 2 s, attempt 2 of 6"
    assert written == [f"\r{line1}", f"\r{line2}", "\r" + " " * len(line2) + "\r", "ok"]
    assert progress.history == [line1, line2]


def test_status_never_draws_over_a_half_written_answer() -> None:
    screen, written = _screen()
    screen.text("partial")
    screen.status("retrying")
    screen.status("retry")
    assert written == ["partial", "\n", "\rretrying", "\rretry   "]


def test_a_terminal_shell_gets_text_not_display_updates(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(magics, "is_terminal", lambda shell: True)
    harness.configure = lambda e: (setattr(e, "retries", [{}]), setattr(e, "chunks", 4))
    result, captured = harness.run("%%copilot\nstream this answer please")
    assert result.success
    assert captured._outputs == []  # no display_id updates, so no reprints
    out = captured.stdout
    assert "\rrate limited (429), retrying in" in out
    answer = "echo: stream this answer please"
    assert out.endswith(answer + "\n")
    assert out.count("echo:") == 1  # written once, incrementally
    result, captured = harness.run("%%copilot --no-stream --format json\n[1, 2]")
    assert isinstance(result.error_in_exec, Exception)  # "echo: [1, 2]" is not JSON
    assert "echo: [1, 2]\n" in captured.stdout


def test_the_real_terminal_writer(capsys: pytest.CaptureFixture[str]) -> None:
    written: Any = magics._write
    written("abc")
    assert capsys.readouterr().out == "abc"
