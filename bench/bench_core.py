"""Benchmarks of the core against its peers, on the sandbox (issue 6).

1. Cache-hit ``get_valid_token`` vs MSAL ``acquire_token_silent`` with a warm cache (MSAL fed a
   real token set by the sandbox; no network: see ``bench_common.msal_session``). Goal >= 10x.
2. Refresh stampede: token POSTs when 4 processes x 100 callers find the token expired, vs MSAL
   (4 processes x 100 threads), with strict refresh-token rotation and with Entra's lenient one.
3. ``reason()`` per-call time over loopback vs openai-python's ``AsyncAzureOpenAI`` (and a bare
   ``httpx`` POST as the floor), same sandbox deployment, same request. Goal: ratio <= 1.0.
4. Token store: encrypted save and get throughput, 1 process and 4 processes.

Every figure is a median of repeated runs; the sandbox runs in its own process. When a goal is
missed the run profiles the slow side and prints where the time goes.

Usage::

    python bench/bench_core.py [--quick] [--json results.json] [--only cache_hit,reason]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from bench_common import (
    SCOPE,
    Result,
    SandboxProcess,
    Workers,
    describe_machine,
    fmt_ratio,
    fmt_time,
    machine,
    median,
    msal_app,
)

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask

RESOURCE_SCOPE = SCOPE.split()[0]


def _top(profiler: cProfile.Profile, lines: int) -> str:
    """The top functions of a profile by cumulative time."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(lines)
    text = out.getvalue()
    return text[text.find("   ncalls") :].rstrip()


async def new_store(folder: Path, name: str) -> tuple[SQLiteEncryptedTokenStore, str]:
    key = SQLiteEncryptedTokenStore.generate_key()
    store = SQLiteEncryptedTokenStore(folder / name, encryption_key=key)
    await store.list_tokens()
    return store, key


def manager_on(sbx: SandboxProcess, store: SQLiteEncryptedTokenStore) -> EntraIDAuthManager:
    return EntraIDAuthManager(
        store, tenant_id=sbx.tenant_id, client_id=sbx.client_id, authority_host=sbx.base_url
    )


# -- 1. cache hit ----------------------------------------------------------------------------------


async def bench_cache_hit(sbx: SandboxProcess, folder: Path, quick: bool) -> Result:
    repeats, n_saga, n_msal = (3, 20_000, 1_000) if quick else (7, 200_000, 5_000)
    store, _ = await new_store(folder, "cache_hit.db")
    user = "cache-hit@contoso.com"
    await store.save_token(user, sbx.issue_tokens(user))
    manager = manager_on(sbx, store)
    get = manager.get_valid_token
    await get(user)

    async def saga_run() -> float:
        started = time.perf_counter()
        for _ in range(n_saga):
            await get(user)
        return (time.perf_counter() - started) / n_saga

    saga = [await saga_run() for _ in range(repeats)]
    await manager.close()
    store.close()

    import msal

    cache = msal.SerializableTokenCache()
    app, session = msal_app(sbx.base_url, sbx.tenant_id, sbx.client_id, cache)
    issued = sbx.issue_tokens("msal-cache-hit@contoso.com")
    primed = app.acquire_token_by_refresh_token(issued["refresh_token"], scopes=[RESOURCE_SCOPE])
    assert "access_token" in primed, primed
    account = app.get_accounts()[0]
    posts = sbx.token_posts()

    def msal_run() -> float:
        started = time.perf_counter()
        for _ in range(n_msal):
            answer = app.acquire_token_silent([RESOURCE_SCOPE], account=account)
        elapsed = time.perf_counter() - started
        assert answer is not None
        assert answer.get("token_source") == "cache", answer
        return elapsed / n_msal

    msal_times = [msal_run() for _ in range(repeats)]
    assert sbx.token_posts() == posts  # served from the cache, no request
    session.close()
    ours, theirs = median(saga), median(msal_times)
    ratio = theirs / ours
    return Result(
        name="cache_hit",
        title="Cache-hit token: get_valid_token vs MSAL acquire_token_silent",
        headers=["implementation", "per call (median)", "calls per run", "runs", "speed-up"],
        rows=[
            ["saga `await get_valid_token()`", fmt_time(ours), n_saga, repeats, fmt_ratio(ratio)],
            ["MSAL `acquire_token_silent()`", fmt_time(theirs), n_msal, repeats, "1x"],
        ],
        goal=">= 10x faster than MSAL",
        met=ratio >= 10,
        notes=[
            f"MSAL {msal.__version__}, warm cache primed by a real refresh against the sandbox "
            "(instance discovery off, every HTTP call mapped onto the loopback sandbox); no "
            "request was made while timing.",
            "Ours includes the coroutine and `await` overhead (the API is async); MSAL is sync.",
        ],
        figures={"saga_s": ours, "msal_s": theirs, "ratio": ratio},
    )


