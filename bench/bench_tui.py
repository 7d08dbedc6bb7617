"""Benchmark saga-tui on a big journal: first paint, tail lag under load, memory.

Targets (issue 5): a 1,000,000-event journal opens to first paint in about a second; another
process appending 5,000 events/s is followed with under 250 ms lag; RSS stays <= 150 MB.

    python bench/bench_tui.py                       # 1M events, 5,000/s for 10 s
    python bench/bench_tui.py --events 200000 --seconds 5

Lag is measured end to end: from the event's ``ts`` (taken by ``log_with_context`` in the writer
process, before the writer's journal queues it) to the moment the TUI hands the batch holding it
to the Events panel. It includes the writer's own batching, the journal commit, the poll interval
(100 ms) and the message hop. Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from saga_magic.core.config import Settings
from saga_magic.core.events import Event, EventJournal
from saga_tui.app import SagaApp
from saga_tui.messages import EventsBatch
from saga_tui.widgets.event_log import EventLog

WRITER = textwrap.dedent(
    """
    import logging, sys, time
    from saga_magic.core.events import EventJournal, install_journal, log_with_context

    path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    journal = EventJournal(path, max_rows=5_000_000, queue_size=100_000)
    install_journal(journal)
    logger = logging.getLogger("saga.bench")
    logger.propagate = False
    start = time.time()
    sent = 0
    while (now := time.time()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            sent += 1
            log_with_context(
                logger, logging.INFO, "copilot_request_start", user_id="bench", op_id="w", n=sent
            )
        time.sleep(0.002)
    journal.flush(30)
    install_journal(None)
    journal.close()
    print(sent)
    """
)


def rss_mb() -> float:
    """Current resident set size of this process in MB."""
    with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def build_journal(path: Path, count: int) -> float:
    """Write ``count`` events through the core's journal writer; return the seconds it took."""
    started = time.perf_counter()
    journal = EventJournal(path, max_rows=count * 2, queue_size=200_000, batch_size=20_000)
    base = time.time() - count / 1000
    for i in range(count):
        journal.append(
            Event(
                ts=base + i / 1000,
                level="WARNING" if i % 100 == 0 else "INFO",
                event="copilot_retry" if i % 100 == 0 else "copilot_request_start",
                user_id=f"user{i % 7}",
                op_id=f"op{i // 10}",
                pid=1,
                context={"n": i, "attempt": 1, "max_attempts": 6, "wait_s": 1.0, "reason": "429"},
            )
        )
        if i % 100_000 == 99_999:
            journal.flush(120)
    journal.flush(300)
    journal.close()
    return time.perf_counter() - started


class LagApp(SagaApp):
    """The app, recording the lag of the newest event in each batch it applies."""

    lags: list[float]
    batches: int

    def on_events_batch(self, message: EventsBatch) -> None:
        """Record, then apply the batch.

        Args:
            message: The batch.
        """
        now = time.time()
        if getattr(self, "measuring", False):
            self.lags.append(now - message.entries[-1].event.ts)
            self.batches += 1
        super().on_events_batch(message)


async def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    folder = Path(args.dir or tempfile.mkdtemp(prefix="saga-bench-"))
    journal = folder / "journal.db"
    if not journal.exists():
        took = build_journal(journal, args.events)
        rows.append(("journal built", f"{args.events:,} events", f"{took:.1f} s"))
    rows.append(("journal size", f"{journal.stat().st_size / 1e6:.0f} MB", ""))
    settings = Settings.from_env().with_overrides(home=folder, journal_path=journal)
    app = LagApp(settings, write_journal=False, token_poll=3600)
    app.lags, app.batches = [], 0
    rss_before = rss_mb()
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        while len(log.entries) < min(args.events, app.window):  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.005)
        await pilot.pause()
        first_paint = time.perf_counter() - started
        rows.append(("first paint (backlog shown)", "target ~1 s", f"{first_paint * 1000:.0f} ms"))
        rows.append(("RSS after first paint", "target <= 150 MB", f"{rss_mb():.0f} MB"))
        app.measuring = True  # type: ignore[attr-defined]
        last = app.tail.last_rowid
        writer = subprocess.Popen(  # noqa: ASYNC220 - the bench owns the loop
            [sys.executable, "-c", WRITER, str(journal), str(args.rate), str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        while writer.poll() is None:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.05)
        sent = int((writer.stdout.read() if writer.stdout else "0").strip() or 0)
        deadline = time.monotonic() + 10
        while app.tail.reader.max_rowid() > app.tail.last_rowid:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await pilot.pause()
        lags = sorted(app.lags)
        rows.append(
            ("tail: events written", f"{args.rate:,}/s for {args.seconds:g} s", f"{sent:,}")
        )
        rows.append(("tail: batches applied", "one message per poll", f"{app.batches:,}"))
        if lags:
            p50 = statistics.median(lags)
            p95 = lags[int(len(lags) * 0.95) - 1] if len(lags) > 1 else lags[0]
            rows.append(("tail lag p50", "target < 250 ms", f"{p50 * 1000:.0f} ms"))
            rows.append(("tail lag p95", "target < 250 ms", f"{p95 * 1000:.0f} ms"))
            rows.append(("tail lag max", "", f"{lags[-1] * 1000:.0f} ms"))
        rows.append(("rows followed", "", f"{app.tail.last_rowid - last:,}"))
        rows.append(("RSS after tailing", "target <= 150 MB", f"{rss_mb():.0f} MB"))
        rows.append(("RSS growth during the run", "flat", f"{rss_mb() - rss_before:+.0f} MB"))
        rows.append(("peak RSS (whole bench)", "", f"{peak_rss_mb():.0f} MB"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="journal size")
    parser.add_argument("--rate", type=int, default=5000, help="events per second appended")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to append")
    parser.add_argument("--dir", help="reuse (or create) the journal in this folder")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    width = max(len(row[0]) for row in rows)
    target = max(len(row[1]) for row in rows)
    print(f"{'measure':<{width}}  {'note':<{target}}  result")
    print(f"{'-' * width}  {'-' * target}  ------")
    for name, note, value in rows:
        print(f"{name:<{width}}  {note:<{target}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
