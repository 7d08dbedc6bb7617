"""Worker processes of the benchmarks: ``python bench_workers.py <mode> '<json args>'``.

Each worker sets itself up, prints ``{"ready": pid}``, waits for ``{"start_at": t}`` on stdin,
starts at ``t`` (so all workers start together), and prints one JSON line of results.

* ``saga_stampede``: ``concurrency`` coroutines call ``get_valid_token`` on an expired token.
* ``msal_stampede``: ``concurrency`` threads call MSAL ``acquire_token_silent_with_error`` on a
  cache whose access token has expired (MSAL has no cross-process coordination).
* ``store``: ``saves`` encrypted saves, then ``gets`` reads, of this worker's own users.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench_common import SCOPE, msal_app


def ready() -> float:
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    start_at = float(json.loads(sys.stdin.readline())["start_at"])
    time.sleep(max(0.0, start_at - time.time()))
    return start_at


def done(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def saga_stampede(args: dict[str, Any]) -> None:
    from saga_magic.core.auth import EntraIDAuthManager
    from saga_magic.core.store import SQLiteEncryptedTokenStore

    store = SQLiteEncryptedTokenStore(args["db"], encryption_key=args["key"])
    manager = EntraIDAuthManager(
        store,
        tenant_id=args["tenant_id"],
        client_id=args["client_id"],
        authority_host=args["base_url"],
        lease_poll_interval=0.01,
    )
    await store.list_tokens()  # open the database before the start line
    ready()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(manager.get_valid_token(args["user"]) for _ in range(args["concurrency"])),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    await manager.close()
    store.close()
    done(
        {
            "elapsed_s": elapsed,
            "errors": len(errors),
            "invalid_grant": sum("invalid_grant" in e for e in errors),
            "locked": sum("database is locked" in e for e in errors),
            "sample": errors[:2],
        }
    )


def msal_stampede(args: dict[str, Any]) -> None:
    import msal

    cache = msal.SerializableTokenCache()
    cache.deserialize(args["cache"])
    app, session = msal_app(args["base_url"], args["tenant_id"], args["client_id"], cache)
    account = app.get_accounts()[0]
    scopes = [SCOPE.split()[0]]
    pool = ThreadPoolExecutor(args["concurrency"])
    ready()
    started = time.perf_counter()
    futures = [
        pool.submit(app.acquire_token_silent_with_error, scopes, account)
        for _ in range(args["concurrency"])
    ]
    results = [f.result() for f in futures]
    elapsed = time.perf_counter() - started
    pool.shutdown()
    session.close()
    errors = [r for r in results if not r or "access_token" not in r]
    done(
        {
            "elapsed_s": elapsed,
            "errors": len(errors),
            "invalid_grant": sum(1 for r in errors if r and r.get("error") == "invalid_grant"),
            "locked": 0,
            "sample": [str((r or {}).get("error")) for r in errors[:2]],
        }
    )


async def store(args: dict[str, Any]) -> None:
    from saga_magic.core.store import SQLiteEncryptedTokenStore

    users = args["users"]
    token = {"access_token": "a" * 1500, "refresh_token": "r" * 900, "expires_in": 3600}
    with SQLiteEncryptedTokenStore(args["db"], encryption_key=args["key"]) as db:
        for user in users:
            await db.save_token(user, token)
        ready()
        started = time.perf_counter()
        for index in range(args["saves"]):
            await db.save_token(users[index % len(users)], token)
        saved = time.perf_counter()
        for index in range(args["gets"]):
            await db.get_token(users[index % len(users)])
        read = time.perf_counter()
    done({"save_s": saved - started, "get_s": read - saved})


def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "saga_stampede":
        asyncio.run(saga_stampede(args))
    elif mode == "msal_stampede":
        msal_stampede(args)
    elif mode == "store":
        asyncio.run(store(args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
