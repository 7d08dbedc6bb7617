"""Torture-test options, sizes and figure reporting.

Every test here is marked ``torture`` and bounded for CI. The benchmark run passes
``--torture-full`` to get the full sizes of issue 6 (8 x 50 stampede, 1,000 crash cycles,
10,000 fuzz examples) and ``--torture-report DIR`` to collect each test's figures as JSON::

    pytest tests/torture -q -p no:cacheprovider                       # CI sizes
    pytest tests/torture --torture-full --torture-report bench/.torture  # bench/run_all.py

Sizes are read only from these options (never from the environment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from torture_helpers import Report, Scale

_FIGURES: list[tuple[str, dict[str, Any]]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("torture", "torture tests (tests/torture)")
    group.addoption(
        "--torture-full",
        action="store_true",
        default=False,
        help="run the torture tests at full size (the benchmark run), not CI size",
    )
    group.addoption(
        "--torture-report",
        default=None,
        metavar="DIR",
        help="write each torture test's figures to DIR/<name>.json",
    )


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> Scale:
    """The size knob of the torture tests."""
    return Scale(full=bool(pytestconfig.getoption("--torture-full")))


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Report:
    """Record a test's figures: shown in the terminal summary, and written as JSON on request."""
    folder = pytestconfig.getoption("--torture-report")

    def write(name: str, figures: dict[str, Any]) -> None:
        _FIGURES.append((name, figures))
        if folder:
            path = Path(folder)
            path.mkdir(parents=True, exist_ok=True)
            (path / f"{name}.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")

    return write


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("torture figures")
    for name, figures in _FIGURES:
        flat = {k: v for k, v in figures.items() if not isinstance(v, list | dict)}
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in flat.items()))


@pytest.fixture(scope="session")
def fault_run(tmp_path_factory: pytest.TempPathFactory, scale: Scale) -> Any:
    """Every sandbox fault through the engine and the auth manager, once per session.

    Shared by the fault-matrix and the secret-canary tests (both read the same run).
    """
    from fault_scenarios import run_matrix

    timeout = 0.3 if scale.full else 0.12  # real HTTP timeouts; waits are virtual
    return run_matrix(tmp_path_factory.mktemp("fault_matrix"), timeout=timeout, full=scale.full)
