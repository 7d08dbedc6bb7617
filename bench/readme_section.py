"""Print the README's short "Measured" section, from ``bench/results.md``.

``bench/run_all.py`` ends ``results.md`` with its figures as JSON in an HTML comment; this script
reads them back and prints a few lines of markdown naming the machine::

    python bench/readme_section.py [bench/results.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench_common import HERE, describe_machine, table

MARKER = "<!-- results-json"


def figures(path: Path) -> dict[str, Any]:
    """The JSON block at the end of a results file.

    Raises:
        SystemExit: the file has no results block (run ``bench/run_all.py`` first).
    """
    text = path.read_text()
    start = text.rfind(MARKER)
    if start < 0:
        raise SystemExit(f"{path} has no results block; run bench/run_all.py first")
    block = text[start + len(MARKER) : text.index("-->", start)]
    data: dict[str, Any] = json.loads(block)
    return data


def section(data: dict[str, Any]) -> str:
    """The markdown section."""
    core, torture = data.get("core", {}), data.get("torture", {})
    rows = []
    if "cache_hit" in core:
        f = core["cache_hit"]
        rows.append(
            [
                "cached token (`get_valid_token`)",
                f"{f['saga_s'] * 1e6:.2f} µs",
                f"MSAL `acquire_token_silent` {f['msal_s'] * 1e6:.0f} µs",
                f"{f['ratio']:.0f}x faster",
            ]
        )
    if "reason" in core:
        f = core["reason"]
        rows.append(
            [
                "`reason()` per call, loopback",
                f"{f['saga_s'] * 1e3:.1f} ms",
                f"openai `AsyncAzureOpenAI` {f['openai_s'] * 1e3:.1f} ms",
                f"{f['ratio']:.2f}x the time",
            ]
        )
    if "stampede" in core:
        ours, theirs = core["stampede"]["saga_strict"], core["stampede"]["msal_strict"]
        rows.append(
            [
                "4 processes x 100 callers, expired token",
                f"{ours['posts']:g} token POST",
                f"MSAL {theirs['posts']:g} POSTs, {theirs['invalid_grant']:g} invalid_grant",
                "-",
            ]
        )
    if "store" in core:
        f = core["store"]
        rows.append(
            [
                "encrypted token store",
                f"{f['save_1p_per_s']:,.0f} saves/s, {f['get_1p_per_s']:,.0f} gets/s",
                "-",
                "-",
            ]
        )
    lines = [
        "## Measured",
        "",
        f"On {describe_machine(data['machine'])}, with `python bench/run_all.py` "
        "(medians of repeated runs; tables and methods in [bench/results.md](bench/results.md)):",
        "",
        table(["what", "arc-saga", "peer", "ratio"], rows),
        "",
    ]
    proofs = []
    if "single_flight" in torture:
        f = torture["single_flight"]
        proofs.append(
            f"{f['processes']} processes x {f['concurrency']} callers: "
            f"{f['posts_per_expiry_max']} token POST per expiry, {f['invalid_grant']} "
            f"invalid_grant, {f['database_locked']} 'database is locked'"
        )
    if "crash_consistency" in torture:
        f = torture["crash_consistency"]
        proofs.append(
            f"{f['kills']} SIGKILLs over {f['refresh_cycles']} refresh+save cycles: "
            f"{f['problems']} broken rows, {f['lost_refresh_tokens']} refresh tokens lost"
        )
    if "fault_matrix" in torture:
        f = torture["fault_matrix"]
        proofs.append(
            f"{f['faults']} sandbox faults ({f['scenarios']} scenarios): {f['unexpected']} "
            f"undocumented outcomes, {f['hangs']} hangs"
        )
    names = ("secret_canary", "canary_magic_public", "canary_magic_confidential", "canary_tui")
    canaries = [torture[name] for name in names if name in torture]
    if canaries:
        hits = sum(c["hits"] for c in canaries)
        texts = sum(c["texts_scanned"] for c in canaries)
        proofs.append(f"secret canary (core, notebook, TUI): {hits} leaks in {texts:,} texts")
    fuzzed = [torture[name] for name in ("fuzz", "fuzz_magic") if name in torture]
    if fuzzed:
        examples = sum(f["examples"] for f in fuzzed)
        bad = sum(f["undocumented_exceptions"] for f in fuzzed)
        proofs.append(f"fuzzing: {examples:,} examples, {bad} undocumented exceptions")
    if proofs:
        lines += ["Torture tests at full size: " + "; ".join(proofs) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the section for ``argv[0]`` (default ``bench/results.md``).

    Args:
        argv: Optional path of the results file.

    Returns:
        0.
    """
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else HERE / "results.md"
    print(section(figures(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
