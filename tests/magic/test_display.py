"""Rendering: final formats, the throttled streaming view, the retry line."""

from __future__ import annotations

from typing import Any

import pytest

from saga_magic.magic.display import (
    AnswerView,
    NotJSONError,
    ProgressView,
    describe_retry,
    extract_code,
    final_bundle,
)


class Recorder:
    """Stands in for IPython.display.display and its DisplayHandle."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, bundle: dict[str, Any], *, raw: bool, display_id: bool) -> Recorder:
        assert raw
        assert display_id
        self.calls.append(("display", bundle))
        return self

    def update(self, bundle: dict[str, Any], *, raw: bool) -> None:
        assert raw
        self.calls.append(("update", bundle))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "code", "language"),
    [
        ("plain code", "plain code", ""),
        ("intro\n```python\nx = 1\n```\noutro", "x = 1", "python"),
        ("```\nno lang\n```", "no lang", ""),
        ("~~~sql extra\nselect 1\n~~~", "select 1", "sql"),
        ("```js\nfirst\n```\n```py\nsecond\n```", "first", "js"),
        ("\n\nstrip newlines\n\n", "strip newlines", ""),
    ],
)
def test_extract_code(text: str, code: str, language: str) -> None:
    assert extract_code(text) == (code, language)


def test_final_bundles() -> None:
    assert final_bundle("**hi**", "markdown") == {"text/markdown": "**hi**", "text/plain": "**hi**"}
    assert final_bundle("**hi**", "text") == {"text/plain": "**hi**"}
    code = final_bundle("x = '```'", "code")
    assert code["text/markdown"] == "````python\nx = '```'\n````"
    assert code["text/plain"] == "x = '```'"
    assert final_bundle('{"a": 1}', "json") == {
        "application/json": {"a": 1},
        "text/plain": '{\n  "a": 1\n}',
    }
    assert final_bundle("```json\n[1, 2]\n```", "json")["application/json"] == [1, 2]
    assert final_bundle("42", "json") == {"text/plain": "42"}
    with pytest.raises(NotJSONError, match=r"not valid JSON \(Expecting value\): 'hello there'"):
        final_bundle("hello there", "json")


def test_answer_view_throttles_streaming_updates() -> None:
    display, clock = Recorder(), Clock()
    view = AnswerView(display, fmt="markdown", min_interval=0.1, clock=clock)
    view.refresh()  # nothing yet: no output created
    assert display.calls == []
    view.append("Hel")
    view.refresh()
    view.append("lo")
    view.refresh()  # within 0.1 s: skipped
    clock.now += 0.2
    view.refresh()
    view.refresh()  # unchanged: skipped
    view.append("!")
    view.refresh(force=True)
    view.finish("Hello!")
    kinds = [kind for kind, _ in display.calls]
    assert kinds == ["display", "update", "update", "update"]
    shown = [bundle["text/markdown"] for _, bundle in display.calls]
    assert shown == ["Hel \u258c", "Hello \u258c", "Hello! \u258c", "Hello!"]
    assert view.updates == 4


def test_answer_view_streams_other_formats_as_text_and_abandons() -> None:
    display, clock = Recorder(), Clock()
    view = AnswerView(display, fmt="json", clock=clock)
    view.abandon()  # nothing shown: nothing to do
    view.append('{"a"')
    view.refresh()
    assert display.calls[-1][1] == {"text/plain": '{"a" \u258c'}
    view.abandon()
    assert display.calls[-1][1] == {"text/plain": '{"a"'}
    with pytest.raises(NotJSONError):
        view.finish('{"a"')
    assert display.calls[-1][1] == {"text/plain": '{"a"'}


@pytest.mark.parametrize(
    ("event", "context", "line"),
    [
        (
            "copilot_retry",
            {"reason": "429", "attempt": 1, "max_attempts": 6, "next_attempt_at": 104.0},
            "rate limited (429), retrying in 4 s, attempt 2 of 6",
        ),
        (
            "copilot_retry",
            {"reason": "503", "attempt": 2, "max_attempts": 6, "wait_s": 2.0},
            "server error (503), retrying in 2 s, attempt 3 of 6",
        ),
        (
            "copilot_retry",
            {"reason": "408", "attempt": 1, "max_attempts": 6, "next_attempt_at": 100.2},
            "HTTP 408, retrying now, attempt 2 of 6",
        ),
        (
            "token_refresh_retry",
            {"reason": "timeout", "attempt": 1, "max_attempts": 6, "wait_s": 1},
            "token refresh timed out, retrying in 1 s, attempt 2 of 6",
        ),
        (
            "copilot_retry",
            {"reason": "connection", "attempt": 3},
            "connection failed, retrying now, attempt 4 of ?",
        ),
        (
            "copilot_retry",
            {"reason": "parse_error", "wait_s": 0.6},
            "failed (parse_error), retrying in 1 s, attempt ? of ?",
        ),
        ("copilot_retry", {}, "failed, retrying now, attempt ? of ?"),
    ],
)
def test_describe_retry(event: str, context: dict[str, Any], line: str) -> None:
    assert describe_retry(event, context, now=100.0) == line


def test_progress_view_counts_down_and_clears() -> None:
    display, clock = Recorder(), Clock()
    view = ProgressView(display, clock=clock)
    view.clear()  # nothing shown yet: no output created
    view.tick()
    assert display.calls == []
    assert not view.active
    context = {"reason": "429", "attempt": 1, "max_attempts": 6, "next_attempt_at": 103.0}
    view.retry("copilot_retry", context)
    assert view.active
    view.tick()  # same second: no redraw
    clock.now += 1.0
    view.tick()
    view.clear()
    assert not view.active
    assert [bundle["text/plain"] for _, bundle in display.calls] == [
        "rate limited (429), retrying in 3 s, attempt 2 of 6",
        "rate limited (429), retrying in 2 s, attempt 2 of 6",
        "",
    ]
    assert view.history == [
        "rate limited (429), retrying in 3 s, attempt 2 of 6",
        "rate limited (429), retrying in 2 s, attempt 2 of 6",
    ]
