"""Three rooms, one-way doors: the core imports no UI; the extension stays light at load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(
    "statement", ["import saga_magic.core", "from saga_magic.core import config, retry, errors"]
)
def test_core_imports_no_ui(statement: str) -> None:
    modules = _modules_after(statement)
    assert not _roots(modules) & {"IPython", "textual", "saga_tui"}
    assert "saga_magic.magics" not in modules
    # httpx 0.28 imports its CLI (click, rich) when they are installed; the core adds none.
    baseline = _roots(_modules_after("import httpx"))
    assert "rich" not in _roots(modules) - baseline


def test_sandbox_is_independent_of_core() -> None:
    modules = _modules_after("import saga_magic.sandbox")
    assert not {m for m in modules if m.startswith("saga_magic.core")}
    assert not _roots(modules) & {"IPython", "textual", "rich"}


def test_tui_never_imports_the_magic() -> None:
    modules = _modules_after("import saga_tui.app")
    assert "saga_magic.magics" not in modules
    assert "IPython" not in _roots(modules)


def test_extension_module_does_not_import_textual() -> None:
    modules = _modules_after("import saga_magic, saga_magic.magics")
    assert "textual" not in _roots(modules)
