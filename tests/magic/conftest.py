"""Fixtures for the magic's tests: one IPython shell, the extension on fake engines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from magic_helpers import FakeEngine, Harness
from traitlets.config import Config

from saga_magic.magic.session import CopilotSession
from saga_magic.magics import load_ipython_extension, unload_ipython_extension


@pytest.fixture(scope="session")
def ipython_shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """One ``InteractiveShell`` for the whole run (it is a process-wide singleton)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        shell = InteractiveShell.instance(config=config)
        try:
            yield shell
        finally:
            shell.history_manager.end_session()
            InteractiveShell.clear_instance()


@pytest.fixture
def shell(ipython_shell: InteractiveShell) -> Iterator[InteractiveShell]:
    """The shell with a fresh namespace and history."""
    ipython_shell.reset(new_session=False)
    yield ipython_shell
    ipython_shell.reset(new_session=False)


@pytest.fixture
def harness(shell: InteractiveShell, isolated_env: Path) -> Iterator[Harness]:
    """Extension loaded with fake engines (``harness.configure`` sets each new one up)."""
    engines: dict[tuple[str, str | None], FakeEngine] = {}
    box: list[Harness] = []

    def factory(session: CopilotSession, user: str, model: str | None) -> FakeEngine:
        engine = FakeEngine(user=user, model=model)
        box[0].configure(engine)
        engines[(user, model)] = engine
        return engine

    session = CopilotSession(engine_factory=factory)
    load_ipython_extension(shell, session=session)
    box.append(Harness(shell=shell, session=session, engines=engines))
    try:
        yield box[0]
    finally:
        unload_ipython_extension(shell)
        assert not session.runner.running
        assert os.environ["ARC_SAGA_HOME"] == str(isolated_env)


@pytest.fixture
def live(shell: InteractiveShell, isolated_env: Path) -> Iterator[Harness]:
    """Extension loaded with the real core (no sandbox started yet)."""
    session = CopilotSession()
    load_ipython_extension(shell, session=session)
    try:
        yield Harness(shell=shell, session=session, engines={})
    finally:
        unload_ipython_extension(shell)
        assert session.sandbox is None
        assert not session.runner.running


@pytest.fixture
def sandboxed(live: Harness) -> Harness:
    """The real core pointed at a fresh embedded sandbox by ``%copilot sandbox``."""
    result, captured = live.run("%copilot sandbox")
    assert result.success, captured.stdout
    return live
