"""Wall time of ``%load_ext saga_magic`` over bare IPython, in fresh processes.

Baseline: a fresh Python process that creates an IPython ``InteractiveShell`` (what a kernel has
before any extension). Measured: the same process, then ``%load_ext saga_magic``. Each sample is
a new subprocess (cold imports, warm OS cache); the modes are interleaved so drift hits them
alike; the table reports the median and the spread of N samples.

Verdict (issue 4): the overhead over the baseline (median with the extension minus median
without) must stay under 0.15 s, and the load must import neither Textual nor Rich (nor the TUI
or the core's HTTP stack). Informational: the load alone, the first subcommand (``%copilot
config``, which imports the core lazily), and the packages the load adds.

The table is printed as Markdown; the figures are written to ``bench/results_load_ext.json``
(``bench/run_all.py`` collects them) unless ``--json`` names another file.

Usage::

    python bench/bench_load_ext.py [-n 15] [--json PATH]

Not run by the test suite (it takes a few seconds and measures the machine as much as the code).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results_load_ext.json"
TARGET_S = 0.15
FORBIDDEN = ("textual", "rich", "saga_tui", "httpx", "cryptography", "sqlite3")
"""Top-level packages ``%load_ext`` must not import (Textual above all)."""

PROBE = """
import json, os, sys, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
t1 = time.perf_counter()
before = set(sys.modules)
if sys.argv[1] != "bare":
    shell.run_line_magic("load_ext", "saga_magic")
t2 = time.perf_counter()
added = sorted(set(sys.modules) - before)
if sys.argv[1] == "first-use":
    from IPython.utils.capture import capture_output
    with capture_output():
        shell.run_line_magic("copilot", "config")
    shell.run_line_magic("unload_ext", "saga_magic")
t3 = time.perf_counter()
print(json.dumps({"shell": t1 - t0, "load": t2 - t1, "first_use": t3 - t2, "added": added}))
"""

Sample = dict[str, Any]


def _sample(mode: str, env: dict[str, str]) -> Sample:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    result: Sample = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def summarize(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    """Turn the raw samples into the figures and the verdict.

    Args:
        samples: ``{"bare": [...], "load": [...], "first-use": [...]}``, each sample with
            ``shell``, ``load``, ``first_use`` (seconds) and ``added`` (module names).

    Returns:
        JSON-safe figures: medians and spreads in ms, the overhead, the forbidden packages the
        load imported, and ``met`` (overhead under the target and nothing forbidden imported).
    """

    def column(mode: str, key: str) -> list[float]:
        return [float(sample[key]) for sample in samples[mode]]

    def totals(mode: str) -> list[float]:
        return [s + ld for s, ld in zip(column(mode, "shell"), column(mode, "load"), strict=True)]

    bare, loaded = totals("bare"), totals("load")
    overhead = statistics.median(loaded) - statistics.median(bare)
    added = sorted({str(name).split(".")[0] for s in samples["load"] for name in s["added"]})
    forbidden = [name for name in FORBIDDEN if name in added]
    return {
        "samples": len(bare),
        "baseline": _spread(bare),
        "with_load_ext": _spread(loaded),
        "load_alone": _spread(column("load", "load")),
        "first_use": _spread(column("first-use", "first_use")),
        "overhead_ms": round(overhead * 1000, 1),
        "target_ms": round(TARGET_S * 1000),
        "textual_imported": "textual" in added,
        "forbidden_imported": forbidden,
        "added_packages": added,
        "met": overhead < TARGET_S and not forbidden,
    }


def render(summary: dict[str, Any]) -> str:
    """Render the figures as a Markdown table and a verdict.

    Args:
        summary: What :func:`summarize` returned.

    Returns:
        Markdown text.
    """

    def row(label: str, spread: dict[str, float]) -> str:
        return (
            f"| {label} | {spread['median_ms']:.1f} ms | "
            f"{spread['min_ms']:.1f} .. {spread['max_ms']:.1f} ms |"
        )

    forbidden = summary["forbidden_imported"]
    verdict = "met" if summary["met"] else "**NOT met**"
    lines = [
        f"`%load_ext saga_magic` over bare IPython: median of {summary['samples']} fresh "
        "processes per mode.",
        "",
        "| measurement | median | min .. max |",
        "|---|---|---|",
        row("bare IPython shell (baseline)", summary["baseline"]),
        row("shell + `%load_ext saga_magic`", summary["with_load_ext"]),
        row("`%load_ext saga_magic` alone", summary["load_alone"]),
        row("first `%copilot config` (lazy core import)", summary["first_use"]),
        "",
        f"Overhead over the baseline (difference of medians): **{summary['overhead_ms']:.1f} ms**"
        f"; target < {summary['target_ms']} ms and no {', '.join(FORBIDDEN)} import: {verdict}.",
        "",
        f"Textual imported by the load: {'YES' if summary['textual_imported'] else 'no'}"
        + (f"; forbidden packages imported: {', '.join(forbidden)}" if forbidden else "")
        + ".",
        "",
        f"Top-level packages the load adds: {', '.join(summary['added_packages']) or 'none'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON figures.

    Args:
        argv: Command-line arguments (``-n``, ``--json``).

    Returns:
        0 when the verdict is met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="fresh processes per mode (default 15)")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the figures (default {DEFAULT_JSON.relative_to(HERE.parent)})",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(IPYTHONDIR=str(Path(tmp) / "ipython"), ARC_SAGA_HOME=str(Path(tmp) / "home"))
        samples: dict[str, list[Sample]] = {"bare": [], "load": [], "first-use": []}
        for _ in range(args.n):  # interleaved, so drift hits every mode alike
            for mode in samples:
                samples[mode].append(_sample(mode, env))

    summary = summarize(samples)
    print(render(summary))
    args.json.write_text(json.dumps({"name": "load_ext", **summary}, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if summary["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