# -- 2. refresh stampede ---------------------------------------------------------------------------


def _msal_cache_with_expired_token(sbx: SandboxProcess, user: str) -> str:
    import msal

    cache = msal.SerializableTokenCache()
    app, session = msal_app(sbx.base_url, sbx.tenant_id, sbx.client_id, cache)
    issued = sbx.issue_tokens(user)
    primed = app.acquire_token_by_refresh_token(issued["refresh_token"], scopes=[RESOURCE_SCOPE])
    assert "access_token" in primed, primed
    session.close()
    data = json.loads(cache.serialize())
    past = str(int(time.time()) - 600)
    for entry in data["AccessToken"].values():
        entry["expires_on"] = entry["extended_expires_on"] = past
        entry.pop("refresh_on", None)
    return json.dumps(data)


async def _stampede_once(
    sbx: SandboxProcess, folder: Path, impl: str, processes: int, callers: int, run: int
) -> dict[str, Any]:
    user = f"stampede-{impl}-{run}@contoso.com"
    args: dict[str, Any] = {
        "base_url": sbx.base_url,
        "tenant_id": sbx.tenant_id,
        "client_id": sbx.client_id,
        "user": user,
        "concurrency": callers,
    }
    if impl == "saga":
        store, key = await new_store(folder, f"stampede-{run}-{time.time_ns()}.db")
        body = sbx.issue_tokens(user)
        body.pop("expires_in")
        body["expires_at"] = time.time() - 600  # expired in every process
        await store.save_token(user, body)
        store.close()
        args |= {"db": str(store.db_path), "key": key}
        mode = "saga_stampede"
    else:
        args["cache"] = _msal_cache_with_expired_token(sbx, user)
        mode = "msal_stampede"
    workers = Workers(processes, mode, args)
    seen = len(sbx.token_statuses())
    posts = sbx.token_posts()
    results = workers.run()
    statuses = sbx.token_statuses()[seen:]
    return {
        "posts": sbx.token_posts() - posts,
        "invalid_grant": statuses.count(400),
        "caller_errors": sum(r["errors"] for r in results),
        "locked": sum(r["locked"] for r in results),
        "wall_s": max(r["elapsed_s"] for r in results),
    }


async def bench_stampede(sbx: SandboxProcess, folder: Path, quick: bool) -> Result:
    processes, callers, repeats = (4, 100, 1) if quick else (4, 100, 3)
    rows, figures = [], {}
    for strict in (True, False):
        sbx.strict_rotation(strict)
        for impl in ("saga", "msal"):
            runs = [
                await _stampede_once(sbx, folder, impl, processes, callers, run)
                for run in range(repeats)
            ]
            summary = {k: median([r[k] for r in runs]) for k in runs[0]}
            summary["posts_max"] = max(r["posts"] for r in runs)
            key = f"{impl}_{'strict' if strict else 'lenient'}"
            figures[key] = summary
            rows.append(
                [
                    "saga" if impl == "saga" else "MSAL",
                    "strict (reuse -> invalid_grant)" if strict else "lenient (Entra)",
                    f"{summary['posts']:g} (max {summary['posts_max']})",
                    f"{summary['invalid_grant']:g}",
                    f"{summary['caller_errors']:g}",
                    f"{summary['locked']:g}",
                    fmt_time(summary["wall_s"]),
                ]
            )
    sbx.strict_rotation(False)
    met = figures["saga_strict"]["posts_max"] == 1 and figures["saga_strict"]["invalid_grant"] == 0
    return Result(
        name="stampede",
        title=f"Refresh stampede: {processes} processes x {callers} callers, one expired token",
        headers=[
            "implementation",
            "rotation",
            "token POSTs (median)",
            "invalid_grant",
            "failed calls",
            "database is locked",
            "wall time",
        ],
        rows=rows,
        goal="1 POST per expiry, 0 invalid_grant, 0 'database is locked' (saga)",
        met=met,
        notes=[
            f"Median of {repeats} runs; workers are separate processes released together.",
            "saga: coroutines in each process share one token store (SQLite lease, "
            "single flight). MSAL: threads in each process share one app and a cache "
            "deserialised from the same expired state; MSAL has no cross-process coordination.",
        ],
        figures=figures,
    )


