"""The child-process side of the cross-process single-flight tests (imported by ``spawn``).

It imports the core only (not the sandbox, not pytest fixtures), so children start quickly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Mapping
from typing import Any

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.store import SQLiteEncryptedTokenStore

USER = "default"


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


Result = tuple[int, int, str, str, list[str]]
"""``(pid, round, outcome, detail, log messages)``: outcome ``"ok"`` with the token as detail, or
the error class name with the error's str and repr."""


def refresh_worker(
    db_path: str,
    key: str,
    target: Mapping[str, str],
    barrier: Any,
    round_two: Any,
    results: Any,
) -> None:
    """Child process: its own manager over the shared store, racing the other children.

    Round one: wait at ``barrier``, then ``get_valid_token`` (the token is expired: a refresh).
    Round two, once the parent sets ``round_two``: wait at ``barrier`` again, then
    ``force_refresh`` of the round-one token (the parent has recorded a failed refresh
    meanwhile). One :data:`Result` per round goes to ``results``.
    """
    handler = _ListHandler()
    logging.getLogger().addHandler(handler)
    logging.getLogger("saga").setLevel(logging.DEBUG)

    def report(number: int, outcome: str, detail: str) -> None:
        results.put((os.getpid(), number, outcome, detail, list(handler.messages)))
        handler.messages.clear()

    async def attempt(call: Awaitable[str]) -> tuple[str, str]:
        try:
            return "ok", await call
        except Exception as error:  # reported to the parent, which asserts on it
            return type(error).__name__, f"{error!s} | {error!r}"

    async def main() -> None:
        store = SQLiteEncryptedTokenStore(db_path, encryption_key=key)
        auth = EntraIDAuthManager(
            store,
            tenant_id=target["tenant_id"],
            client_id=target["client_id"],
            authority_host=target["authority_host"],
            timeout=10.0,
            lease_poll_interval=0.02,
        )
        try:
            await store.list_tokens()  # open and migrate before the race starts
            barrier.wait(timeout=60)
            outcome, token = await attempt(auth.get_valid_token(USER))
            report(1, outcome, token)
            if not round_two.wait(timeout=60):
                return
            barrier.wait(timeout=60)
            report(2, *await attempt(auth.force_refresh(USER, rejected_token=token)))
        finally:
            await auth.close()
            store.close()

    asyncio.run(main())
