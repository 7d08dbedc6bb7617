"""Issue 6 item 3 (core part): no secret the sandbox issued reaches any sink, in any fault.

The fault run (``fault_scenarios.run_matrix``) drives every sandbox fault through the engine and
the auth manager with the root logger at DEBUG (httpx and httpcore included), an event
subscriber and an installed SQLite journal. Scanned afterwards, for every access token, refresh
token and device code the sandbox issued, its API key and the store's encryption key (and
distinctive slices of each long one):

* every log record (formatted, with exception text) and the event riding on it;
* every event delivered to subscribers, and every journal row;
* every exception: str, repr, attributes, and the formatted traceback with its chain;
* the raw bytes of every file the run wrote: the encrypted token store, the journal, WAL files.
"""

from __future__ import annotations

import pytest
from fault_scenarios import MatrixRun
from torture_helpers import Report, find_secrets

pytestmark = pytest.mark.torture


def test_no_issued_secret_in_any_sink(fault_run: MatrixRun, report: Report) -> None:
    hits = find_secrets(fault_run.texts, fault_run.secrets)
    kinds: dict[str, int] = {}
    for where, _ in fault_run.texts:
        kind = where.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    report(
        "secret_canary",
        {
            "scenarios": len(fault_run.results),
            "secrets": len(fault_run.secrets),
            "texts_scanned": len(fault_run.texts),
            "events": fault_run.events,
            "hits": len(hits),
            "texts_by_kind": kinds,
            "hit_samples": hits[:10],
        },
    )
    assert len(fault_run.secrets) > 2 * len(fault_run.results)  # tokens were issued and used
    assert {"log", "event", "journal", "file"} <= kinds.keys()
    assert hits == []


def test_the_scanner_finds_a_planted_secret(fault_run: MatrixRun) -> None:
    long_secret = max(fault_run.secrets, key=len)
    planted = [
        ("whole", f"x {long_secret} y"),
        ("tail", f"...{long_secret[-30:]}"),
        ("middle", long_secret[len(long_secret) // 2 - 5 : len(long_secret) // 2 + 30]),
    ]
    assert len(find_secrets(planted, fault_run.secrets)) == 3
