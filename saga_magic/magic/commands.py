"""The ``%copilot`` subcommands (``status``, ``login``, ``logout``, ``reset``, ``memory``,
``config``, ``log``, ``sandbox``, ``help``).

Each takes the session, its parsed options and an output function, and prints a few lines.
Core failures propagate as core exceptions; the magic turns them into one line. The magic calls
``session.observe()`` before every subcommand but ``help``, so each of them starts the event
journal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .failure import CopilotError, CopilotInterrupted, login_command
from .options import subcommand_help
from .sandbox import fault_help, sandbox_command
from .timefmt import clock_time, format_duration

if TYPE_CHECKING:
    from saga_magic.core.events import Event
    from saga_magic.core.types import TokenInfo

    from .session import CopilotSession

__all__ = ["COMMANDS", "EVENT_LINE_LIMIT", "format_duration", "format_event"]

EVENT_LINE_LIMIT = 160
"""Longest ``%copilot log`` line."""

_ID_CHARS = 8

Out = Callable[[str], None]
Command = Callable[["CopilotSession", Any, Out], None]


def _token_line(info: TokenInfo, *, now: float, default_user: str, width: int) -> str:
    status = info.status(now=now)
    if info.relogin_required:
        detail = f"run {login_command(info.user_id, default_user)}"
    elif info.expires_at is None:
        detail = "expiry unknown"
    elif info.expires_at > now:
        left = format_duration(info.expires_at - now)
        detail = f"expires in {left} (at {clock_time(info.expires_at)})"
    else:
        detail = f"expired {format_duration(now - info.expires_at)} ago (refreshed on next use)"
    marker = "*" if info.user_id == default_user else " "
    saved = format_duration(now - info.updated_at)
    return f"  {marker} {info.user_id:<{width}}  {status.value:<16} {detail}; saved {saved} ago"


def _token_infos(session: CopilotSession) -> list[TokenInfo]:
    from saga_magic.core.store import SQLiteEncryptedTokenStore

    return SQLiteEncryptedTokenStore.read_token_infos(session.settings.token_store_path)


def status(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot status``: endpoint, token state per user, the last request.

    Args:
        session: The extension's session.
        args: Parsed options (none).
        out: Prints a line.
    """
    settings = session.settings
    now = session.clock()
    sandbox = " (sandbox)" if session.sandbox is not None else ""
    out(f"endpoint: {settings.copilot_endpoint or 'not set (ARC_SAGA_COPILOT_ENDPOINT)'}{sandbox}")
    out(f"model:    {settings.copilot_model or '(the endpoint decides)'}")
    out(f"tokens:   {settings.token_store_path}")
    infos = _token_infos(session)
    if not infos:
        missing = [
            name
            for name, value in (
                ("AZURE_TENANT_ID", settings.tenant_id),
                ("AZURE_CLIENT_ID", settings.client_id),
            )
            if value is None
        ]
        if missing:
            out(
                f"  no token stored; set {' and '.join(missing)} (then %copilot login), "
                "or try the local emulator with %copilot sandbox"
            )
        else:
            out(f"  no token stored; run {login_command(settings.user, settings.user)}")
    width = max((len(info.user_id) for info in infos), default=0)
    for info in sorted(infos, key=lambda item: item.user_id):
        out(_token_line(info, now=now, default_user=settings.user, width=width))
    last = session.last
    if last is None:
        out("last request: none yet")
    elif last.result is None:
        out(f"last request: {clock_time(last.at)} user {last.user!r} failed: {last.error}")
    else:
        result = last.result
        out(
            f"last request: {clock_time(last.at)} user {last.user!r}, model {result.model}, "
            f"{result.latency_ms / 1000:.1f} s, {result.attempts} attempt(s), "
            f"{result.usage.total_tokens} tokens, finish {result.finish_reason}, "
            f"request id {result.request_id}"
        )
    memory = session.memory
    out(
        f"conversation: {memory.turns(settings.user)} of {memory.max_turns} turns kept for "
        f"{settings.user!r} ({memory.chars(settings.user)} of {memory.max_chars} characters)"
    )


