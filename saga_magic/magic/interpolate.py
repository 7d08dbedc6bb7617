"""Safe prompt interpolation: ``{name}``, ``{In[3]}``, ``{Out[3]}``, ``{Err[3]}`` and nothing else.

``str.format_map`` over the user namespace breaks on any brace in code, JSON or a dict
comprehension, and can leak attributes through format specs (jupyter-ai #27, #967). Here a brace
pair is replaced only when its whole content is

* a Python identifier bound in the user namespace (``{name}`` -> ``str(value)``; an ``AIResult``
  gives its ``response_text``), or
* ``In[n]``, ``Out[n]`` or ``Err[n]`` with a non-negative integer ``n`` that the shell recorded.

Everything else is left exactly as typed, byte for byte: ``{x + 1}``, ``{"a": 1}``,
``{k: v for k, v in d.items()}``, ``{name!r}``, ``{name:>10}``, an unknown ``{name}``, and any
reference wrapped in doubled braces (``{{name}}`` is an escape: it stays ``{{name}}``).
Nothing is ever evaluated.

IPython keeps ``In`` and ``Out`` but no ``Err``: :class:`ErrorLog` remembers, per execution
count, the exception each cell raised (from the ``post_run_cell`` event's ``ExecutionResult``),
as ``"ExceptionType: message"``, from the moment the extension is loaded.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ErrorLog", "Interpolation", "interpolate"]

_REFERENCE = re.compile(
    r"\{(?:(?P<hist>In|Out|Err)\[(?P<index>\d+)\]|(?P<name>[A-Za-z_][A-Za-z0-9_]*))\}"
)


class ErrorLog:
    """Exceptions raised by earlier cells, keyed by execution count (bounded).

    Args:
        limit: How many cells' errors to remember.
    """

    def __init__(self, *, limit: int = 1000) -> None:
        self._limit = limit
        self._errors: OrderedDict[int, str] = OrderedDict()

    def record(self, execution_count: int | None, error: BaseException | None) -> None:
        """Remember ``error`` as the error of cell ``execution_count`` (ignored if either is None).

        Args:
            execution_count: The cell's number (``In[n]``).
            error: The exception the cell raised.
        """
        if execution_count is None or error is None:
            return
        message = getattr(error, "line", None) or str(error)
        self._errors[execution_count] = f"{type(error).__name__}: {message}".rstrip(": ")
        while len(self._errors) > self._limit:
            self._errors.popitem(last=False)

    def on_post_run_cell(self, result: Any) -> None:
        """IPython ``post_run_cell`` callback: record the cell's error, if any.

        Args:
            result: IPython's ``ExecutionResult``.
        """
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        self.record(getattr(result, "execution_count", None), error)

    def get(self, execution_count: int) -> str | None:
        """Return the recorded error text of a cell.

        Args:
            execution_count: The cell's number.

        Returns:
            ``"Type: message"``, or ``None`` when that cell raised nothing (or before loading).
        """
        return self._errors.get(execution_count)


@dataclass(frozen=True, slots=True)
class Interpolation:
    """The outcome of :func:`interpolate`."""

    text: str
    """The prompt with the references replaced."""
    replaced: tuple[str, ...]
    """References that were replaced, in order (e.g. ``name``, ``Out[3]``)."""
    missing: tuple[str, ...]
    """``In``/``Out``/``Err`` references to cells with nothing recorded (left as typed)."""


def _as_text(value: object) -> str:
    response = getattr(value, "response_text", None)
    if isinstance(response, str) and type(value).__name__ == "AIResult":
        return response
    return value if isinstance(value, str) else str(value)


def _history_value(
    kind: str, index: int, namespace: Mapping[str, Any], errors: ErrorLog | None
) -> str | None:
    if kind == "Err":
        return errors.get(index) if errors is not None else None
    source = namespace.get(kind)
    if kind == "In":
        if isinstance(source, list) and 0 < index < len(source):
            return str(source[index])
        return None
    if isinstance(source, Mapping) and index in source:
        return _as_text(source[index])
    return None


def interpolate(
    template: str, namespace: Mapping[str, Any], *, errors: ErrorLog | None = None
) -> Interpolation:
    """Replace known ``{...}`` references in ``template``; leave every other brace as typed.

    Args:
        template: The cell body.
        namespace: The user namespace (``shell.user_ns``), holding ``In`` and ``Out``.
        errors: Errors of earlier cells, for ``{Err[n]}``.

    Returns:
        The interpolated text and what was (and was not) replaced.
    """
    replaced: list[str] = []
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        start, end = match.span()
        if template[start - 1 : start] == "{" and template[end : end + 1] == "}":
            return match.group(0)  # {{name}}: an escape, kept as typed
        name = match.group("name")
        if name is not None:
            if name in namespace:
                replaced.append(name)
                return _as_text(namespace[name])
            return match.group(0)
        kind, index = match.group("hist"), int(match.group("index"))
        reference = f"{kind}[{index}]"
        value = _history_value(kind, index, namespace, errors)
        if value is None:
            missing.append(reference)
            return match.group(0)
        replaced.append(reference)
        return value

    text = _REFERENCE.sub(substitute, template)
    return Interpolation(text=text, replaced=tuple(replaced), missing=tuple(missing))
