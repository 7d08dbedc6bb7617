"""Safe prompt interpolation: ``{name}``, ``{In[3]}``, ``{Out[3]}``, ``{Err[3]}`` and nothing else.

``str.format_map`` over the user namespace breaks on any brace in code, JSON or a dict
comprehension, and can leak attributes through format specs (jupyter-ai #27, #967). Here a brace
pair is replaced only when its whole content is

* a Python identifier (``str.isidentifier``, so ``{café}`` too) bound in the user namespace
  (``{name}`` -> ``str(value)``; an ``AIResult`` gives its ``response_text``), or
* ``In[n]``, ``Out[n]`` or ``Err[n]`` with a non-negative integer ``n`` that the shell recorded
  (``In[n]`` is the cell as typed, from the history's raw inputs, not IPython's transformed
  source).

Everything else is left exactly as typed, byte for byte: ``{x + 1}``, ``{"a": 1}``,
``{k: v for k, v in d.items()}``, ``{name!r}``, ``{name:>10}``, an unknown ``{name}``, and any
reference wrapped in doubled braces (``{{name}}`` is an escape: it stays ``{{name}}``).
Nothing is ever evaluated. A value whose ``str()`` raises fails the cell with one line
(``cannot insert {b}: ValueError: boom``) instead of a traceback.

IPython keeps ``In`` and ``Out`` but no ``Err``: :class:`ErrorLog` remembers, per execution
count, the exception each cell raised (from the ``post_run_cell`` event's ``ExecutionResult``),
as ``"ExceptionType: message"``, from the moment the extension is loaded.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .failure import CopilotError

__all__ = ["ErrorLog", "Interpolation", "interpolate"]

# Any brace-free word is a candidate name; str.isidentifier() decides (Unicode names included).
_REFERENCE = re.compile(r"\{(?:(?P<hist>In|Out|Err)\[(?P<index>\d+)\]|(?P<name>[^{}\[\]\s]+))\}")


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


def _as_text(value: object, reference: str) -> str:
    from saga_magic.core.types import AIResult

    if isinstance(value, AIResult):
        return value.response_text
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception as error:  # a broken __str__ is the user's object, not our bug
        raise CopilotError(
            f"cannot insert {{{reference}}}: {type(error).__name__}: {error}"
        ) from error


def _history_value(
    kind: str,
    index: int,
    namespace: Mapping[str, Any],
    errors: ErrorLog | None,
    inputs: Sequence[str] | None,
) -> str | None:
    if kind == "Err":
        return errors.get(index) if errors is not None else None
    if kind == "In":
        source = inputs if inputs is not None else namespace.get("In")
        if isinstance(source, Sequence) and not isinstance(source, str) and 0 < index < len(source):
            return str(source[index])
        return None
    source = namespace.get(kind)
    if isinstance(source, Mapping) and index in source:
        return _as_text(source[index], f"{kind}[{index}]")
    return None


def interpolate(
    template: str,
    namespace: Mapping[str, Any],
    *,
    errors: ErrorLog | None = None,
    inputs: Sequence[str] | None = None,
) -> Interpolation:
    """Replace known ``{...}`` references in ``template``; leave every other brace as typed.

    Args:
        template: The cell body.
        namespace: The user namespace (``shell.user_ns``), holding ``In`` and ``Out``.
        errors: Errors of earlier cells, for ``{Err[n]}``.
        inputs: The cells as typed (``history_manager.input_hist_raw``), for ``{In[n]}``;
            the namespace's ``In`` (IPython's transformed source) when omitted.

    Returns:
        The interpolated text and what was (and was not) replaced.

    Raises:
        CopilotError: a referenced value's ``str()`` raised.
    """
    replaced: list[str] = []
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        start, end = match.span()
        if template[start - 1 : start] == "{" and template[end : end + 1] == "}":
            return match.group(0)  # {{name}}: an escape, kept as typed
        name = match.group("name")
        if name is not None:
            if name.isidentifier() and name in namespace:
                text = _as_text(namespace[name], name)
                replaced.append(name)
                return text
            return match.group(0)
        kind, index = match.group("hist"), int(match.group("index"))
        reference = f"{kind}[{index}]"
        value = _history_value(kind, index, namespace, errors, inputs)
        if value is None:
            missing.append(reference)
            return match.group(0)
        replaced.append(reference)
        return value

    result = _REFERENCE.sub(substitute, template)
    return Interpolation(text=result, replaced=tuple(replaced), missing=tuple(missing))
