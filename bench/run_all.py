"""Run every benchmark and the full-size torture tests; write ``bench/results.md``.

Steps, each in its own process so one cannot warm up or slow down another:

1. ``bench/bench_core.py`` (cache hit vs MSAL, refresh stampede vs MSAL, ``reason()`` vs
   openai-python, token store throughput);
2. ``bench/bench_load_ext.py`` and ``bench/bench_tui.py`` when present (their printed tables
   are copied as they are);
3. ``pytest tests/torture --torture-full`` (8 x 50 stampede, 1,000 crash cycles, every fault,
   10,000 fuzz examples per target), whose figures become the torture tables and the fault
   matrix (fault -> outcome -> elapsed).

``results.md`` names the machine and ends with the figures as JSON in an HTML comment, which
``bench/readme_section.py`` turns into the README's "Measured" section.

Usage::

    python bench/run_all.py [--quick] [--skip tui,load_ext,torture] [--out bench/results.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import HERE, ROOT, describe_machine, machine, table

MARKER = "<!-- results-json"
PEERS = {
    "load_ext": ("bench_load_ext.py", "`%load_ext saga_magic` wall time (bench_load_ext.py)"),
    "tui": ("bench_tui.py", "TUI: first paint, tail lag, RSS (bench_tui.py)"),
}


def _run(command: list[str], timeout: float) -> tuple[int, str, float]:
    """Run ``command`` from the repository root; echo and return its output."""
    print(f"\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output, code = f"{partial}\n[timed out after {timeout:.0f} s]", -1
    elapsed = time.perf_counter() - started
    print(output[-3000:], flush=True)
    return code, output, elapsed


def _embed(output: str) -> str:
    """A script's printed tables as markdown (fenced when they are not markdown)."""
    text = output.strip()
    if "|---" in text or "| ---" in text:
        return text + "\n"
    return f"```\n{text}\n```\n"


def _torture_tables(folder: Path) -> tuple[str, dict[str, Any]]:
    figures = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    rows = []
    single = figures.get("single_flight")
    if single:
        rows.append(
            [
                "1. cross-process single flight",
                f"{single['processes']} processes x {single['concurrency']} callers, "
                f"{single['rounds']} expiries",
                f"max {single['posts_per_expiry_max']} POST per expiry (goal 1); "
                f"invalid_grant {single['invalid_grant']} (goal 0); 'database is locked' "
                f"{single['database_locked']} (goal 0); slowest round "
                f"{single['slowest_round_s']} s",
            ]
        )
    crash = figures.get("crash_consistency")
    if crash:
        rows.append(
            [
                "2. crash consistency (SIGKILL)",
                f"{crash['kills']} kills, {crash['refresh_cycles']} refresh+save cycles",
                f"{crash['problems']} rows broken or incomplete; {crash['lost_refresh_tokens']} "
                f"refresh tokens lost; {crash['kills_between_post_and_save']} kills landed "
                "between the token POST and the save (old token set kept)",
            ]
        )
    canary = figures.get("secret_canary")
    if canary:
        rows.append(
            [
                "3. secret canary (core)",
                f"{canary['scenarios']} fault scenarios, {canary['secrets']} issued secrets",
                f"{canary['hits']} hits in {canary['texts_scanned']} texts (logs, events, "
                "journal rows, exceptions, raw database files)",
            ]
        )
    matrix = figures.get("fault_matrix")
    if matrix:
        rows.append(
            [
                "4. fault matrix",
                f"{matrix['faults']} faults x calls x (once, persistent) = "
                f"{matrix['scenarios']} scenarios",
                f"{matrix['unexpected']} unexpected outcomes, {matrix['past_deadline']} past "
                f"the deadline, {matrix['hangs']} hangs; slowest {matrix['max_elapsed_s']} s",
            ]
        )
    hostile = figures.get("hostile_files")
    if hostile:
        outcomes = hostile["outcomes"]
        rows.append(
            [
                "5. hostile files",
                f"{hostile['cases']} cases",
                "every failure a TokenStorageError (or TokenPersistenceError), files unchanged",
            ]
        )
    for name, label in (
        ("canary_magic_public", "3. secret canary (magic, public client)"),
        ("canary_magic_confidential", "3. secret canary (magic, confidential client)"),
        ("canary_tui", "3. secret canary (TUI, headless)"),
    ):
        face = figures.get(name)
        if face:
            size = (
                f"{face['cells']} cells" if "cells" in face else f"{face.get('steps', '?')} steps"
            )
            rows.append(
                [
                    label,
                    f"{size}, {face['secrets']} issued secrets",
                    f"{face['hits']} hits in {face['texts_scanned']} texts",
                ]
            )
    fuzz = figures.get("fuzz")
    if fuzz:
        rows.append(
            [
                "6. fuzzing, core boundaries (hypothesis)",
                f"{fuzz['targets']} targets x {fuzz['examples_per_target']:,} examples",
                f"{fuzz['undocumented_exceptions']} undocumented exceptions",
            ]
        )
    magic = figures.get("fuzz_magic")
    if magic:
        rows.append(
            [
                "6. fuzzing, magic option parsing",
                f"{magic['targets']} targets, {magic['examples']:,} examples",
                f"{magic['undocumented_exceptions']} undocumented exceptions, "
                f"{magic.get('evaluations', 0)} evaluations",
            ]
        )
    known = {
        "single_flight",
        "crash_consistency",
        "secret_canary",
        "fault_matrix",
        "hostile_files",
        "fuzz",
        "fuzz_magic",
        "canary_magic_public",
        "canary_magic_confidential",
        "canary_tui",
    }
    for name in sorted(set(figures) - known):  # a torture test added later: its flat figures
        flat = {k: v for k, v in figures[name].items() if not isinstance(v, list | dict)}
        rows.append([name, "", ", ".join(f"{k}: {v}" for k, v in flat.items())])
    rows.sort(key=lambda row: row[0][:2] if row[0][:1].isdigit() else "9")  # by item, stable
    parts = [table(["item", "size", "result"], rows), ""]
    if hostile:
        parts += ["### Hostile files", ""]
        hostile_rows = [
            [case, ", ".join(f"{k}: {v}" for k, v in result.items())]
            for case, result in outcomes.items()
        ]
        parts += [table(["case", "outcome per operation"], hostile_rows), ""]
    if matrix:
        parts += ["### Fault matrix (fault -> outcome -> elapsed)", "", _matrix(matrix), ""]
    return "\n".join(parts), figures


