"""Loading and unloading the extension; load stays light (no textual, no core HTTP stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell
from magic_helpers import Harness

from saga_magic import load_ipython_extension as package_load
from saga_magic import unload_ipython_extension as package_unload
from saga_magic.magics import _LOADED, CopilotMagics


def test_load_ext_imports_no_textual_and_no_core_http(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "from traitlets.config import Config\n"
        "c = Config(); c.HistoryManager.hist_file = ':memory:'\n"
        "shell = InteractiveShell.instance(config=c)\n"
        "before = set(sys.modules)\n"
        "shell.run_line_magic('load_ext', 'saga_magic')\n"
        "after = set(sys.modules)\n"
        "assert 'copilot' in shell.magics_manager.magics['cell']\n"
        "print(json.dumps(sorted(after - before)))\n"
    )
    env = {"IPYTHONDIR": str(tmp_path / "ipython"), "ARC_SAGA_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    added = set(json.loads(out.stdout.strip().splitlines()[-1]))
    roots = {name.split(".")[0] for name in added}
    assert not roots & {"textual", "rich", "httpx", "cryptography", "sqlite3", "saga_tui"}
    assert not {name for name in added if name.startswith("saga_magic.core")}
    assert "saga_magic.sandbox" not in added
    assert not (tmp_path / "home").exists()  # nothing written at load


def test_load_twice_is_a_no_op_and_unload_cleans_up(shell: InteractiveShell) -> None:
    package_load(shell)
    magics = _LOADED[id(shell)]
    package_load(shell)
    assert _LOADED[id(shell)] is magics
    assert isinstance(shell.magics_manager.magics["cell"]["copilot"].__self__, CopilotMagics)
    callbacks = shell.events.callbacks["post_run_cell"]
    assert magics.session.errors.on_post_run_cell in callbacks
    package_unload(shell)
    assert "copilot" not in shell.magics_manager.magics["cell"]
    assert "copilot" not in shell.magics_manager.magics["line"]
    assert magics.session.errors.on_post_run_cell not in shell.events.callbacks["post_run_cell"]
    package_unload(shell)  # unloading again: nothing to do


def test_max_turns_attribute(harness: Harness) -> None:
    magics = _LOADED[id(harness.shell)]
    magics.max_turns = 3
    assert magics.max_turns == 3
    assert harness.session.memory.max_turns == 3
