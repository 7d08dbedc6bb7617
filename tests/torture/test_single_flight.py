"""Issue 6 item 1: cross-process single flight under strict refresh-token rotation.

N processes x M concurrent ``get_valid_token`` calls on a token every process sees as expired,
per round; the sandbox answers a reused (superseded) refresh token with ``invalid_grant``.
Each round moves every worker's clock 2 h ahead, so every cached and stored token has expired;
the sandbox issues opaque access tokens (a JWT's ``exp`` is in real time and would look expired
for ever after the jump).
Goals: one token-endpoint POST per expiry, no ``invalid_grant``, no "database is locked".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from torture_helpers import Report, Scale, Worker, sandbox_args, seed

from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox

pytestmark = [pytest.mark.torture, pytest.mark.slow]

USER = "stampede@contoso.com"


async def test_one_post_per_expiry_across_processes(
    tmp_path: Path, scale: Scale, report: Report
) -> None:
    processes, concurrency = scale.pick(4, 8), scale.pick(25, 50)
    rounds = scale.pick(3, 5)
    key = SQLiteEncryptedTokenStore.generate_key()
    db = tmp_path / "tokens.db"
    with Sandbox(token_lifetime=3600, opaque_tokens=True) as sb:
        sb.rt_reuse_strict(True)
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            await seed(sb, store, USER, expired=True)
        args = {**sandbox_args(sb), "db": str(db), "key": key, "user": USER}
        workers = [
            Worker("stampede", {**args, "concurrency": concurrency}) for _ in range(processes)
        ]
        per_round: list[dict[str, Any]] = []
        try:
            for worker in workers:
                worker.receive(timeout=60)  # ready
            for number in range(rounds):
                posts_before = sb.post_count("token")
                start_at = time.time() + 0.3
                for worker in workers:
                    worker.send({"round": number, "start_at": start_at})
                answers = [worker.receive(timeout=60) for worker in workers]
                per_round.append(
                    {
                        "round": number,
                        "posts": sb.post_count("token") - posts_before,
                        "errors": sum(int(a["error_count"]) for a in answers),
                        "invalid_grant": sum(int(a["invalid_grant"]) for a in answers),
                        "locked": sum(int(a["locked"]) for a in answers),
                        "distinct_tokens": len({a["tokens"] for a in answers}),
                        "slowest_s": round(max(float(a["elapsed_s"]) for a in answers), 3),
                        "sample_errors": [e for a in answers for e in a["errors"]][:3],
                    }
                )
        finally:
            codes = [worker.close() for worker in workers]
        token_statuses = [r.status for r in sb.requests("token")]

    figures = {
        "processes": processes,
        "concurrency": concurrency,
        "rounds": rounds,
        "posts_per_expiry_max": max(r["posts"] for r in per_round),
        "invalid_grant": sum(r["invalid_grant"] for r in per_round) + token_statuses.count(400),
        "database_locked": sum(r["locked"] for r in per_round),
        "caller_errors": sum(r["errors"] for r in per_round),
        "slowest_round_s": max(r["slowest_s"] for r in per_round),
        "rounds_detail": per_round,
    }
    report("single_flight", figures)
    assert codes == [0] * processes
    assert [r["posts"] for r in per_round] == [1] * rounds, per_round
    assert figures["invalid_grant"] == 0, per_round
    assert figures["database_locked"] == 0, per_round
    assert figures["caller_errors"] == 0, per_round
