"""The ``saga-tui`` command (also ``python -m saga_tui``).

Usage: ``saga-tui [--journal PATH] [--store PATH] [--user U] [--sandbox]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from saga_magic.core.config import Settings
from saga_magic.core.errors import ArcSagaException

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="saga-tui",
        description=(
            "Watch token state, retries and live events of ARC SAGA (this or any other process), "
            "and refresh, log in, log out or ask Copilot. Keys: F1 shows them all; ctrl+q quits."
        ),
    )
    parser.add_argument(
        "--journal", type=Path, help="event journal to follow (default: ARC_SAGA_JOURNAL_PATH)"
    )
    parser.add_argument(
        "--store", type=Path, help="token store to show (default: ARC_SAGA_TOKEN_STORE_PATH)"
    )
    parser.add_argument(
        "--user", help="user id the actions and prompts use (default: ARC_SAGA_USER)"
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help=(
            "start the local Entra ID + Copilot emulator, sign a demo user in and drive some "
            "traffic (a 429 storm, a token refresh) in a throwaway home folder (not with "
            "--journal or --store); exports still go to ARC_SAGA_HOME/exports"
        ),
    )
    return parser


def settings_from_args(args: argparse.Namespace, base: Settings | None = None) -> Settings:
    """Apply the command-line overrides to the settings.

    Args:
        args: Parsed arguments.
        base: Settings to start from; ``Settings.from_env()`` by default.

    Returns:
        The effective settings.

    Raises:
        ConfigurationError: an environment variable is malformed.
    """
    settings = base if base is not None else Settings.from_env()
    changes: dict[str, object] = {}
    if args.journal is not None:
        changes["journal_path"] = args.journal.expanduser().absolute()
    if args.store is not None:
        changes["token_store_path"] = args.store.expanduser().absolute()
    if args.user:
        changes["user"] = args.user
    return settings.with_overrides(**changes) if changes else settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the TUI.

    Args:
        argv: Arguments (``sys.argv[1:]`` by default).

    Returns:
        The process exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sandbox and (args.journal is not None or args.store is not None):
        print(
            "saga-tui: --sandbox runs in a throwaway home with its own key, token store and "
            "journal; it cannot use --journal or --store (run without --sandbox to watch them)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = settings_from_args(args)
    except ArcSagaException as exc:
        print(f"saga-tui: {exc}", file=sys.stderr)
        return 2
    if args.sandbox:
        from .demo import run_sandbox

        return run_sandbox(settings)
    from .app import SagaApp

    SagaApp(settings, exit_on_signals=True).run()
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    sys.exit(main())
