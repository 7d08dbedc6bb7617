"""Structured events: ``log_with_context``, redaction, the in-process bus and the journal sink.

``log_with_context(logger, level, event, **context)`` is the only way the core logs. It builds one
:class:`Event` (ts, level, event, user_id, op_id, pid, redacted JSON-safe context) and sends it to

1. stdlib logging (the given logger; message ``"event k=v ..."``; the Event rides on the record as
   ``record.saga_event``),
2. in-process subscribers (:func:`subscribe`), called synchronously in the emitting thread,
3. the installed journal (:func:`install_journal`), which only queues it.

When none of the three is listening it returns at once without redacting anything.

Redaction (:func:`redact`, :func:`redact_context`, :func:`scrub_text`):

* by key, case-insensitive, camelCase or snake_case: access/refresh/id tokens, client secret,
  ``secret``, device code, authorization, password, assertion, api key, cookie, code verifier,
  encryption/private keys -> ``"[REDACTED]"``; a key with the word ``token`` (``token``,
  ``rejected_token``, ``csrfToken``) when its value is a string. Counters (``prompt_tokens``,
  ``max_tokens``, ``tokens_used``) and ``token_type`` / ``token_status`` are not secrets. A key
  with the plural ``tokens`` (``tokens``, ``bearer_tokens``) hides every string that is not a
  number, in lists too: ``tokens=["AT1", "AT2"]`` is redacted, ``prompt_tokens="12"`` is kept.
* by shape, also inside longer strings: JWT-like ``eyJ...``.``...``.``...``, ``Bearer xxx`` /
  ``Basic xxx``, and ``access_token=...`` / ``"refresh_token": "..."`` pairs in text.
* by value: every exact value handed to :func:`register_secret` (opaque tokens the auth manager
  handles), wherever it appears in a string.
* every string is cut to 200 characters (199 + ``"…"``); lists and dicts to 50 items; nesting to
  6 levels. Paths become strings, exceptions ``"TypeName: message"``, other objects ``str()``.

:func:`safe_text` is the one helper the HTTP boundaries (chat and Entra ID) use to put server or
transport text into an exception message: it also redacts given values and long random-looking
runs, collapses whitespace and cuts to a caller-chosen length.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .journal import Event, EventJournal, JournalReader, JournalRow, JournalStats

__all__ = [
    "MAX_STRING",
    "REDACTED",
    "Event",
    "EventJournal",
    "JournalReader",
    "JournalRow",
    "JournalStats",
    "forget_secret",
    "get_journal",
    "install_journal",
    "log_with_context",
    "new_op_id",
    "redact",
    "redact_context",
    "register_secret",
    "reset_for_tests",
    "safe_text",
    "scrub_text",
    "subscribe",
    "subscriber_errors",
]

REDACTED = "[REDACTED]"
"""What a redacted value becomes."""
MAX_STRING = 200
"""Longest string kept in an event; longer ones are cut to 199 characters plus ``"…"``."""
_MAX_ITEMS = 50
_MAX_DEPTH = 6
_MIN_SECRET = 16
_MAX_SECRETS = 4096
_PREFIX = 8

# -- redaction by key ---------------------------------------------------------------------------

_ALWAYS, _IF_STRING, _IF_NOT_NUMBER, _PLAIN = 3, 2, 1, 0
_SECRET_PHRASES = (
    ("access", "token"),
    ("refresh", "token"),
    ("id", "token"),
    ("client", "secret"),
    ("device", "code"),
    ("code", "verifier"),
    ("client", "assertion"),
    ("api", "key"),
    ("private", "key"),
    ("encryption", "key"),
    ("signing", "key"),
)
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "passwords", "passwd", "pwd", "authorization", "assertion"}
    | {"apikey", "cookie", "cookies", "accesstoken", "refreshtoken", "idtoken", "devicecode"}
    | {"codeverifier", "clientassertion", "privatekey", "passphrase"}
)
_SECRET_SUFFIXES = ("secret", "password", "authorization", "cookie")
_TOKEN_DESCRIPTORS = frozenset(
    {"type", "types", "status", "endpoint", "url", "uri", "version", "source", "kind", "state"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=2048)
def _key_kind(key: str) -> int:
    words = [w for w in _NON_WORD.split(_CAMEL.sub("_", key).lower()) if w]
    for index, word in enumerate(words):
        if word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            return _ALWAYS
        for first, second in _SECRET_PHRASES:
            if (
                word == first
                and index + 1 < len(words)
                and words[index + 1] in (second, second + "s")
            ):
                return _ALWAYS
    kind = _PLAIN
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if following in _TOKEN_DESCRIPTORS:
            continue
        if word.endswith("token"):
            return _IF_STRING
        if word.endswith("tokens"):  # token lists, or counters such as prompt_tokens
            kind = _IF_NOT_NUMBER
    return kind


_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")


def _hidden(kind: int, value: object) -> bool:
    if kind == _ALWAYS:
        return True
    if isinstance(value, bytes):
        return kind != _PLAIN
    if isinstance(value, str):
        return kind == _IF_STRING or (kind == _IF_NOT_NUMBER and not _NUMBER.fullmatch(value))
    return False


# -- redaction by shape and by registered value ---------------------------------------------------

_TEXT_KEYS = (
    r"access_token|refresh_token|id_token|client_secret|device_code|code_verifier"
    r"|client_assertion|assertion|password|api[_-]?key|token|authorization"
)
_SHAPES = re.compile(
    r"(?P<jwt>eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2})"
    r"|(?P<scheme>\b(?:Bearer|Basic)\s+)[A-Za-z0-9\-._~+/]+=*(?![A-Za-z0-9\-._~+/=:])"
    rf"|(?P<key>\b(?:{_TEXT_KEYS})\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:Bearer|Basic|Digest|Negotiate|SharedKey)\s+)?[^\s\"'&,;}\]]+",
    re.IGNORECASE,
)


def _shape_sub(match: re.Match[str]) -> str:
    prefix = match.group("scheme") or match.group("key") or ""
    return prefix + REDACTED


class _SecretRegistry:
    """Exact secret values to scrub: bounded, thread-safe, one lazily rebuilt trie regex."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}
        self._matcher: tuple[re.Pattern[str], dict[str, tuple[str, ...]]] | None = None

    def add(self, value: str) -> bool:
        if not isinstance(value, str) or len(value) < _MIN_SECRET:
            return False
        with self._lock:
            self._values.pop(value, None)
            self._values[value] = None
            while len(self._values) > _MAX_SECRETS:
                del self._values[next(iter(self._values))]
            self._matcher = None
        return True

    def discard(self, value: str) -> None:
        with self._lock:
            if self._values.pop(value, 0) is None:
                self._matcher = None

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._matcher = None

    def _build(self) -> tuple[re.Pattern[str], dict[str, tuple[str, ...]]]:
        with self._lock:
            groups: dict[str, list[str]] = {}
            for value in self._values:
                groups.setdefault(value[:_PREFIX], []).append(value)
            by_prefix = {k: tuple(sorted(v, key=len, reverse=True)) for k, v in groups.items()}
            trie: dict[str, Any] = {}
            for prefix in by_prefix:
                node = trie
                for char in prefix:
                    node = node.setdefault(char, {})
            matcher = (re.compile(_trie_pattern(trie)), by_prefix)
            self._matcher = matcher
            return matcher

    def scrub(self, text: str) -> str:
        if not self._values or len(text) < _MIN_SECRET:
            return text
        pattern, by_prefix = self._matcher or self._build()
        parts: list[str] = []
        start = pos = 0
        while (found := pattern.search(text, pos)) is not None:
            at = found.start()
            pos = at + 1
            for value in by_prefix.get(found.group(), ()):
                if text.startswith(value, at):
                    parts += (text[start:at], REDACTED)
                    start = pos = at + len(value)
                    break
        return "".join((*parts, text[start:])) if parts else text


