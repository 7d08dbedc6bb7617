"""Worker processes of the torture tests: ``python torture_worker.py <mode> '<json args>'``.

Modes:

* ``stampede``: one process of the cross-process single-flight test. Waits for ``{"round": r,
  "start_at": t}`` lines on stdin; at ``t`` it fires ``concurrency`` concurrent
  ``get_valid_token`` calls on a token its clock sees as expired (the clock jumps 2 h per
  round), and answers one JSON line of results.
* ``zygote``: a fork server for the crash test. It imports the core once, then on each
  ``{"cmd": "fork", ...}`` line forks a child that runs refresh+save cycles until it is killed;
  it answers ``{"pid": ...}`` at once and ``{"exit": ...}`` when the child is gone.
* ``store_ops``: runs store / manager operations under a handicap (``RLIMIT_FSIZE`` for a full
  disk, or inside a read-only or full file system prepared by the caller) and reports each
  operation's outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
import ssl
import sys
import time
import traceback
from typing import Any

import httpx

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import ArcSagaException
from saga_magic.core.store import SQLiteEncryptedTokenStore


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def manager_for(
    store: SQLiteEncryptedTokenStore, args: dict[str, Any], **options: Any
) -> EntraIDAuthManager:
    return EntraIDAuthManager(
        store,
        tenant_id=args["tenant"],
        client_id=args["client_id"],
        authority_host=args["authority"],
        backoff_base=0.01,
        **options,
    )


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- stampede -----------------------------------------------------------------------------------


async def stampede(args: dict[str, Any]) -> None:
    collected = _Collect()
    logging.getLogger().addHandler(collected)
    logging.getLogger().setLevel(logging.DEBUG)
    offset = 0.0

    def clock() -> float:
        return time.time() + offset

    store = SQLiteEncryptedTokenStore(args["db"], encryption_key=args["key"])
    manager = manager_for(store, args, clock=clock, timeout=20.0, lease_poll_interval=0.01)
    emit({"ready": os.getpid()})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            offset = 7200.0 * command["round"]  # every cached token has expired now
            await asyncio.sleep(max(0.0, command["start_at"] - time.time()))
            started = time.perf_counter()
            results = await asyncio.gather(
                *(manager.get_valid_token(args["user"]) for _ in range(args["concurrency"])),
                return_exceptions=True,
            )
            elapsed = time.perf_counter() - started
            errors = [describe(r) for r in results if isinstance(r, BaseException)]
            tokens = {r for r in results if isinstance(r, str)}
            texts = errors + collected.messages
            emit(
                {
                    "round": command["round"],
                    "tokens": len(tokens),
                    "errors": errors[:5],
                    "error_count": len(errors),
                    "invalid_grant": sum("invalid_grant" in t for t in errors),
                    "locked": sum("database is locked" in t for t in texts),
                    "elapsed_s": elapsed,
                }
            )
            collected.messages.clear()
    finally:
        await manager.close()
        store.close()


# -- zygote (crash consistency) -----------------------------------------------------------------


async def refresh_cycles(args: dict[str, Any]) -> None:
    # Each child runs in its own clock domain, far after the previous child's: the leases a
    # killed child left behind have expired for the next one (a crashed holder's lease would
    # otherwise block refreshes for lease_ttl, as designed).
    offset = 3600.0 * args["generation"]
    store = SQLiteEncryptedTokenStore(args["db"], encryption_key=args["key"])
    # One TLS context made before forking: loading the CA certificates per client takes 0.1 s.
    client = httpx.AsyncClient(verify=_TLS if _TLS is not None else True)
    manager = manager_for(
        store, args, clock=lambda: time.time() + offset, lease_ttl=1.0, http_client=client
    )
    users = args["users"]
    for cycle in range(args["max_cycles"]):
        await manager.force_refresh(users[cycle % len(users)])
    await manager.close()
    await client.aclose()
    store.close()


_TLS: ssl.SSLContext | None = None


def zygote() -> None:
    global _TLS
    _TLS = ssl.create_default_context()  # once, before forking
    emit({"ready": os.getpid()})
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: cycles until killed (or max_cycles)
            code = 0
            try:
                sys.stdin.close()
                asyncio.run(refresh_cycles(command))
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        emit({"pid": pid})
        _, status = os.waitpid(pid, 0)
        emit({"exit": status, "signaled": os.WIFSIGNALED(status)})


# -- store operations under a handicap ----------------------------------------------------------


async def store_ops(args: dict[str, Any]) -> None:
    outcomes: dict[str, Any] = {}

    async def attempt(name: str, call: Any) -> Any:
        try:
            value = await call
        except ArcSagaException as error:
            outcomes[name] = {"error": type(error).__name__, "message": str(error)}
            return None
        except Exception as error:  # an undocumented exception type: the test fails on it
            outcomes[name] = {"error": type(error).__name__, "message": str(error), "bad": True}
            return None
        outcomes[name] = {"ok": True}
        return value

    store = SQLiteEncryptedTokenStore(args["db"], encryption_key=args["key"])
    manager = manager_for(store, args, max_retries=0) if "authority" in args else None
    user = args["user"]
    try:
        if args.get("create"):  # build the store inside the handicapped file system
            await attempt("create", store.save_token(user, args["create"]))
        before = await attempt("read_before", store.get_token(user))
        if args.get("fill"):  # leave no room: a filler file takes the rest of the disk
            try:
                with open(args["fill"], "wb") as filler:
                    while True:
                        filler.write(b"\0" * 4096)
                        filler.flush()
            except OSError:
                pass
        if args.get("fsize_limit") is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = int(args["fsize_limit"])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        await attempt("save", store.save_token(user, args["new_token"]))
        if manager is not None:
            token = await attempt("force_refresh", manager.force_refresh(user))
            outcomes["refresh_returned_token"] = token is not None
        after = await attempt("read_after", store.get_token(user))
        outcomes["row_unchanged"] = "unreadable" if before is None else before == after
    finally:
        if manager is not None:
            await manager.close()
        store.close()
    emit(outcomes)


def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if mode == "stampede":
        asyncio.run(stampede(args))
    elif mode == "zygote":
        zygote()
    elif mode == "store_ops":
        asyncio.run(store_ops(args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
