"""``%copilot sandbox``: the embedded Entra ID + chat emulator, for a zero-setup trial.

Starts :class:`saga_magic.sandbox.Sandbox` on a free loopback port in a background thread (device
logins auto-approved), points *this kernel's* settings at it through ``Settings.with_overrides``
with the sandbox's own addresses (``os.environ`` is left alone, so nothing leaks into
subprocesses or other kernels), uses a separate token store (``sandbox_tokens.db`` in
``ARC_SAGA_HOME``, encrypted with a key generated for this sandbox only, so demo tokens never
replace real ones and a broken ``ARC_SAGA_TOKEN_ENCRYPTION_KEY`` does not break the trial), and
signs the configured user in, so the next ``%%copilot`` cell just works. The journal stays where
it is: a ``saga-tui`` watching this home sees the sandbox's events.

Starting is all or nothing: the session records the sandbox only once every step succeeded; on a
failure the emulator is stopped and the previous settings are back. Stopping always stops the
emulator, even when closing the core's connections fails.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .failure import CopilotError

if TYPE_CHECKING:
    from saga_magic.core.config import Settings

    from .session import CopilotSession

__all__ = ["SANDBOX_STORE_NAME", "fault_help", "sandbox_command", "sandbox_settings"]

SANDBOX_STORE_NAME = "sandbox_tokens.db"
"""Token store file of sandbox sessions, inside ``ARC_SAGA_HOME``."""

_STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_HELP = "%copilot help sandbox lists the faults"

Out = Callable[[str], None]


def sandbox_settings(base: Settings, sandbox: Any, *, encryption_key: str) -> Settings:
    """Point ``base`` at a running sandbox.

    Args:
        base: The settings read from the environment.
        sandbox: The started :class:`~saga_magic.sandbox.Sandbox` (its authority host, tenant,
            client, client secret and chat endpoint are used).
        encryption_key: Key of the sandbox token store (a fresh one per sandbox).

    Returns:
        The overridden settings (the sandbox's client; its deployments URL, so no model; a
        separate token store).
    """
    return base.with_overrides(
        authority_host=sandbox.authority_host,
        tenant_id=sandbox.tenant_id,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        copilot_endpoint=sandbox.chat_endpoint,
        copilot_model=None,
        token_store_path=base.home / SANDBOX_STORE_NAME,
        encryption_key=encryption_key,
    )


def _remove_stale_store(settings: Settings) -> None:
    # Tokens of an earlier sandbox are useless (another emulator, another key): start clean.
    path = settings.token_store_path
    for suffix in _STORE_SUFFIXES:
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _start(session: CopilotSession, out: Out) -> None:
    from saga_magic.core.store import SQLiteEncryptedTokenStore
    from saga_magic.sandbox.sandbox import Sandbox

    base = session.settings
    sandbox = Sandbox(auto_approve=True, device_poll_interval=1, stream_chunk_delay=0.02)
    sandbox.start()
    try:
        settings = sandbox_settings(
            base, sandbox, encryption_key=SQLiteEncryptedTokenStore.generate_key()
        )
        _remove_stale_store(settings)
        session.use_settings(settings)
        user = settings.user
        tokens = sandbox.issue_tokens()
        session.run(lambda: session.store().save_token(user, tokens))
    except BaseException:
        try:
            session.use_settings(base)
        finally:
            sandbox.stop()
        raise
    session.base_settings = base
    session.sandbox = sandbox
    out(f"sandbox: Entra ID + chat emulator running on {sandbox.base_url} (loopback only)")
    out("this kernel now uses it (settings override; os.environ is unchanged):")
    for name, value in sandbox.env().items():
        out(f"  {name}={value}")
    out(f"  token store: {settings.token_store_path} (your real tokens are untouched)")
    out(
        f"signed in {user!r} as the sandbox's demo user {sandbox.default_user}; "
        "device logins (%copilot login) are approved automatically"
    )
    out(
        "next: a %%copilot cell; %copilot sandbox --script chat 429:retry_after=1 ok scripts faults"
    )


def _stop(session: CopilotSession, out: Out) -> None:
    sandbox, session.sandbox = session.sandbox, None
    base, session.base_settings = session.base_settings, None
    if sandbox is None:
        out("sandbox: not running")
        return
    try:
        session.use_settings(base or session.settings)
    finally:
        sandbox.stop()
    out("sandbox: stopped; settings restored from the environment")


def fault_help() -> str:
    """List the fault names ``--script`` accepts, per endpoint.

    Returns:
        A few wrapped lines.
    """
    from saga_magic.sandbox.catalogue import ENDPOINTS, fault_names

    lines = ["faults for --script ENDPOINT FAULT[:ARGS] ... (e.g. --script chat 429 ok):"]
    for endpoint in ENDPOINTS:
        lines += textwrap.wrap(
            ", ".join(fault_names(endpoint)),
            width=96,
            initial_indent=f"  {endpoint}: ",
            subsequent_indent="    ",
        )
    return "\n".join(lines)


def _check_script(endpoint: str, faults: list[str]) -> None:
    from saga_magic.sandbox.catalogue import ENDPOINTS, fault_names

    if endpoint not in ENDPOINTS:
        close = difflib.get_close_matches(endpoint, ENDPOINTS, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise CopilotError(
            f"unknown sandbox endpoint {endpoint!r}; {guess}one of {', '.join(ENDPOINTS)}"
        )
    known = fault_names(endpoint)
    for entry in faults:
        name = entry.partition(":")[0].strip()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            guess = f"did you mean {', '.join(close)}? " if close else ""
            raise CopilotError(f"unknown {endpoint} fault {name!r}; {guess}-> {_HELP}")


def sandbox_command(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot sandbox [--script ENDPOINT FAULT ...] [--reset] [--stop]``.

    Without options: start the emulator (if not running) and sign the demo user in.

    Args:
        session: The extension's session.
        args: Parsed options (``script``, ``reset``, ``stop``).
        out: Prints a line.

    Raises:
        CopilotError: a bad script (unknown names come with close matches), or scripting before
            the sandbox runs.
    """
    if args.stop:
        _stop(session, out)
        return
    if session.sandbox is None:
        if args.script or args.reset:
            raise CopilotError("the sandbox is not running; start it with %copilot sandbox")
        _start(session, out)
        return
    sandbox = session.sandbox
    if args.reset:
        sandbox.reset()
        out("sandbox: scripts and recorded requests cleared")
    if args.script:
        endpoint, *faults = args.script
        if not faults:
            raise CopilotError("--script needs an endpoint then faults, e.g. chat 429 ok")
        _check_script(endpoint, faults)
        try:
            sandbox.script(endpoint, faults)
        except (ValueError, KeyError) as error:
            raise CopilotError(f"bad sandbox script: {error} -> {_HELP}") from None
        out(f"sandbox: next {endpoint} answers: {', '.join(faults)}")
    if not (args.reset or args.script):
        out(f"sandbox: already running on {sandbox.base_url}; --stop stops it")
