"""Loading and unloading the extension; load stays light (no textual, no core HTTP stack)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from magic_helpers import Harness

from saga_magic import load_ipython_extension as package_load
from saga_magic import unload_ipython_extension as package_unload
from saga_magic.magic.session import CopilotSession
from saga_magic.magics import (
    _LOADED,
    CopilotMagics,
    load_ipython_extension,
    unload_ipython_extension,
)


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
    magics = _LOADED[shell]
    package_load(shell)
    assert _LOADED[shell] is magics
    assert isinstance(shell.magics_manager.magics["cell"]["copilot"].__self__, CopilotMagics)
    callbacks = shell.events.callbacks["post_run_cell"]
    assert magics.session.errors.on_post_run_cell in callbacks
    package_unload(shell)
    assert "copilot" not in shell.magics_manager.magics["cell"]
    assert "copilot" not in shell.magics_manager.magics["line"]
    assert magics.session.errors.on_post_run_cell not in shell.events.callbacks["post_run_cell"]
    package_unload(shell)  # unloading again: nothing to do


def test_max_turns_attribute(harness: Harness) -> None:
    magics = _LOADED[harness.shell]
    magics.max_turns = 3
    assert magics.max_turns == 3
    assert harness.session.memory.max_turns == 3


def test_unload_removes_the_registry_entry_and_keys_by_shell(shell: InteractiveShell) -> None:
    package_load(shell)
    magics = _LOADED[shell]
    assert shell.magics_manager.registry["CopilotMagics"] is magics
    assert isinstance(_LOADED, weakref.WeakKeyDictionary)
    package_unload(shell)
    assert "CopilotMagics" not in shell.magics_manager.registry
    assert shell not in _LOADED


def test_reload_says_what_was_lost(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    session = CopilotSession()
    load_ipython_extension(shell, session=session)
    unload_ipython_extension(shell)
    assert capsys.readouterr().out == ""  # nothing to lose: nothing said
    session = CopilotSession()
    load_ipython_extension(shell, session=session)
    session.memory.add("default", "q", "a")
    session.memory.add("bob", "q", "a")
    session.sandbox = FakeSandbox()
    unload_ipython_extension(shell)
    assert capsys.readouterr().out == (
        "saga_magic unloaded: the sandbox was stopped and 2 conversation turn(s) were forgotten\n"
    )


class FakeSandbox:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_unload_does_not_hang_on_a_stuck_close(
    shell: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    closing = threading.Event()

    class StuckEngine:
        async def close(self) -> None:
            closing.set()
            await asyncio.Event().wait()

    session = CopilotSession(engine_factory=lambda *_: StuckEngine(), close_timeout=0.2)
    load_ipython_extension(shell, session=session)
    session.run(lambda: asyncio.sleep(0, session.engine("default")))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="saga.magic"):
        unload_ipython_extension(shell)
    assert time.monotonic() - started < 4.0
    assert closing.is_set()
    assert "took more than 0.2 s; abandoned" in caplog.text
    assert not session.runner.running


def test_unload_leaves_foreign_registry_entries_and_callbacks_alone(
    shell: InteractiveShell,
) -> None:
    session = CopilotSession()
    load_ipython_extension(shell, session=session)
    other = object()
    shell.magics_manager.registry["CopilotMagics"] = other
    shell.events.unregister("post_run_cell", session.errors.on_post_run_cell)
    unload_ipython_extension(shell)  # neither is ours any more: nothing to remove
    assert shell.magics_manager.registry.pop("CopilotMagics") is other


def test_a_raw_interrupt_in_a_cell_is_one_line(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_magic.magic import cell

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cell, "run_cell", interrupted)
    result, captured = harness.run("%%copilot\nhi")
    assert type(result.error_in_exec).__name__ == "CopilotInterrupted"
    assert "KeyboardInterrupt: interrupted: the request was cancelled" in captured.stdout
