"""One-way doors: the TUI imports the core (and the sandbox for --sandbox), never the magic."""

from __future__ import annotations

import subprocess
import sys


def test_tui_never_imports_the_magic_or_ipython() -> None:
    code = (
        "import sys, saga_tui, saga_tui.app, saga_tui.demo, saga_tui.__main__;"
        "bad = sorted(m for m in sys.modules if m.startswith(('saga_magic.magic', 'IPython')));"
        "print(bad)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
