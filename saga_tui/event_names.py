"""The core's event names as the TUI reads them: one source of truth for every panel.

The core documents its event names as a stable API but exports no list of them, so the TUI keeps
the list here, once: the filter bar offers :data:`KNOWN_EVENTS` before any event arrives, the
Retries panel follows :func:`retry_kind` and :data:`TERMINAL_EVENTS`, and the app re-reads the
token store after any of :data:`TOKEN_EVENTS`. A retry event is recognised by its ``_retry``
suffix, so a retry event added to the core later (as ``device_code_retry`` was) shows up too.
"""

from __future__ import annotations

__all__ = [
    "KNOWN_EVENTS",
    "RETRY_KINDS",
    "TERMINAL_EVENTS",
    "TOKEN_EVENTS",
    "ends_operation",
    "retry_kind",
]

RETRY_KINDS: dict[str, str] = dict(
    zip(
        ("token_refresh_retry", "copilot_retry", "device_code_retry"),
        ("token refresh", "chat request", "device code"),
        strict=True,
    )
)
"""Retry event name -> what kind of operation it belongs to (other ``*_retry`` names get a kind
made from their prefix)."""

_SUCCEEDED = (
    "token_refresh_success",
    "copilot_request_complete",
    "copilot_stream_complete",
    "device_code_issued",
    "login_complete",
)
_FAILED = (
    "token_refresh_failed_auth",
    "token_refresh_failed",
    "token_persistence_failed",
    "copilot_error",
    "copilot_auth_failed",
    "login_failed",
)
TERMINAL_EVENTS: dict[str, bool] = dict.fromkeys(_SUCCEEDED, True) | dict.fromkeys(_FAILED, False)
"""Event names that end an operation -> whether it succeeded."""

_NOT_TERMINAL_CODES = frozenset({"lease_lost"})
"""``code`` values of a failure event that does not end the operation: ``lease_lost`` means another
process took the refresh over and this one now waits for it."""

TOKEN_EVENTS: frozenset[str] = frozenset(
    {
        "token_stored",
        "token_refresh_success",
        "token_refresh_failed_auth",
        "token_persistence_failed",
        "login_complete",
        "logout",
    }
)
"""Events after which the token store has changed (the Tokens panel re-reads it)."""

KNOWN_EVENTS: tuple[str, ...] = tuple(
    sorted(
        {
            *RETRY_KINDS,
            *TERMINAL_EVENTS,
            *TOKEN_EVENTS,
            "copilot_empty_response",
            "copilot_parse_error",
            "copilot_request_adapted",
            "copilot_request_start",
            "copilot_stream_start",
            "device_code_poll",
            "engine_closed",
            "token_refresh_start",
        }
    )
)
"""The core's stable event names, sorted: offered in the event filter from the start."""


def retry_kind(name: str) -> str | None:
    """Tell whether an event is a retry event, and of what kind of operation.

    Args:
        name: The event name.

    Returns:
        ``"token refresh"``, ``"chat request"``, ``"device code"``, a kind made from the prefix of
        any other ``*_retry`` name (``"foo bar"`` for ``foo_bar_retry``), or ``None``.
    """
    kind = RETRY_KINDS.get(name)
    if kind is not None:
        return kind
    if name.endswith("_retry") and len(name) > len("_retry"):
        return name.removesuffix("_retry").replace("_", " ")
    return None


def ends_operation(name: str, code: object = None) -> bool | None:
    """Tell whether an event ends its operation, and how.

    Args:
        name: The event name.
        code: The event's ``code`` context value, if any.

    Returns:
        True (succeeded), False (failed) or ``None`` (the operation goes on).
    """
    outcome = TERMINAL_EVENTS.get(name)
    if outcome is False and code in _NOT_TERMINAL_CODES:
        return None
    return outcome
