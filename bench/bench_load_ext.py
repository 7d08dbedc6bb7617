"""Wall time of ``%load_ext saga_magic`` over bare IPython, in fresh processes.

Baseline: a fresh Python process that creates an IPython ``InteractiveShell`` (what a kernel has
before any extension). Measured: the same process, then ``%load_ext saga_magic``. Each sample is
a new subprocess (cold imports, warm OS cache); the table reports the median and the spread of N
samples. Target (issue 4): the load adds less than 0.15 s. Informational: the first subcommand
(``%copilot config``), which imports the core lazily, and the modules the load adds.

Usage::

    python bench/bench_load_ext.py [-n 15] [--json results.json]

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


def _sample(mode: str, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _ms(values: list[float]) -> str:
    median = statistics.median(values) * 1000
    low, high = min(values) * 1000, max(values) * 1000
    return f"{median:8.1f} ms   [{low:6.1f} .. {high:6.1f}]"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: Command-line arguments (``-n``, ``--json``).

    Returns:
        0 when the median load is under the 0.15 s target, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="fresh processes per mode (default 15)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(IPYTHONDIR=str(Path(tmp) / "ipython"), ARC_SAGA_HOME=str(Path(tmp) / "home"))
        samples: dict[str, list[dict[str, object]]] = {"bare": [], "load": [], "first-use": []}
        for _ in range(args.n):  # interleaved, so drift hits every mode alike
            for mode in samples:
                samples[mode].append(_sample(mode, env))

    def column(mode: str, key: str) -> list[float]:
        return [float(str(sample[key])) for sample in samples[mode]]

    bare_total = [
        s + ld for s, ld in zip(column("bare", "shell"), column("bare", "load"), strict=True)
    ]
    load_total = [
        s + ld for s, ld in zip(column("load", "shell"), column("load", "load"), strict=True)
    ]
    overhead = statistics.median(load_total) - statistics.median(bare_total)
    load_only = statistics.median(column("load", "load"))
    added = sorted({str(name).split(".")[0] for name in samples["load"][0]["added"]})  # type: ignore[attr-defined]

    print(f"%load_ext saga_magic over bare IPython: median of {args.n} fresh processes\n")
    print(f"{'measurement':<44} {'median':>11}   [min .. max]")
    print(f"{'bare IPython shell (baseline)':<44} {_ms(bare_total)}")
    print(f"{'shell + %load_ext saga_magic':<44} {_ms(load_total)}")
    print(f"{'%load_ext saga_magic alone':<44} {_ms(column('load', 'load'))}")
    print(
        f"{'first %copilot config (lazy core import)':<44} {_ms(column('first-use', 'first_use'))}"
    )
    print(f"\noverhead over baseline (difference of medians): {overhead * 1000:.1f} ms")
    print(
        f"target < 150 ms: {'met' if load_only < 0.15 else 'NOT met'} ({load_only * 1000:.1f} ms)"
    )
    print(f"top-level packages the load adds: {', '.join(added)}")
    if args.json is not None:
        args.json.write_text(json.dumps(samples, indent=1))
    return 0 if load_only < 0.15 else 1


if __name__ == "__main__":
    raise SystemExit(main())
