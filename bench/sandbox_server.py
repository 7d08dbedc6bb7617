"""Run a sandbox in this process until stdin closes: ``python sandbox_server.py '<json options>'``.

Prints one JSON line with its addresses first. Used by the benchmarks so that the emulator's
request handling runs in a process of its own.
"""

from __future__ import annotations

import json
import sys

from saga_magic.sandbox import Sandbox


def main() -> None:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with Sandbox(**options) as sb:
        info = {
            "base_url": sb.base_url,
            "tenant_id": sb.tenant_id,
            "client_id": sb.client_id,
            "chat_endpoint": sb.chat_endpoint,
            "api_version": sb.chat_endpoint.rsplit("api-version=", 1)[1],
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the benchmark closes our stdin


if __name__ == "__main__":
    main()
