"""Script entries: the parser and :class:`Outcome` (the catalogue itself is :mod:`.catalogue`).

A *script* is a per-endpoint queue of outcomes, consumed one per request (attempt). An outcome is
``"ok"`` (the normal answer) or a fault from :data:`CATALOGUE`, written as a string
(``"429:retry_after=1.5,delay_ms=50"``, ``"slow_headers:0.2"``, ``"loop_detect:3/10"``) or as a
mapping (``{"fault": "429_both", "delay_ms": 50}``). Positional arguments follow the declared
parameter order; ``delay_ms`` (every fault accepts it) delays the answer before anything is sent.

The string form splits its arguments on ``,`` (and positional ones on ``/``), so a value that
contains a comma, such as a literal HTTP-date, needs the mapping form:
``{"fault": "429", "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"}``; for a date relative to now,
``"429:http_date=3"`` (now + 3 s) or ``"429_http_date:3"``.

Kinds of faults (:class:`FaultKind`) and the per-grant faults of the token endpoint are described
in :mod:`saga_magic.sandbox.catalogue`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .catalogue import (
    CATALOGUE,
    CHAT,
    DEVICECODE,
    ENDPOINTS,
    TOKEN,
    FaultKind,
    FaultSpec,
    Param,
    ParamValue,
    check_endpoint,
    fault_names,
    resolve_alias,
)

__all__ = [
    "CATALOGUE",
    "CHAT",
    "DEVICECODE",
    "ENDPOINTS",
    "TOKEN",
    "FaultKind",
    "FaultSpec",
    "Outcome",
    "Param",
    "fault_names",
    "parse_outcome",
]


@dataclass(frozen=True)
class Outcome:
    """One parsed script entry: a fault name with its parameters and delay."""

    fault: str
    """Canonical fault name (``"ok"`` for the normal answer)."""
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    """Parameters given explicitly (defaults are resolved by the accessors)."""
    delay: float = 0.0
    """Seconds to wait before answering (from ``delay_ms``)."""

    @property
    def spec(self) -> FaultSpec:
        """The catalogue entry of this outcome."""
        return CATALOGUE[self.fault]

    def _value(self, name: str) -> ParamValue | None:
        if name in self.params:
            return self.params[name]
        for param in self.spec.params:
            if param.name == name:
                return param.default
        raise KeyError(name)

    def number(self, name: str) -> float:
        """Return a numeric parameter (given or default) as a float.

        Raises:
            KeyError: the fault has no such parameter, or it is absent.
        """
        value = self._value(name)
        if value is None or isinstance(value, str):
            raise KeyError(name)
        return float(value)

    def optional_number(self, name: str) -> float | None:
        """Return a numeric parameter, or ``None`` when it is absent."""
        value = self._value(name)
        return None if value is None or isinstance(value, str) else float(value)

    def integer(self, name: str) -> int:
        """Return an integer parameter (given or default)."""
        return int(self.number(name))

    def text(self, name: str) -> str:
        """Return a parameter as text (given or default).

        Raises:
            KeyError: the fault has no such parameter, or it is absent.
        """
        value = self._value(name)
        if value is None:
            raise KeyError(name)
        return str(value)

    def describe(self) -> str:
        """Return the outcome in script-string form, e.g. ``"429:retry_after=1.5,delay_ms=50"``."""
        args = [f"{key}={value}" for key, value in self.params.items()]
        if self.delay:
            args.append(f"delay_ms={self.delay * 1000:g}")
        return self.fault + (":" + ",".join(args) if args else "")


def _convert(param: Param, raw: object, fault: str) -> ParamValue:
    where = f"fault {fault!r} parameter {param.name!r}"
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"{where}: expected a {param.type}, got {raw!r}")
    if param.type == "str":
        return str(raw)
    try:
        number: float | int = int(raw) if param.type == "int" else float(raw)
    except ValueError:
        raise ValueError(f"{where}: expected a {param.type}, got {raw!r}") from None
    if not math.isfinite(number) or (number < 0 and not param.signed):
        raise ValueError(f"{where}: expected a finite non-negative number, got {raw!r}")
    if param.choices and number not in param.choices:
        allowed = " or ".join(str(c) for c in param.choices)
        raise ValueError(f"{where}: expected {allowed}, got {raw!r}")
    return number


def _delay(raw: object, fault: str) -> float:
    value = _convert(Param("delay_ms", "float"), raw, fault)
    return float(value) / 1000.0


def _split_string(entry: str) -> tuple[str, list[str], dict[str, str]]:
    name, _, argtext = entry.strip().partition(":")
    positional: list[str] = []
    keywords: dict[str, str] = {}
    if argtext.strip():
        for item in (part.strip() for part in argtext.split(",")):
            key, eq, value = item.partition("=")
            if eq:
                keywords[key.strip()] = value.strip()
            else:
                positional.extend(p.strip() for p in re.split(r"/", item))
    return name.strip(), positional, keywords


def parse_outcome(entry: str | Mapping[str, object], endpoint: str) -> Outcome:
    """Parse one script entry for an endpoint.

    Args:
        entry: ``"name[:arg,key=value,...]"`` or ``{"fault": name, "delay_ms": ..., **params}``.
        endpoint: ``"chat"``, ``"token"`` or ``"devicecode"``.

    Returns:
        The outcome with canonical name, typed parameters and delay in seconds.

    Raises:
        ValueError: unknown endpoint or fault, a fault that does not apply to the endpoint, or a
            bad parameter.
    """
    check_endpoint(endpoint)
    raw_keywords: dict[str, object]
    if isinstance(entry, str):
        name, positional, str_keywords = _split_string(entry)
        raw_keywords = dict(str_keywords)
    elif isinstance(entry, Mapping):
        fields = dict(entry)
        name_obj = fields.pop("fault", None)
        if not isinstance(name_obj, str):
            raise ValueError(f"script entry {entry!r} needs a 'fault' string")
        name, positional, raw_keywords = name_obj.strip(), [], fields
    else:
        raise ValueError(f"script entry must be a string or a mapping, got {entry!r}")
    name, presets = resolve_alias(name, endpoint)
    spec = CATALOGUE.get(name)
    if spec is None:
        raise ValueError(
            f"unknown fault {name!r} for endpoint {endpoint!r}; known: "
            + ", ".join(fault_names(endpoint))
        )
    if endpoint not in spec.endpoints:
        raise ValueError(
            f"fault {name!r} does not apply to endpoint {endpoint!r} "
            f"(it applies to: {', '.join(sorted(spec.endpoints))})"
        )
    delay = _delay(raw_keywords.pop("delay_ms"), name) if "delay_ms" in raw_keywords else 0.0
    if len(positional) > len(spec.params):
        raise ValueError(f"fault {name!r} takes at most {len(spec.params)} argument(s)")
    declared = {p.name: p for p in spec.params}
    params: dict[str, ParamValue] = dict(presets)
    for param, raw in zip(spec.params, positional, strict=False):
        params[param.name] = _convert(param, raw, name)
    for key, value in raw_keywords.items():
        if key not in declared:
            known = ", ".join(declared) or "none"
            raise ValueError(f"fault {name!r} has no parameter {key!r} (parameters: {known})")
        params[key] = _convert(declared[key], value, name)
    return Outcome(name, params, delay)
