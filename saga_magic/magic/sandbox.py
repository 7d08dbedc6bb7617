"""``%copilot sandbox``: the embedded Entra ID + chat emulator, for a zero-setup trial.

Starts :class:`saga_magic.sandbox.Sandbox` on a free loopback port in a background thread (device
logins auto-approved), points *this kernel's* settings at it through ``Settings.with_overrides``
(``os.environ`` is left alone, so nothing leaks into subprocesses or other kernels), uses a
separate token store (``sandbox_tokens.db`` in ``ARC_SAGA_HOME``) so demo tokens never replace
real ones, and signs the configured user in, so the next ``%%copilot`` cell just works. The
journal stays where it is: a ``saga-tui`` watching this home sees the sandbox's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .failure import CopilotError

if TYPE_CHECKING:
    from saga_magic.core.config import Settings

    from .session import CopilotSession

__all__ = ["SANDBOX_STORE_NAME", "sandbox_command", "sandbox_settings"]

SANDBOX_STORE_NAME = "sandbox_tokens.db"
"""Token store file of sandbox sessions, inside ``ARC_SAGA_HOME``."""

_ENV_FIELDS = {
    "AZURE_AUTHORITY_HOST": "authority_host",
    "AZURE_TENANT_ID": "tenant_id",
    "AZURE_CLIENT_ID": "client_id",
    "ARC_SAGA_COPILOT_ENDPOINT": "copilot_endpoint",
}

Out = Callable[[str], None]


def sandbox_settings(base: Settings, env: dict[str, str]) -> Settings:
    """Point ``base`` at a sandbox whose environment lines are ``env``.

    Args:
        base: The settings read from the environment.
        env: ``Sandbox.env()``: AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID,
            ARC_SAGA_COPILOT_ENDPOINT (and possibly more).

    Returns:
        The overridden settings (public client: no secret; separate token store).
    """
    changes: dict[str, Any] = {
        field: env[name] for name, field in _ENV_FIELDS.items() if name in env
    }
    changes["client_secret"] = env.get("AZURE_CLIENT_SECRET")
    changes["copilot_model"] = env.get("ARC_SAGA_COPILOT_MODEL")
    changes["token_store_path"] = base.home / SANDBOX_STORE_NAME
    return base.with_overrides(**changes)


def _start(session: CopilotSession, out: Out) -> None:
    from saga_magic.sandbox.sandbox import Sandbox

    base = session.settings
    sandbox = Sandbox(auto_approve=True, device_poll_interval=1, stream_chunk_delay=0.02)
    sandbox.start()
    session.base_settings = base
    session.sandbox = sandbox
    env = sandbox.env()
    settings = sandbox_settings(base, env)
    session.use_settings(settings)
    user = settings.user
    tokens = sandbox.issue_tokens()
    session.run(lambda: session.store().save_token(user, tokens))
    out(f"sandbox: Entra ID + chat emulator running on {sandbox.base_url} (loopback only)")
    out("this kernel now uses it (settings override; os.environ is unchanged):")
    for name, value in env.items():
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
    session.use_settings(base or session.settings)
    sandbox.stop()
    out("sandbox: stopped; settings restored from the environment")


def sandbox_command(session: CopilotSession, args: Any, out: Out) -> None:
    """``%copilot sandbox [--script ENDPOINT FAULT ...] [--reset] [--stop]``.

    Without options: start the emulator (if not running) and sign the demo user in.

    Args:
        session: The extension's session.
        args: Parsed options (``script``, ``reset``, ``stop``).
        out: Prints a line.

    Raises:
        CopilotError: a bad script, or scripting before the sandbox runs.
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
        try:
            sandbox.script(endpoint, faults)
        except (ValueError, KeyError) as error:
            raise CopilotError(f"bad sandbox script: {error}") from None
        out(f"sandbox: next {endpoint} answers: {', '.join(faults)}")
    if not (args.reset or args.script):
        out(f"sandbox: already running on {sandbox.base_url}; --stop stops it")
