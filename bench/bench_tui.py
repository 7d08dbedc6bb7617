"""Benchmark saga-tui on a big journal: first paint, tail lag under load, memory.

Targets (issue 5): a 1,000,000-event journal opens to first paint in about a second; another
process appending 5,000 events/s is followed with under 250 ms lag; RSS stays <= 150 MB.

    python bench/bench_tui.py                       # 1M events, 5,000/s for 10 s
    python bench/bench_tui.py --events 200000 --seconds 5 [--json PATH]

Lag is measured end to end for the OLDEST event of each batch (the one that waited longest, so
the worst case of the batch): from its ``ts`` (taken by ``log_with_context`` in the writer
process, before the writer's journal queues it) to the moment the TUI hands the batch holding it
to the Events panel. It includes the writer's own batching, the journal commit, the poll interval
(100 ms) and the message hop. The newest event of a batch waited least; its lag is reported too,
for comparison.

The table (Markdown) states the target next to each figure; the figures are written to
``bench/results_tui.json`` (``bench/run_all.py`` collects them) unless ``--json`` names another
file. Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results_tui.json"
FIRST_PAINT_S = 1.0
LAG_S = 0.25
RSS_MB = 150.0

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
    """The app, recording for each batch it applies the lag of its oldest and newest event."""

    lags: list[float]
    newest_lags: list[float]
    batches: int
    measuring: bool

    def on_events_batch(self, message: EventsBatch) -> None:
        """Record, then apply the batch.

        Args:
            message: The batch.
        """
        now = time.time()
        if self.measuring:
            self.lags.append(now - message.entries[0].event.ts)  # the worst of the batch
            self.newest_lags.append(now - message.entries[-1].event.ts)
            self.batches += 1
        super().on_events_batch(message)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def verdict(ok: bool | None) -> str:
    """``met``, ``NOT met`` or empty (informational)."""
    return "" if ok is None else ("met" if ok else "**NOT met**")


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the benchmark and return its figures."""
    figures: dict[str, object] = {"events": args.events, "rate": args.rate, "seconds": args.seconds}
    folder = Path(args.dir or tempfile.mkdtemp(prefix="saga-bench-"))
    journal = folder / "journal.db"
    if not journal.exists():
        figures["journal_build_s"] = round(build_journal(journal, args.events), 1)
    figures["journal_mb"] = round(journal.stat().st_size / 1e6)
    settings = Settings.from_env().with_overrides(home=folder, journal_path=journal)
    app = LagApp(settings, write_journal=False, token_poll=3600)
    app.lags, app.newest_lags, app.batches, app.measuring = [], [], 0, False
    rss_before = rss_mb()
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        while len(log.entries) < min(args.events, app.window):  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.005)
        await pilot.pause()
        figures["first_paint_s"] = round(time.perf_counter() - started, 3)
        figures["rss_first_paint_mb"] = round(rss_mb())
        app.measuring = True
        last = app.tail.last_rowid
        writer = subprocess.Popen(  # noqa: ASYNC220 - the bench owns the loop
            [sys.executable, "-c", WRITER, str(journal), str(args.rate), str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        while writer.poll() is None:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.05)
        figures["written"] = int((writer.stdout.read() if writer.stdout else "0").strip() or 0)
        deadline = time.monotonic() + 10
        while app.tail.reader.max_rowid() > app.tail.last_rowid:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await pilot.pause()
        figures["batches"] = app.batches
        figures["followed"] = app.tail.last_rowid - last
        if app.lags:
            figures["lag_oldest_p50_s"] = round(statistics.median(app.lags), 3)
            figures["lag_oldest_p95_s"] = round(percentile(app.lags, 0.95), 3)
            figures["lag_oldest_max_s"] = round(max(app.lags), 3)
            figures["lag_newest_p50_s"] = round(statistics.median(app.newest_lags), 3)
        figures["rss_after_tail_mb"] = round(rss_mb())
        figures["rss_growth_mb"] = round(rss_mb() - rss_before)
        figures["rss_peak_mb"] = round(peak_rss_mb())
    return figures


def rows(figures: dict[str, object]) -> list[tuple[str, str, str, str]]:
    """The table: measure, result, target, verdict."""

    def ms(key: str) -> str:
        value = figures.get(key)
        return f"{float(value) * 1000:.0f} ms" if isinstance(value, int | float) else "n/a"

    def under(key: str, limit: float) -> bool | None:
        value = figures.get(key)
        return float(value) <= limit if isinstance(value, int | float) else None

    table = []
    if "journal_build_s" in figures:
        table.append(
            (
                "journal built",
                f"{figures['events']:,} events in {figures['journal_build_s']} s",
                "",
                "",
            )
        )
    table += [
        ("journal size", f"{figures['journal_mb']} MB", "", ""),
        (
            "first paint (backlog shown)",
            ms("first_paint_s"),
            f"~{FIRST_PAINT_S:g} s",
            verdict(under("first_paint_s", FIRST_PAINT_S * 1.5)),
        ),
        (
            "RSS after first paint",
            f"{figures['rss_first_paint_mb']} MB",
            f"<= {RSS_MB:g} MB",
            verdict(under("rss_first_paint_mb", RSS_MB)),
        ),
        (
            "tail: events written",
            f"{figures['written']:,} ({figures['rate']:,}/s for {figures['seconds']:g} s)",
            "",
            "",
        ),
        ("tail: batches applied", f"{figures['batches']:,}", "one message per poll", ""),
        (
            "tail lag p50 (oldest event of each batch)",
            ms("lag_oldest_p50_s"),
            f"< {LAG_S * 1000:g} ms",
            verdict(under("lag_oldest_p50_s", LAG_S)),
        ),
        (
            "tail lag p95 (oldest event of each batch)",
            ms("lag_oldest_p95_s"),
            f"< {LAG_S * 1000:g} ms",
            verdict(under("lag_oldest_p95_s", LAG_S)),
        ),
        ("tail lag max (oldest event of each batch)", ms("lag_oldest_max_s"), "", ""),
        ("tail lag p50 (newest event, for comparison)", ms("lag_newest_p50_s"), "", ""),
        ("rows followed", f"{figures['followed']:,}", f"= {figures['written']:,} written", ""),
        (
            "RSS after tailing",
            f"{figures['rss_after_tail_mb']} MB",
            f"<= {RSS_MB:g} MB",
            verdict(under("rss_after_tail_mb", RSS_MB)),
        ),
        ("RSS growth during the run", f"{figures['rss_growth_mb']:+} MB", "flat", ""),
        ("peak RSS (whole bench)", f"{figures['rss_peak_mb']} MB", "", ""),
    ]
    return table


def render(figures: dict[str, object]) -> str:
    """The figures as a Markdown table, the target next to each."""
    lines = ["| measure | result | target | verdict |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {value} | {target} | {ok} |" for name, value, target, ok in rows(figures)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON figures.

    Args:
        argv: Command-line arguments.

    Returns:
        0 when every target is met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="journal size")
    parser.add_argument("--rate", type=int, default=5000, help="events per second appended")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to append")
    parser.add_argument("--dir", help="reuse (or create) the journal in this folder")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the figures (default {DEFAULT_JSON.relative_to(HERE.parent)})",
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    print(render(figures))
    met = all(ok != "**NOT met**" for *_, ok in rows(figures))
    args.json.write_text(json.dumps({"name": "tui", **figures, "met": met}, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