def _trie_pattern(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items())]
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")" if branches else ""


_SECRETS = _SecretRegistry()


def register_secret(value: str) -> bool:
    """Scrub this exact value from every string that reaches an event, from now on.

    The auth manager registers each token, refresh token, device code and client secret it
    handles, so opaque (non-JWT) values are caught inside messages and exception texts too. The
    registry keeps the newest 4096 values; values shorter than 16 characters are ignored (too
    short to be a credential worth matching, too likely to hit ordinary text).

    Args:
        value: The secret.

    Returns:
        True when the value was registered.
    """
    return _SECRETS.add(value)


def forget_secret(value: str) -> None:
    """Stop scrubbing ``value`` (e.g. a token that was replaced); unknown values are ignored.

    Args:
        value: A value given to :func:`register_secret`.
    """
    _SECRETS.discard(value)


def scrub_text(text: str) -> str:
    """Remove registered secrets and secret-shaped substrings from ``text`` (no truncation).

    Useful at a boundary before putting server text into an exception message.

    Args:
        text: Any text.

    Returns:
        The text with each secret replaced by ``"[REDACTED]"``.
    """
    return _SHAPES.sub(_shape_sub, _SECRETS.scrub(text))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str:
    return _cut(scrub_text(text), MAX_STRING)


_OPAQUE = re.compile(r"[A-Za-z0-9+/_=-]{40,}")


