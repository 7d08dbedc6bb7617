"""The ``%copilot`` subcommands (``status``, ``login``, ``logout``, ``reset``, ``memory``,
``config``, ``log``, ``sandbox``, ``help``).

Each takes the session, its parsed options and an output function, and prints a few lines.
Core failures propagate as core exceptions; the magic turns them into one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .failure import CopilotError, CopilotInterrupted
from .options import subcommand_help
from .sandbox import sandbox_command

if TYPE_CHECKING:
    from saga_magic.core.events import Event
    from saga_magic.core.types import TokenInfo

    from .session import CopilotSession

__all__ = ["COMMANDS", "format_duration", "format_event"]

Out = Callable[[str], None]
Command = Callable[["CopilotSession", Any, Out], None]


def format_duration(seconds: float) -> str:
    """Render a duration as "43 s", "12 min", "1 h 12 min" or "2 d 3 h".

    Args:
        seconds: A non-negative duration.

    Returns:
        Short text.
    """
    total = round(abs(seconds))
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _clock_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _token_line(info: TokenInfo, *, now: float, default_user: str, width: int) -> str:
    status = info.status(now=now)
    if info.relogin_required:
        login = "%copilot login" + (
            "" if info.user_id == default_user else f" --user {info.user_id}"
        )
        detail = f"run {login}"
    elif info.expires_at is None:
        detail = "expiry unknown"
    elif info.expires_at > now:
        left = format_duration(info.expires_at - now)
        detail = f"expires in {left} (at {_clock_time(info.expires_at)})"
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
        out(f"  no token stored; run %copilot login (user {settings.user!r})")
    width = max((len(info.user_id) for info in infos), default=0)
    for info in sorted(infos, key=lambda item: item.user_id):
        out(_token_line(info, now=now, default_user=settings.user, width=width))
    last = session.last
    if last is None:
        out("last request: none yet")
    elif last.result is None:
        out(f"last request: {_clock_time(last.at)} user {last.user!r} failed: {last.error}")
    else:
        result = last.result
        out(
            f"last request: {_clock_time(last.at)} user {last.user!r}, model {result.model}, "
            f"{result.latency_ms / 1000:.1f} s, {result.attempts} attempt(s), "
            f"{result.usage.total_tokens} tokens, finish {result.finish_reason}, "
            f"request id {result.request_id}"
        )
    turns = session.memory.turns(settings.user)
    out(f"conversation: {turns} of {session.memory.max_turns} turns kept for {settings.user!r}")


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
    """``%copilot memory [--turns N]``: show or bound the conversations.

    Args:
        session: The extension's session.
        args: Parsed options (``turns``).
        out: Prints a line.

    Raises:
        CopilotError: ``--turns`` is negative.
    """
    if args.turns is not None:
        if args.turns < 0:
            raise CopilotError(f"--turns must be 0 or more, got {args.turns}")
        session.memory.max_turns = args.turns
    out(f"keeping at most {session.memory.max_turns} turns per user")
    users = session.memory.users()
    if not users:
        out("  no conversation yet")
    for user in users:
        out(f"  {user}: {session.memory.turns(user)} turns")


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


def format_event(event: Event) -> str:
    """Render an event as one log line.

    Args:
        event: The event.

    Returns:
        ``HH:MM:SS.mmm LEVEL event user=... op=... key=value ...``.
    """
    millis = int((event.ts % 1) * 1000)
    parts = [f"{_clock_time(event.ts)}.{millis:03d}", f"{event.level:<7}", event.event]
    if event.user_id:
        parts.append(f"user={event.user_id}")
    if event.op_id:
        parts.append(f"op={event.op_id[:8]}")
    parts += [f"{key}={value}" for key, value in event.context.items()]
    return " ".join(parts)


def log(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot log [-n N]``: the most recent events of this kernel.

    Args:
        session: The extension's session.
        args: Parsed options (``n``).
        out: Prints a line.
    """
    session.settings  # noqa: B018 - starts observing the event bus on first use
    count = max(0, args.n)
    recent = list(session.events)[-count:] if count else []
    if not recent:
        out("no events yet in this kernel")
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