def _matrix(matrix: dict[str, Any]) -> str:
    """One row per fault and call: outcome and times, once and persistent."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in matrix["rows"]:
        fault, call, mode = row["scenario"].split("/")
        ok = "" if row["outcome"] == row["expected"] else " **(unexpected)**"
        detail = f" `{row['detail']}`" if row["detail"] not in ("", "None", None) else ""
        cells.setdefault((fault, call), {})[mode] = (
            f"{row['outcome']}{detail}{ok}, {row['elapsed_s'] * 1000:.0f} ms"
            + (f" ({row['virtual_s']:.1f} s with waits)" if row["virtual_s"] >= 1 else "")
        )
    rows = [
        [f"`{fault}`", call, modes.get("once", ""), modes.get("persistent", "")]
        for (fault, call), modes in cells.items()
    ]
    intro = (
        "Every sandbox fault through the engine (`reason`, `stream`) and the auth manager "
        "(`refresh` = `get_valid_token` on an expired token, `device_login`, `device_start`). "
        "*once*: the fault, then normal answers; *persistent*: the fault on every attempt "
        "(retry budget 3 attempts, deadline 60 s, per-attempt timeout 0.3 s). Elapsed is real "
        "time; waits the client asked for run on a virtual clock and are shown in brackets.\n\n"
    )
    return intro + table(["fault", "call", "once", "persistent"], rows)


def _summary(core: dict[str, Any], torture: dict[str, Any]) -> dict[str, Any]:
    figures = {r["name"]: r["figures"] for r in core.get("results", [])}
    goals = {r["name"]: r["met"] for r in core.get("results", [])}
    return {"core": figures, "goals": goals, "torture": torture}


def main(argv: list[str] | None = None) -> int:
    """Run everything and write the results file.

    Args:
        argv: ``--quick`` (CI sizes), ``--skip a,b`` (of core, load_ext, tui, torture),
            ``--out PATH``.

    Returns:
        0 when every step ran and passed, 1 otherwise (the file is written either way).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    info = machine()
    python = sys.executable
    sections: list[str] = []
    failures: list[str] = []
    core: dict[str, Any] = {}
    torture: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if "core" not in skip:
            command = [python, str(HERE / "bench_core.py"), "--json", str(scratch / "core.json")]
            code, output, _ = _run(command + (["--quick"] if args.quick else []), 3600)
            if code == 0:
                core = json.loads((scratch / "core.json").read_text())
                sections += ["## Core benchmarks (bench_core.py)", ""]
                summary_rows = []
                for result in core["results"]:
                    sections.append(_result_markdown(result))
                    summary_rows.append(_summary_row(result))
                sections[2:2] = [
                    table(["benchmark", "saga", "peer", "ratio", "goal"], summary_rows),
                    "",
                ]
            else:
                failures.append("bench_core.py")
                sections += ["## Core benchmarks (bench_core.py)", "", _embed(output)]
        for name, (script, title) in PEERS.items():
            if name in skip:
                continue
            sections += [f"## {title}", ""]
            if not (HERE / script).exists():
                sections += [f"Not run: `bench/{script}` does not exist yet.", ""]
                continue
            code, output, elapsed = _run([python, str(HERE / script)], 3600)
            if code != 0:
                failures.append(script)
            sections += [_embed(output), f"({elapsed:.0f} s, exit status {code})", ""]
        if "torture" not in skip:
            report = scratch / "torture"
            command = [python, "-m", "pytest", "tests/torture", "-q", "-p", "no:cacheprovider"]
            command += ["--torture-report", str(report)]
            command += [] if args.quick else ["--torture-full"]
            code, output, elapsed = _run(command, 7200)
            if code != 0:
                failures.append("tests/torture")
            size = "CI size" if args.quick else "full size"
            sections += [f"## Torture tests (tests/torture, {size})", ""]
            lines = output.strip().splitlines()
            tail = lines[-1] if lines else ""
            sections += [f"`pytest tests/torture`: {tail} ({elapsed:.0f} s)", ""]
            failed = [line.split(" - ")[0] for line in lines if line.startswith("FAILED ")]
            sections += [f"- {line}" for line in failed] + ([""] if failed else [])
            if report.is_dir():
                text, torture = _torture_tables(report)
                sections.append(text)
    header = [
        "# Measured results",
        "",
        f"Machine: {describe_machine(info)}.",
        "",
        f"Written by `python bench/run_all.py{' --quick' if args.quick else ''}`; every figure "
        "is a median of repeated runs unless a table says otherwise. Sizes and methods are "
        "under each table.",
        "",
    ]
    if failures:
        header += [f"**Steps that failed:** {', '.join(failures)}.", ""]
    payload = {"machine": info, "quick": args.quick, **_summary(core, torture)}
    slim = json.loads(json.dumps(payload, default=str))
    slim.get("torture", {}).get("fault_matrix", {}).pop("rows", None)
    footer = [f"{MARKER}\n{json.dumps(slim, indent=1)}\n-->", ""]
    args.out.write_text("\n".join(header + sections + footer))
    print(f"\nwrote {args.out}")
    return 1 if failures else 0