def _opaque(match: re.Match[str]) -> str:
    # Random tokens mix digits and both cases; paths and words (lower-case) survive.
    run = match.group(0)
    mixed = any(c.isdigit() for c in run) and not run.islower() and not run.isupper()
    return REDACTED if mixed else run


def safe_text(text: str, *, limit: int = MAX_STRING, secrets: Iterable[str | None] = ()) -> str:
    """Make server or transport text fit for an exception message or an event.

    The one preview helper of the HTTP boundaries (chat answers, Entra ID answers, httpx errors).
    In order: each value of ``secrets`` (e.g. the credentials the request carried) is replaced,
    whitespace runs collapse to one space, registered secrets and secret shapes are scrubbed
    (:func:`scrub_text`), long random-looking runs (40+ characters of the base64/URL alphabet
    mixing digits and both cases) are replaced, and the result is cut to ``limit``. Use it on
    the server's *full* text only after reading what the code needs from it (waits, parameter
    names): the cut can drop the end.

    Args:
        text: A server message, a body preview or an exception's text.
        limit: Longest result, ``…`` included.
        secrets: Exact values to hide too (``None`` and empty values are skipped).

    Returns:
        The cleaned text, ending with ``…`` when it was cut.

    Raises:
        ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    cleaned = _OPAQUE.sub(_opaque, scrub_text(" ".join(text.split())))
    return _cut(cleaned, limit)


def _stringify(value: object) -> str:
    try:
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}"
        return str(value)
    except Exception:  # a broken __str__ must not break the emitter
        return f"<unprintable {type(value).__name__}>"


def redact(value: Any, key: str | None = None) -> Any:
    """Turn ``value`` into a redacted, JSON-safe value.

    Args:
        value: Any value.
        key: The context key it sits under, for redaction by key name.

    Returns:
        ``None``, a bool, an int, a finite float, a string (redacted, at most 200 characters), or
        a list / dict of those. ``"[REDACTED]"`` replaces secrets.
    """
    return _redact(value, _key_kind(key) if key else _PLAIN, 0)


def _redact(value: Any, kind: int, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if _hidden(kind, value):
        return REDACTED
    if isinstance(value, str):
        return _clean(str.__str__(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if depth >= _MAX_DEPTH and isinstance(value, Mapping | list | tuple | set | frozenset):
        return "<nested too deep>"
    if isinstance(value, Mapping):  # under a token key, the inner strings stay hidden too
        return _redact_mapping(value, depth + 1, kind)
    if isinstance(value, list | tuple | set | frozenset):
        items = [_redact(item, kind, depth + 1) for item in itertools.islice(value, _MAX_ITEMS)]
        if len(value) > _MAX_ITEMS:
            items.append(f"<{len(value) - _MAX_ITEMS} more>")
        return items
    return _clean(_stringify(value))


def _redact_mapping(
    mapping: Mapping[Any, Any], depth: int, inherited: int = _PLAIN
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for index, (raw_key, item) in enumerate(mapping.items()):
        if index == _MAX_ITEMS:
            result["…"] = f"<{len(mapping) - _MAX_ITEMS} more>"
            break
        if isinstance(raw_key, str) and len(raw_key) < _MIN_SECRET and raw_key.isidentifier():
            key = raw_key  # a short identifier cannot hold a JWT, a scheme or a registered secret
        else:
            key = _clean(_stringify(raw_key))
        result[key] = _redact(item, max(_key_kind(key), inherited), depth)
    return result


def redact_context(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Redact every value of ``mapping`` by its key, shape and registered secrets.

    Args:
        mapping: An event's context.

    Returns:
        A new JSON-safe dict with string keys.
    """
    return _redact_mapping(mapping, 0)


# -- the bus ---------------------------------------------------------------------------------------

Subscriber = Callable[[Event], None]
"""A callback receiving each event, synchronously, in the emitting thread; keep it quick."""