def login(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot login [--user U]``: device-code sign-in; an interrupt cancels the wait.

    Args:
        session: The extension's session.
        args: Parsed options (``user``).
        out: Prints a line.

    Raises:
        CopilotInterrupted: interrupted while waiting for the sign-in.
    """
    user = args.user or session.settings.user
    pending = session.run(lambda: session.auth().start_device_login(user))
    out(pending.message)
    remaining = format_duration(pending.expires_at - session.clock())
    out(f"waiting for the sign-in of {user!r} (code valid for {remaining}; interrupt to cancel)")
    try:
        info = session.run(lambda: session.auth().complete_device_login(pending))
    except KeyboardInterrupt:
        raise CopilotInterrupted("login cancelled; nothing was saved") from None
    expiry = (
        f"token valid for {format_duration(info.expires_at - session.clock())}"
        if info.expires_at is not None
        else "token saved"
    )
    out(f"signed in: user {user!r}, {expiry}")


def logout(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot logout [--user U]``: delete the user's stored token and conversation.

    Args:
        session: The extension's session.
        args: Parsed options (``user``).
        out: Prints a line.
    """
    settings = session.settings
    user = args.user or settings.user
    if settings.tenant_id and settings.client_id:
        removed = session.run(lambda: session.auth().logout(user))
    else:
        removed = session.run(lambda: session.store().delete_token(user))
    session.memory.reset(user)
    out(f"signed out: {user!r}" if removed else f"no token was stored for {user!r}")


def reset(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot reset [--user U | --all]``: start a fresh conversation.

    Args:
        session: The extension's session.
        args: Parsed options (``user``, ``all``).
        out: Prints a line.
    """
    if args.all:
        count = session.memory.reset()
        out(f"conversations reset for every user ({count} turns forgotten)")
        return
    user = args.user or session.settings.user
    count = session.memory.reset(user)
    out(f"conversation reset for {user!r} ({count} turns forgotten)")


def memory(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot memory [--turns N] [--chars N]``: show or bound the conversations.

    Args:
        session: The extension's session.
        args: Parsed options (``turns``, ``chars``).
        out: Prints a line.

    Raises:
        CopilotError: ``--turns`` or ``--chars`` is negative.
    """
    kept = session.memory
    for option in ("turns", "chars"):
        value = getattr(args, option)
        if value is not None and value < 0:
            raise CopilotError(f"--{option} must be 0 or more, got {value}")
    if args.turns is not None:
        kept.max_turns = args.turns
    if args.chars is not None:
        kept.max_chars = args.chars
    out(f"keeping at most {kept.max_turns} turns and {kept.max_chars} characters per user")
    users = kept.users()
    if not users:
        out("  no conversation yet")
    for user in users:
        out(f"  {user}: {kept.turns(user)} turns, {kept.chars(user)} characters")


def config(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot config``: the effective settings, secrets masked.

    Args:
        session: The extension's session.
        args: Parsed options (none).
        out: Prints a line.
    """
    shown = session.settings.describe()
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        out(f"{name:<{width}} = {'(not set)' if value is None else value}")
    if session.sandbox is not None:
        out("(sandbox: authority, tenant, client, endpoint and token store point at the emulator)")


def _event_value(key: str, value: Any) -> str:
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return clock_time(value)  # expires_at, next_attempt_at: a local time, not a unix float
    if key.endswith("_id") and isinstance(value, str) and len(value) > _ID_CHARS:
        return value[:_ID_CHARS]  # task, request, correlation ids: a prefix tells them apart
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}".rstrip("0")
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def format_event(event: Event, *, limit: int = EVENT_LINE_LIMIT) -> str:
    """Render an event as one compact log line.

    Args:
        event: The event.
        limit: Longest line (cut with an ellipsis).

    Returns:
        ``HH:MM:SS.mmm LEVEL event user=... op=... key=value ...``: fields that are ``None``
        are left out, ``*_at`` times are local clock times, long ``*_id`` values a prefix.
    """
    millis = int((event.ts % 1) * 1000)
    parts = [f"{clock_time(event.ts)}.{millis:03d}", f"{event.level:<7}", event.event]
    if event.user_id:
        parts.append(f"user={event.user_id}")
    if event.op_id:
        parts.append(f"op={event.op_id[:_ID_CHARS]}")
    parts += [
        f"{key}={_event_value(key, value)}"
        for key, value in event.context.items()
        if value is not None
    ]
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def log(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot log [-n N] [--event NAME]``: the most recent events of this kernel.

    Args:
        session: The extension's session.
        args: Parsed options (``n``, ``event``).
        out: Prints a line.

    Raises:
        UsageError: ``-n`` is not 1 or more.
    """
    if args.n < 1:
        raise UsageError(f"-n must be 1 or more, got {args.n}")
    snapshot = list(session.events)  # one C-level copy: the loop thread appends meanwhile
    recent = [e for e in snapshot if args.event is None or args.event in e.event][-args.n :]
    if not recent:
        what = f"no {args.event!r} events" if args.event is not None else "no events"
        out(f"{what} yet in this kernel")
    for event in recent:
        out(format_event(event))


def help_(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot help [SUBCOMMAND]``: the list of subcommands, or one's options.

    Args:
        session: The extension's session.
        args: Parsed options (``topic``).
        out: Prints a line.

    Raises:
        CopilotError: unknown topic.
    """
    topic = getattr(args, "topic", None)
    try:
        out(subcommand_help(topic))
    except KeyError:
        raise CopilotError(f"no subcommand {topic!r}; see %copilot help") from None
    if topic == "sandbox":
        out(fault_help())


COMMANDS: dict[str, Command] = {
    "status": status,
    "login": login,
    "logout": logout,
    "reset": reset,
    "memory": memory,
    "config": config,
    "log": log,
    "sandbox": sandbox_command,
    "help": help_,
}
"""Subcommand name -> implementation."""
