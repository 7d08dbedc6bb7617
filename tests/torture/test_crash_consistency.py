"""Issue 6 item 2: SIGKILL at random points of refresh+save cycles loses nothing.

A fork server (``torture_worker.py zygote``) starts children that run ``force_refresh`` cycles
(token POST to the sandbox, encrypted save, lease) round-robin over three users; the test kills
each child with SIGKILL after a random (seeded) delay: one kill in five during the child's
start-up (store opening, WAL recovery), the others within 0.1 s after its first token POST.
After every kill:

* the database passes ``PRAGMA integrity_check`` and every row decrypts;
* every row is a complete token set: access and refresh token issued by the sandbox *together*
  (same issue time), for that user, with ``expires_at``, ``scope`` and ``token_type``;
* the row's refresh token is one the sandbox still accepts (Entra keeps superseded refresh tokens
  valid). How many kills landed between the token POST and the save (the row then holds a
  superseded refresh token, which an IdP with strict reuse detection would refuse) is reported.

At the end each user's stored refresh token is redeemed for real.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from torture_helpers import Report, Scale, Worker, sandbox_args, seed

from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox

pytestmark = [pytest.mark.torture, pytest.mark.slow]

USERS = ["crash-a@contoso.com", "crash-b@contoso.com", "crash-c@contoso.com"]
LIFETIME = 3600
FIELDS = {"access_token", "refresh_token", "expires_at", "scope", "token_type"}


async def check_rows(sb: Sandbox, db: Path, key: str) -> dict[str, Any]:
    """Verify every row; return the problems found and the refresh tokens in use."""
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    problems: list[str] = [] if integrity == "ok" else [f"integrity_check: {integrity}"]
    superseded: set[tuple[str, str]] = set()
    with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
        rows = {user: await store.get_token(user) for user in USERS}
    state = sb.state
    with state.lock:
        for user, row in rows.items():
            if row is None or not row.keys() >= FIELDS:
                problems.append(f"{user}: incomplete row {sorted(row or {})}")
                continue
            access = state.access_tokens.get(row["access_token"])
            refresh = state.refresh_tokens.get(row["refresh_token"])
            if access is None or refresh is None:
                problems.append(f"{user}: a token the sandbox never issued")
                continue
            if access.user != user or refresh.user != user:
                problems.append(f"{user}: tokens of another user")
            if abs(access.expires_at - LIFETIME - refresh.issued_at) > 1e-6:
                problems.append(f"{user}: access and refresh token from different answers")
            if refresh.inactive or refresh.serial < state.user(user).valid_from_serial:
                problems.append(f"{user}: refresh token no longer accepted")
            if refresh.superseded:
                superseded.add((user, row["refresh_token"]))
    return {"problems": problems, "superseded": superseded, "rows": rows}


def _wait_for_post(sb: Sandbox, before: int, *, timeout: float) -> None:
    """Wait until the child has made its first token POST (its cycles have begun)."""
    deadline = time.monotonic() + timeout
    while sb.post_count("token") == before and time.monotonic() < deadline:
        time.sleep(0.002)


async def test_sigkill_during_refresh_cycles(tmp_path: Path, scale: Scale, report: Report) -> None:
    rng = random.Random(20240601)
    key = SQLiteEncryptedTokenStore.generate_key()
    db = tmp_path / "tokens.db"
    min_kills, min_cycles = scale.pick(25, 100), scale.pick(0, 1000)
    kills = unsignaled = 0
    window_hits: set[tuple[str, str]] = set()
    cycles_per_kill: list[int] = []
    problems: list[str] = []
    with Sandbox(token_lifetime=LIFETIME) as sb:
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            for user in USERS:
                await seed(sb, store, user)
        zygote = Worker("zygote", {})
        try:
            zygote.receive(timeout=60)
            base = {**sandbox_args(sb), "db": str(db), "key": key, "users": USERS}
            started = time.perf_counter()
            while kills < min_kills or sb.post_count("token") < min_cycles:
                posts_before = sb.post_count("token")
                zygote.send({**base, "generation": kills + 1, "max_cycles": 100_000})
                pid = zygote.receive()["pid"]
                if rng.random() < 0.2:  # during start-up: opening the store, WAL recovery
                    time.sleep(rng.uniform(0.0, 0.1))
                else:  # inside the cycles, however slow the start-up was
                    _wait_for_post(sb, posts_before, timeout=10.0)
                    time.sleep(rng.uniform(0.0, 0.1))
                os.kill(pid, signal.SIGKILL)
                unsignaled += not zygote.receive()["signaled"]
                kills += 1
                cycles_per_kill.append(sb.post_count("token") - posts_before)
                checked = await check_rows(sb, db, key)
                problems += [f"kill {kills}: {p}" for p in checked["problems"]]
                window_hits |= checked["superseded"]
            elapsed = time.perf_counter() - started
        finally:
            zygote.close()
        final = await check_rows(sb, db, key)
        redeemed = []
        async with httpx.AsyncClient() as client:
            for user in USERS:
                row = final["rows"][user]
                answer = await client.post(
                    sb.token_endpoint,
                    data={
                        "client_id": sb.client_id,
                        "grant_type": "refresh_token",
                        "refresh_token": row["refresh_token"],
                        "scope": row["scope"],
                    },
                )
                redeemed.append(answer.status_code)

    figures = {
        "kills": kills,
        "refresh_cycles": sum(cycles_per_kill),
        "cycles_per_kill_max": max(cycles_per_kill),
        "kills_with_zero_cycles": cycles_per_kill.count(0),
        "problems": len(problems),
        "lost_refresh_tokens": sum(status != 200 for status in redeemed),
        "kills_between_post_and_save": len(window_hits),
        "children_not_killed": unsignaled,
        "elapsed_s": round(elapsed, 2),
        "problem_samples": problems[:5],
    }
    report("crash_consistency", figures)
    assert problems == []
    assert redeemed == [200] * len(USERS)
    assert unsignaled == 0, zygote.stderr
    assert sum(cycles_per_kill) >= kills  # the kills did land inside the cycles
