"""Safe interpolation: only known names and In/Out/Err references; every other brace as typed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from saga_magic.core.types import AIProvider, AIResult, TokenUsage
from saga_magic.magic.failure import CopilotError
from saga_magic.magic.interpolate import ErrorLog, interpolate


def _ns() -> dict[str, Any]:
    return {
        "name": "Ada",
        "n": 42,
        "items": [1, 2],
        "In": ["", "x = 1", "print(x)", "%%copilot\nhi"],
        "Out": {2: "two", 5: {"k": 1}},
        "_copilot": AIResult(
            response_text="earlier answer",
            finish_reason="stop",
            usage=TokenUsage(),
            provider=AIProvider.COPILOT_CHAT,
            task_id="t",
            latency_ms=1.0,
        ),
    }


def _errors() -> ErrorLog:
    log = ErrorLog()
    log.record(4, ZeroDivisionError("division by zero"))
    return log


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("hello {name}", "hello Ada"),
        ("{n} and {n}", "42 and 42"),
        ("list {items}", "list [1, 2]"),
        ("cell {In[1]}", "cell x = 1"),
        ("out {Out[2]}", "out two"),
        ("out {Out[5]}", "out {'k': 1}"),
        ("err {Err[4]}", "err ZeroDivisionError: division by zero"),
        ("prev {_copilot}", "prev earlier answer"),
        # left exactly as typed
        ("unknown {nobody}", "unknown {nobody}"),
        ("expr {n + 1}", "expr {n + 1}"),
        ("attr {name.upper}", "attr {name.upper}"),
        ("index {items[0]}", "index {items[0]}"),
        ("conv {name!r}", "conv {name!r}"),
        ("spec {name:>10}", "spec {name:>10}"),
        ("escaped {{name}}", "escaped {{name}}"),
        ("open {{ and close }}", "open {{ and close }}"),
        ("lone { brace", "lone { brace"),
        ("lone } brace", "lone } brace"),
        ("empty {}", "empty {}"),
        ('json {"a": {name}}', 'json {"a": Ada}'),
        ('json {"a": 1, "b": [1, 2]}', 'json {"a": 1, "b": [1, 2]}'),
        ("dict {k: v for k, v in d.items()}", "dict {k: v for k, v in d.items()}"),
        ("set {1, 2}", "set {1, 2}"),
        ("code def f():\n    return {'x': 1}\n", "code def f():\n    return {'x': 1}\n"),
        ("f-string f'{name}'", "f-string f'Ada'"),
        ("spaces { name }", "spaces { name }"),
        ("negative {In[-1]}", "negative {In[-1]}"),
        ("missing {Out[9]}", "missing {Out[9]}"),
        ("missing {In[99]}", "missing {In[99]}"),
        ("zero {In[0]}", "zero {In[0]}"),
        ("missing {Err[1]}", "missing {Err[1]}"),
        ("format {0} {}", "format {0} {}"),
        ("dunder {__import__}", "dunder {__import__}"),
        ("unicode {naïve}", "unicode {naïve}"),
        ("percent %(name)s", "percent %(name)s"),
        ("dollar ${name}", "dollar $Ada"),
    ],
)
def test_table(template: str, expected: str) -> None:
    assert interpolate(template, _ns(), errors=_errors()).text == expected


def test_reports_replaced_and_missing() -> None:
    result = interpolate("{name} {Out[2]} {Out[9]} {Err[3]} {zzz}", _ns(), errors=_errors())
    assert result.replaced == ("name", "Out[2]")
    assert result.missing == ("Out[9]", "Err[3]")


def test_never_evaluates() -> None:
    calls: list[str] = []

    class Loud:
        def __format__(self, spec: str) -> str:  # pragma: no cover - must not run
            calls.append("format")
            return "boom"

    ns = {"obj": Loud()}
    assert interpolate("{obj.__class__} {obj:spec}", ns).text == "{obj.__class__} {obj:spec}"
    assert calls == []


def test_err_without_log_and_odd_namespaces() -> None:
    assert interpolate("{Err[4]}", _ns()).text == "{Err[4]}"
    assert interpolate("{In[1]} {Out[1]}", {"In": "nope", "Out": []}).text == "{In[1]} {Out[1]}"


def test_error_log_records_post_run_cell_results() -> None:
    log = ErrorLog(limit=2)
    log.on_post_run_cell(
        SimpleNamespace(execution_count=1, error_in_exec=ValueError("bad"), error_before_exec=None)
    )
    log.on_post_run_cell(
        SimpleNamespace(
            execution_count=2, error_in_exec=None, error_before_exec=SyntaxError("oops")
        )
    )
    log.on_post_run_cell(
        SimpleNamespace(execution_count=3, error_in_exec=None, error_before_exec=None)
    )
    assert log.get(1) == "ValueError: bad"
    assert log.get(2) == "SyntaxError: oops"
    assert log.get(3) is None
    log.record(None, ValueError("x"))
    log.record(4, KeyError())
    assert log.get(4) == "KeyError"
    assert log.get(1) is None  # bounded: the oldest went


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{{name}}}", "{{{name}}}"),
        ("{{name}", "{Ada"),
        ("{name}}", "Ada}"),
        ("{{In[1]}}", "{{In[1]}}"),
    ],
)
def test_doubled_braces_escape_only_when_both_sides(template: str, expected: str) -> None:
    assert interpolate(template, _ns()).text == expected


def test_unicode_identifiers_are_names_too() -> None:
    ns = {"naïve": "yes", "café": 3, "名前": "Ada", "x1": 1}
    result = interpolate("{naïve} {café} {名前} {x1} {1x} {a-b} {é.x}", ns)
    assert result.text == "yes 3 Ada 1 {1x} {a-b} {é.x}"
    assert result.replaced == ("naïve", "café", "名前", "x1")


def test_a_value_whose_str_raises_is_one_line() -> None:
    class Broken:
        def __str__(self) -> str:
            raise ValueError("boom")

    with pytest.raises(CopilotError) as caught:
        interpolate("look at {b}", {"b": Broken()})
    assert caught.value.line == "cannot insert {b}: ValueError: boom"
    with pytest.raises(CopilotError, match=r"cannot insert \{Out\[2\]\}: ValueError: boom"):
        interpolate("{Out[2]}", {"Out": {2: Broken()}})


def test_in_uses_the_raw_inputs_when_given() -> None:
    ns = {"In": ["", "get_ipython().run_line_magic('time', 'x = 1')"]}
    assert interpolate("{In[1]}", ns).text == "get_ipython().run_line_magic('time', 'x = 1')"
    assert interpolate("{In[1]}", ns, inputs=["", "%time x = 1"]).text == "%time x = 1"
    assert interpolate("{In[2]}", ns, inputs=["", "%time x = 1"]).missing == ("In[2]",)