def _result_markdown(result: dict[str, Any]) -> str:
    parts = [f"### {result['title']}", "", table(result["headers"], result["rows"]), ""]
    if result["goal"]:
        verdict = {True: "met", False: "**not met**", None: "n/a"}[result["met"]]
        parts += [f"Goal: {result['goal']} — {verdict}.", ""]
    parts += [f"- {note}" for note in result["notes"]]
    return "\n".join(parts).rstrip() + "\n"


def _summary_row(result: dict[str, Any]) -> list[str]:
    f = result["figures"]
    goal = result["goal"] or "-"
    if result["met"] is not None:
        goal += " (met)" if result["met"] else " (**not met**)"
    if result["name"] == "cache_hit":
        return [
            "cache-hit token",
            f"{f['saga_s'] * 1e6:.2f} µs",
            f"MSAL {f['msal_s'] * 1e6:.1f} µs",
            f"{f['ratio']:.0f}x faster",
            goal,
        ]
    if result["name"] == "reason":
        return [
            "`reason()` per call",
            f"{f['saga_s'] * 1e3:.2f} ms",
            f"openai {f['openai_s'] * 1e3:.2f} ms",
            f"{f['ratio']:.2f}",
            goal,
        ]
    if result["name"] == "stampede":
        ours, theirs = f["saga_strict"], f["msal_strict"]
        return [
            "refresh stampede (strict rotation)",
            f"{ours['posts']:g} POST, {ours['invalid_grant']:g} invalid_grant",
            f"MSAL {theirs['posts']:g} POSTs, {theirs['invalid_grant']:g} invalid_grant, "
            f"{theirs['caller_errors']:g} failed calls",
            "-",
            goal,
        ]
    return [
        "token store",
        f"{f['save_1p_per_s']:,.0f} saves/s, {f['get_1p_per_s']:,.0f} gets/s (1 process)",
        "-",
        "-",
        goal,
    ]


if __name__ == "__main__":
    sys.exit(main())