# -- 3. reason() vs openai-python ------------------------------------------------------------------

SYSTEM = "You are a terse assistant."
PROMPT = "Summarise the quarterly numbers for the board in one sentence please."


async def bench_reason(sbx: SandboxProcess, folder: Path, quick: bool) -> Result:
    import openai

    calls, repeats = (60, 3) if quick else (300, 7)
    user = "reason@contoso.com"
    store, _ = await new_store(folder, "reason.db")
    body = sbx.issue_tokens(user)
    await store.save_token(user, body)
    token = str(body["access_token"])
    manager = manager_on(sbx, store)
    engine = CopilotReasoningEngine(manager, endpoint=sbx.chat_endpoint, user_id=user)
    task = AITask(PROMPT, system_prompt=SYSTEM, max_tokens=16, temperature=0.2)

    async def provider() -> str:
        return token

    client = openai.AsyncAzureOpenAI(
        azure_endpoint=sbx.base_url,
        api_version=sbx.api_version,
        azure_ad_token_provider=provider,
        max_retries=0,
    )
    raw = httpx.AsyncClient()
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT},
    ]

    async def saga_call() -> None:
        result = await engine.reason(task)
        assert result.response_text

    async def openai_call() -> None:
        answer = await client.chat.completions.create(
            model="gpt-4o", messages=messages, max_tokens=16, temperature=0.2
        )
        assert answer.choices[0].message.content

    async def httpx_call() -> None:
        response = await raw.post(
            sbx.chat_endpoint,
            json={"messages": messages, "max_tokens": 16, "temperature": 0.2},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.json()["choices"][0]["message"]["content"]

    impls: dict[str, Callable[[], Awaitable[None]]] = {
        "httpx": httpx_call,
        "saga": saga_call,
        "openai": openai_call,
    }
    for call in impls.values():  # warm up: connections, caches, lazy imports
        for _ in range(20):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in impls}
    names = list(impls)
    for _ in range(repeats):  # calls interleaved one by one (rotating order): load drift cancels
        per_call: dict[str, list[float]] = {name: [] for name in impls}
        for index in range(calls):
            for name in names[index % 3 :] + names[: index % 3]:
                started = time.perf_counter()
                await impls[name]()
                per_call[name].append(time.perf_counter() - started)
        for name in impls:
            samples[name].append(statistics.median(per_call[name]))
    cpu: dict[str, float] = {}
    for name, call in impls.items():  # client-side CPU per call (the sandbox is elsewhere)
        started = time.process_time()
        for _ in range(calls):
            await call()
        cpu[name] = (time.process_time() - started) / calls
    profile = ""
    ours, theirs, floor = (median(samples[name]) for name in ("saga", "openai", "httpx"))
    ratio = ours / theirs
    if ratio > 1.0:  # goal missed: where does our time go?
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            await saga_call()
        profiler.disable()
        profile = _top(profiler, 25)
    await engine.close()
    await manager.close()
    await client.close()
    await raw.aclose()
    store.close()
    return Result(
        name="reason",
        title="reason() per call over loopback vs openai-python AsyncAzureOpenAI",
        headers=[
            "client",
            "per call (median)",
            "over bare httpx",
            "ratio to openai",
            "client CPU per call",
        ],
        rows=[
            [
                "bare `httpx.AsyncClient.post` (floor)",
                fmt_time(floor),
                "-",
                fmt_ratio(floor / theirs),
                fmt_time(cpu["httpx"]),
            ],
            [
                "saga `engine.reason()`",
                fmt_time(ours),
                fmt_time(ours - floor),
                fmt_ratio(ratio),
                fmt_time(cpu["saga"]),
            ],
            [
                f"openai {openai.__version__} `chat.completions.create()`",
                fmt_time(theirs),
                fmt_time(theirs - floor),
                "1x",
                fmt_time(cpu["openai"]),
            ],
        ],
        goal="ratio <= 1.0",
        met=ratio <= 1.0,
        notes=[
            f"{calls} sequential calls per client per run, the three clients interleaved call by "
            f"call in rotating order; {repeats} runs; median per call of each run, then the "
            "median of the runs. Client CPU: process time over a further "
            f"{calls} calls each (the sandbox runs in another process).",
            "Same sandbox deployment (Azure deployments URL, api-version "
            f"{sbx.api_version}), same messages, max_tokens and temperature; the sandbox's own "
            "time is in every row. saga: token from the auth manager's cache, events on, no "
            "subscriber or journal; openai: azure_ad_token_provider returning the same token.",
        ]
        + ([f"Profile of saga (goal missed):\n\n```\n{profile.strip()}\n```"] if profile else []),
        figures={
            "saga_s": ours,
            "openai_s": theirs,
            "httpx_s": floor,
            "ratio": ratio,
            "cpu_s": cpu,
        },
    )


