"""The load-time benchmark's verdict and output (no subprocess: synthetic samples)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_load_ext.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load_ext", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(load_s: float, added: list[str]) -> dict[str, list[dict[str, Any]]]:
    def sample(shell: float, load: float) -> dict[str, Any]:
        return {"shell": shell, "load": load, "first_use": 0.2, "added": added}

    return {
        "bare": [sample(0.50, 0.0), sample(0.52, 0.0), sample(0.51, 0.0)],
        "load": [sample(0.50, load_s), sample(0.52, load_s), sample(0.51, load_s)],
        "first-use": [sample(0.5, load_s)] * 3,
    }


def test_verdict_is_on_the_overhead_over_the_baseline(bench: ModuleType) -> None:
    fast = bench.summarize(_samples(0.03, ["saga_magic.magics", "saga_magic"]))
    assert fast["overhead_ms"] == pytest.approx(30.0, abs=0.2)
    assert fast["met"] is True
    assert fast["textual_imported"] is False
    assert fast["added_packages"] == ["saga_magic"]
    slow = bench.summarize(_samples(0.2, ["saga_magic"]))
    assert slow["met"] is False
    heavy = bench.summarize(_samples(0.01, ["saga_magic", "textual.app", "rich"]))
    assert heavy["met"] is False  # fast, but it imported Textual
    assert heavy["textual_imported"] is True
    assert heavy["forbidden_imported"] == ["textual", "rich"]
    table = bench.render(heavy)
    assert "|---|---|---|" in table
    assert "**NOT met**" in table
    assert "Textual imported by the load: YES; forbidden packages imported: textual, rich." in table
    assert "Overhead over the baseline (difference of medians): **10.0 ms**" in bench.render(
        bench.summarize(_samples(0.01, []))
    )


def test_results_go_to_the_file_run_all_collects(bench: ModuleType) -> None:
    assert str(bench.DEFAULT_JSON) == str(BENCH.parent / "results_load_ext.json")