_bus_lock = threading.Lock()
_entries: dict[int, Subscriber] = {}
_callbacks: tuple[Subscriber, ...] = ()
_next_entry = 0
_callback_errors = 0
_journal: EventJournal | None = None
_atexit_registered = False
_local = threading.local()


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Call ``callback(event)`` for every event emitted in this process from now on.

    A callback that raises is counted (:func:`subscriber_errors`) and otherwise ignored: it never
    breaks the emitter. An event emitted from inside a callback or a logging handler (same
    thread) goes to the journal only, so neither can recurse.

    Args:
        callback: Called with each :class:`Event`.

    Returns:
        A function that unsubscribes this callback (idempotent).
    """
    global _next_entry, _callbacks
    with _bus_lock:
        _next_entry += 1
        entry = _next_entry
        _entries[entry] = callback
        _callbacks = tuple(_entries.values())

    def unsubscribe() -> None:
        global _callbacks
        with _bus_lock:
            if _entries.pop(entry, None) is not None:
                _callbacks = tuple(_entries.values())

    return unsubscribe


def subscriber_errors() -> int:
    """Return how many subscriber calls raised since start (or :func:`reset_for_tests`)."""
    return _callback_errors


def _count_callback_error() -> None:
    global _callback_errors
    with _bus_lock:
        _callback_errors += 1


def install_journal(journal: EventJournal | None) -> EventJournal | None:
    """Make ``journal`` the process-wide journal sink (``None`` uninstalls).

    The installed journal is flushed and closed at interpreter exit. The previous one is returned,
    not closed: its owner decides.

    Args:
        journal: The journal, or ``None``.

    Returns:
        The journal installed before.
    """
    global _journal, _atexit_registered
    with _bus_lock:
        previous, _journal = _journal, journal
        if journal is not None and not _atexit_registered:
            _atexit_registered = True
            atexit.register(_close_installed)
    return previous


def get_journal() -> EventJournal | None:
    """Return the installed journal, if any."""
    return _journal


def _close_installed() -> None:
    journal = _journal
    if journal is not None:
        journal.close(timeout=2.0)


def reset_for_tests() -> None:
    """Forget subscribers, registered secrets and counters; uninstall and close the journal."""
    global _callbacks, _callback_errors
    with _bus_lock:
        _entries.clear()
        _callbacks = ()
        _callback_errors = 0
    journal = install_journal(None)
    if journal is not None:
        journal.close()
    _SECRETS.clear()


# -- emitting --------------------------------------------------------------------------------------

_pid = os.getpid()
_inherited: list[EventJournal] = []


def _after_fork() -> None:
    """In a forked child: fresh locks, the child's pid, and a journal writer of its own."""
    global _pid, _bus_lock, _journal
    _pid = os.getpid()
    _bus_lock = threading.Lock()
    _SECRETS._lock = threading.Lock()
    inherited = _journal
    if inherited is not None and not inherited.closed:
        _inherited.append(inherited)  # never closed here: its connection is the parent's
        _journal = inherited._fresh_copy()


os.register_at_fork(after_in_child=_after_fork)


def new_op_id() -> str:
    """Return a fresh operation id: 12 hex characters.

    Returns:
        A random id such as ``"3f9a0c51b2e4"``.
    """
    return secrets.token_hex(6)


def _format_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c in value for c in ' "=\n\t'):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _message(event: Event) -> str:
    parts = [event.event]
    parts += [f"{k}={_format_value(v)}" for k, v in event.context.items()]
    if event.user_id is not None:
        parts.append(f"user_id={_format_value(event.user_id)}")
    if event.op_id is not None:
        parts.append(f"op_id={_format_value(event.op_id)}")
    return " ".join(parts)


def log_with_context(
    logger: logging.Logger,
    level: int,
    event: str,
    *,
    user_id: str | None = None,
    op_id: str | None = None,
    **context: Any,
) -> Event:
    """Emit one structured event to logging, the subscribers and the journal.

    Args:
        logger: A stdlib logger under ``saga`` (e.g. ``logging.getLogger("saga.auth")``).
        level: A logging level (``logging.INFO`` ...).
        event: The stable snake_case event name.
        user_id: The user concerned, when known.
        op_id: The operation id (:func:`new_op_id`), one per top-level call.
        **context: Details; redacted and made JSON-safe before they go anywhere.

    Returns:
        The event as delivered. When no sink is listening (logger disabled for ``level``, no
        subscriber, no journal) nothing is redacted and the returned event's context is empty.
    """
    callbacks = _callbacks
    journal = _journal
    log_on = logger.isEnabledFor(level)
    if not (log_on or callbacks or journal is not None):
        return Event(time.time(), logging.getLevelName(level), event, user_id, op_id, _pid, {})
    record = Event(
        ts=time.time(),
        level=logging.getLevelName(level),
        event=event,
        user_id=None if user_id is None else _clean(str(user_id)),
        op_id=op_id,
        pid=_pid,
        context=redact_context(context),
    )
    nested = getattr(_local, "emitting", False)
    if not nested:
        _local.emitting = True
        try:
            if log_on:
                logger.log(level, _message(record), extra={"saga_event": record}, stacklevel=2)
            for callback in callbacks:
                try:
                    callback(record)
                except Exception:
                    _count_callback_error()
        finally:
            _local.emitting = False
    if journal is not None:
        journal.append(record)
    return record
