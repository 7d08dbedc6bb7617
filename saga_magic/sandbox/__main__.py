"""``saga-sandbox``: run the sandbox in the foreground until Ctrl-C.

Prints the ``export`` lines that point the product at it, says it listens on loopback only, and
approves device logins automatically unless ``--no-auto-approve`` is given (then approve them at
the printed ``/devicelogin`` page or with ``POST /_sandbox/device/approve``).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from .records import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID
from .sandbox import Sandbox

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="saga-sandbox",
        description="Local Entra ID + Copilot chat emulator with fault injection (loopback only).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    parser.add_argument("--tenant-id", default=DEFAULT_TENANT_ID, help="tenant id to serve")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="application (client) id")
    parser.add_argument(
        "--no-auto-approve",
        dest="auto_approve",
        action="store_false",
        help="leave device logins pending until approved at /devicelogin",
    )
    parser.add_argument(
        "--enforce-poll-interval",
        action="store_true",
        help="answer slow_down to device-code polls that come sooner than the interval",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=None,
        help="fixed access-token expires_in in seconds (default: random 3600-5400)",
    )
    parser.add_argument(
        "--stream-delay",
        type=float,
        default=0.03,
        help="seconds between streamed chunks (default 0.03)",
    )
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_forever(stop: threading.Event, poll: float = 1.0) -> None:
    """Wait for ``stop`` in short slices, so Ctrl-C is delivered promptly on every platform."""
    while not stop.wait(poll):
        continue


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the sandbox until interrupted; return the exit status.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        out: Where to print (default stdout).
        stop: Set it to stop (for embedding and tests); Ctrl-C and SIGTERM also stop.
    """
    stream = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)
    try:
        sandbox = Sandbox(
            host=args.host,
            port=args.port,
            tenant_id=args.tenant_id,
            client_id=args.client_id,
            auto_approve=args.auto_approve,
            enforce_poll_interval=args.enforce_poll_interval,
            token_lifetime=args.token_lifetime,
            stream_chunk_delay=args.stream_delay,
        ).start()
    except (ValueError, OSError) as exc:
        print(f"saga-sandbox: {exc}", file=sys.stderr)
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        print("# ARC SAGA sandbox: local Entra ID + Copilot chat emulator", file=stream)
        print(f"# listening on loopback only: {sandbox.base_url} (Ctrl-C to stop)", file=stream)
        for key, value in sandbox.env().items():
            print(f"export {key}={shlex.quote(value)}", file=stream)
        if args.auto_approve:
            print(
                "# device logins are approved automatically (--no-auto-approve to approve by hand)",
                file=stream,
            )
        else:
            print(f"# approve device logins at {sandbox.base_url}/devicelogin", file=stream)
        print(f"# api-key for the chat endpoint: {sandbox.api_key}", file=stream)
        stream.flush()
        _wait_forever(stop if stop is not None else threading.Event())
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("# sandbox stopped", file=stream)
    stream.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    raise SystemExit(main())
