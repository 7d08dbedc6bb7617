"""The events filter: minimum level, event name, user and free text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga_magic.core.events import Event

__all__ = ["LEVELS", "EventFilter", "level_rank", "render_value"]

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Level names, lowest first."""

_RANK = {name: index for index, name in enumerate(LEVELS)}
_FIELD = re.compile(r"^([a-z_][a-z0-9_]*)=(.*)$")


def render_value(value: Any) -> str:
    """Render a context value the way the Events panel shows it after ``key=``.

    Args:
        value: A JSON-safe value.

    Returns:
        Floats without trailing zeros, strings as they are (quoted when they hold a space),
        anything else as compact JSON.
    """
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, str):
        return value if " " not in value else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def level_rank(level: str) -> int:
    """Order a level name (unknown names rank with INFO).

    Args:
        level: A level name such as ``"WARNING"``.

    Returns:
        Its position in :data:`LEVELS`.
    """
    return _RANK.get(level.upper(), _RANK["INFO"])


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN never equals anything


def _equals(value: Any, wanted: str) -> bool:
    """Whether a field's value is ``wanted`` (lower-case text from the filter)."""
    if isinstance(value, bool) or value is None:
        return render_value(value) == wanted
    if isinstance(value, int | float):
        number = _number(wanted)
        return number is not None and float(value) == number
    if isinstance(value, str):
        return value.lower() == wanted
    return render_value(value).lower() == wanted


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events the Events panel shows (and exports)."""

    level: str | None = None
    """Minimum level (``"WARNING"`` shows warnings and errors); ``None`` for all."""
    event: str | None = None
    """Exact event name; ``None`` for all."""
    user: str | None = None
    """Exact user id; ``None`` for all."""
    text: str = ""
    """Case-insensitive substring of the event name, user, op id or context JSON; or
    ``key=value``: the field (``level``, ``event``, ``user_id``, ``op_id`` or a context key such
    as ``reason``, ``status``, ``n``) equals ``value`` (case-insensitive; numbers compare as
    numbers, so ``wait_s=2`` matches ``2.0``; quotes around ``value`` are optional)."""
    _needle: str = field(init=False, repr=False, compare=False, default="")
    _field: tuple[str, str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        needle = self.text.strip().lower()
        object.__setattr__(self, "_needle", needle)
        found = _FIELD.match(needle)
        if found is not None:
            object.__setattr__(self, "_field", (found.group(1), found.group(2)))

    @property
    def is_empty(self) -> bool:
        """True when the filter lets every event through."""
        return self.level is None and self.event is None and self.user is None and not self._needle

    def replace(self, **changes: object) -> EventFilter:
        """Return a copy with some fields changed.

        Args:
            **changes: Field names and their new values.

        Returns:
            The new filter.
        """
        return replace(self, **changes)  # type: ignore[arg-type]

    def matches(self, event: Event) -> bool:
        """Tell whether ``event`` passes the filter.

        Args:
            event: The event to test.

        Returns:
            True when it should be shown.
        """
        if self.level is not None and level_rank(event.level) < level_rank(self.level):
            return False
        if self.event is not None and event.event != self.event:
            return False
        if self.user is not None and event.user_id != self.user:
            return False
        if not self._needle:
            return True
        if self._field is not None:
            return self._field_matches(event, *self._field)
        head = f"{event.event}\n{event.user_id or ''}\n{event.op_id or ''}".lower()
        if self._needle in head:
            return True
        body = json.dumps(event.context, separators=(",", ":"), ensure_ascii=False, default=str)
        return self._needle in body.lower()

    @staticmethod
    def _field_matches(event: Event, key: str, wanted: str) -> bool:
        top = {"event": event.event, "user_id": event.user_id, "op_id": event.op_id}
        if key in top or key == "level":
            value: Any = event.level if key == "level" else top[key]
        elif key in event.context:
            value = event.context[key]
        else:
            return False
        return value is not None and _equals(value, _unquote(wanted))

    def query_kwargs(self) -> dict[str, Any]:
        """Express the filter as keyword arguments of ``JournalReader.query`` (SQL-side filtering).

        Returns:
            ``levels``, ``events``, ``user_id`` and ``text`` as the journal expects them.
        """
        levels = None if self.level is None else LEVELS[level_rank(self.level) :]
        return {
            "levels": levels,
            "events": None if self.event is None else (self.event,),
            "user_id": self.user,
            "text": self._sql_text(),
        }

    def _sql_text(self) -> str | None:
        """What SQL can pre-filter on; :meth:`matches` has the last word (see ``read_history``).

        The journal stores the context as compact JSON, so ``reason=timeout`` narrows to rows
        holding ``"reason":"timeout``, and ``n=12345`` to rows holding ``12345`` anywhere (which
        ``n=912345`` also does: the exact check is :meth:`matches`).
        """
        if self._field is None:
            return self.text.strip() or None
        key, wanted = self._field
        wanted = _unquote(wanted)
        if key in ("event", "user_id", "op_id"):
            return wanted or None
        if key == "level":
            return None
        if not wanted or '"' in wanted or "\\" in wanted:
            return f'"{key}":'
        number = _number(wanted)
        if number is not None:  # stored as a number or as a string ("429"): find the digits
            return str(int(number)) if number.is_integer() and abs(number) < 1e15 else wanted
        if wanted in ("true", "false", "null"):
            return f'"{key}":{wanted}'
        return f'"{key}":"{wanted}'

    @property
    def needs_recheck(self) -> bool:
        """True when SQL only narrows the rows and :meth:`matches` must confirm each one."""
        return self._field is not None

    def describe(self) -> str:
        """Summarise the filter for the status line and notifications.

        Returns:
            ``"all events"`` or e.g. ``"level>=WARNING · user=alice · text='429'"``.
        """
        parts: list[str] = []
        if self.level is not None:
            parts.append(f"level>={self.level}")
        if self.event is not None:
            parts.append(f"event={self.event}")
        if self.user is not None:
            parts.append(f"user={self.user}")
        if self._needle:
            parts.append(f"text={self.text.strip()!r}")
        return " · ".join(parts) if parts else "all events"
