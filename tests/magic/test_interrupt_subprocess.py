"""A real (simulated-signal) Ctrl-C while a cell waits, in a fresh process.

``_thread.interrupt_main`` raises KeyboardInterrupt wherever the main thread is, possibly inside
coverage's tracer (which then switches itself off), so this runs in a child process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import _thread, asyncio, sys, threading
    sys.path.insert(0, sys.argv[1])
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config
    from magic_helpers import FakeEngine
    from saga_magic.magic.session import CopilotSession
    from saga_magic.magics import load_ipython_extension, unload_ipython_extension

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    engines = []

    def factory(session, user, model):
        engines.append(FakeEngine(user=user, model=model, block=True))
        return engines[-1]

    session = CopilotSession(engine_factory=factory)
    load_ipython_extension(shell, session=session)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    first = shell.run_cell("%%copilot\\nwait for ever")
    print("CANCELLED", engines[0].cancelled, type(first.error_in_exec).__name__)
    engines[0].block = False
    second = shell.run_cell("%%copilot\\nagain")
    print("SECOND", second.success, shell.user_ns["_copilot"].response_text)
    unload_ipython_extension(shell)
    print("THREADS", sorted(t.name for t in threading.enumerate()))
    """
)


@pytest.mark.slow
def test_ctrl_c_cancels_and_the_shell_stays_usable(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "ARC_SAGA_HOME": str(tmp_path / "home"),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout
    assert "KeyboardInterrupt: interrupted: the request was cancelled; the kernel is ready" in lines
    assert "CANCELLED True CopilotInterrupted" in lines
    assert "SECOND True echo: again" in lines
    assert "THREADS ['MainThread']" in lines