# -- 4. token store throughput ---------------------------------------------------------------------


async def bench_store(folder: Path, quick: bool) -> Result:
    saves, gets, repeats = (100, 1_000, 1) if quick else (400, 4_000, 3)
    rows, figures = [], {}
    for processes in (1, 4):
        for op in ("save", "get"):
            rates = []
            for run in range(repeats):
                key = SQLiteEncryptedTokenStore.generate_key()
                db = folder / f"store-{processes}-{op}-{run}.db"
                with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
                    await store.list_tokens()  # create the schema once, before the workers
                workers = Workers(
                    processes,
                    "store",
                    {
                        "db": str(db),
                        "key": key,
                        "users": [f"user-{i}@contoso.com" for i in range(4)],
                        "saves": saves if op == "save" else 0,
                        "gets": gets if op == "get" else 0,
                    },
                )
                results = workers.run()
                count = (saves if op == "save" else gets) * processes
                slowest = max(r[f"{op}_s"] for r in results)
                rates.append(count / slowest)
            rate = median(rates)
            figures[f"{op}_{processes}p_per_s"] = rate
            rows.append([op, processes, f"{rate:,.0f}", fmt_time(processes / rate)])
    return Result(
        name="store",
        title="Token store: encrypted save and get throughput",
        headers=["operation", "processes", "ops/s (all processes)", "time per op, per process"],
        rows=rows,
        notes=[
            f"Median of {repeats} runs. Save: {saves} `save_token` per process (one write "
            "transaction each: key check, Fernet encrypt, version bump, upsert; WAL, "
            f"synchronous=FULL); get: {gets} `get_token` per process (read transaction, key "
            "check, Fernet decrypt). A token set of ~2.5 KB, 4 users per process, one database.",
        ],
        figures=figures,
    )


# -- main ------------------------------------------------------------------------------------------

BENCHES = ("cache_hit", "stampede", "reason", "store")


async def run_all(quick: bool, only: set[str]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, SandboxProcess(token_lifetime=3600) as sbx:
        folder = Path(tmp)
        if "cache_hit" in only:
            results.append(await bench_cache_hit(sbx, folder, quick))
        if "stampede" in only:
            results.append(await bench_stampede(sbx, folder, quick))
        if "reason" in only:
            results.append(await bench_reason(sbx, folder, quick))
        if "store" in only:
            results.append(await bench_store(folder, quick))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the tables, optionally write JSON.

    Args:
        argv: ``--quick`` (small sizes, for a smoke run), ``--json PATH``, ``--only a,b``.

    Returns:
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = parser.parse_args(argv)
    info = machine()
    print(f"Machine: {describe_machine(info)}\n")
    results = asyncio.run(run_all(args.quick, set(args.only.split(","))))
    for result in results:
        print(result.markdown())
    if args.json is not None:
        payload = {"machine": info, "results": [vars(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
