"""The quickstart notebook, executed by a real ipykernel through nbclient, asserted on outputs."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _text(cell: Any) -> str:
    """Everything a cell printed or displayed, as plain text (errors included)."""
    parts: list[str] = []
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            parts.append(output["text"])
        elif kind in ("display_data", "execute_result", "update_display_data"):
            data = output.get("data", {})
            parts.append(data.get("text/markdown") or data.get("text/plain", ""))
        elif kind == "error":
            parts.append("\n".join(output["traceback"]))
    return _ANSI.sub("", "\n".join(parts))


def _raw(cell: Any) -> str:
    """Every output of a cell, every mime type, as JSON text."""
    return json.dumps(cell.get("outputs", []))


SECRETS_SOURCE = """\
import json
_state = get_ipython().magics_manager.registry["CopilotMagics"].session.sandbox.state
with _state.lock:
    _issued = [*_state.access_tokens, *_state.refresh_tokens, *_state.device_flows]
print(json.dumps(_issued))
"""


def _cell(nb: Any, source_start: str) -> Any:
    return next(cell for cell in nb.cells if cell.source.startswith(source_start))


@pytest.mark.slow
def test_quickstart_runs_on_a_real_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    probe = nbformat.v4.new_code_cell(
        "import sys, os\nprint(sys.executable)\nprint(os.environ['ARC_SAGA_HOME'])"
    )
    probe["id"] = "probe"
    nb.cells.insert(0, probe)
    # Test-only cell before the final %unload_ext: every secret the kernel's sandbox issued.
    secrets_cell = nbformat.v4.new_code_cell(SECRETS_SOURCE)
    secrets_cell["id"] = "issued-secrets"
    nb.cells.insert(len(nb.cells) - 1, secrets_cell)
    home = tmp_path / "arc_saga_home"
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "ARC_SAGA_HOME": str(home),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)

    probe_lines = _text(nb.cells[0]).split()
    assert Path(probe_lines[0]).resolve() == Path(sys.executable).resolve()
    assert probe_lines[1] == str(home)

    assert "signed in 'default'" in _text(_cell(nb, "%copilot sandbox"))
    login = _text(_cell(nb, "%copilot login"))
    assert "enter the code" in login
    assert "signed in: user 'default'" in login

    first = _cell(nb, "%%copilot\nExplain")
    answer = [o for o in first.outputs if o["output_type"] == "display_data"]
    assert answer[-1]["data"]["text/markdown"] == (
        "Explain in one sentence what a refresh token is for."
    )
    assert answer[-1]["data"]["text/plain"] == answer[-1]["data"]["text/markdown"]

    asked = _cell(nb, "%%copilot -o answer")
    assert "note: inserted {city}" in _text(asked)  # substitution is never silent
    interpolated = _text(_cell(nb, "print(answer.response_text)"))
    assert 'What is the weather in Lyon? Reply as {"city": "...", "sky": "..."}' in interpolated

    assert "attempts: 2" in _text(_cell(nb, 'print("attempts:"'))
    retried = _cell(nb, "%%copilot\nThis question meets a busy server first.")
    assert "This question meets a busy server first." in _text(retried)
    retries = _text(_cell(nb, "%copilot log -n 5 --event retry")).strip().splitlines()
    assert len(retries) == 1  # the 429 was ridden out by one retry, and the log proves it
    assert " WARNING copilot_retry user=default " in retries[0]
    assert "reason=429" in retries[0]
    assert "login" in _cell(nb, "Sign in with the device-code flow").source  # explained
    status = _text(_cell(nb, "%copilot status"))
    assert "2 attempt(s)" in status
    assert "(sandbox)" in status

    failing = _cell(nb, "%%copilot\nA prompt the server finds too long.")
    errors = [o for o in failing.outputs if o["output_type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["ename"] == "CopilotError"
    assert len(errors[0]["traceback"]) == 1
    assert errors[0]["traceback"][0].startswith("CopilotError: request rejected: ")
    assert errors[0]["traceback"][0].endswith(
        "-> shorten the prompt, or start over with --new (or %copilot reset)"
    )

    log = _text(_cell(nb, "%copilot log -n 4"))
    assert "copilot_error" in log

    assert (home / "journal.db").exists()
    assert (home / "sandbox_tokens.db").exists()

    # Secret canary (issue 6, item 3): nothing the sandbox issued reaches an output or the journal.
    issued = next(cell for cell in nb.cells if cell.get("id") == "issued-secrets")
    nb.cells.remove(issued)
    secrets = json.loads(_text(issued).strip().splitlines()[-1])
    assert len(secrets) >= 3  # access and refresh tokens, a device code
    shown = "\n".join(_raw(cell) for cell in nb.cells)
    with contextlib.closing(sqlite3.connect(home / "journal.db")) as journal:
        rows = "\n".join(str(row) for row in journal.execute("SELECT * FROM events"))
    for secret in secrets:
        for piece in (secret, secret[:16], secret[-16:]):
            assert piece not in shown
            assert piece not in rows
    assert not (home / "tokens.db").exists()  # the sandbox never touches the real token store


@pytest.mark.slow
def test_kernel_interrupt_cancels_a_stalled_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real kernel interrupt (SIGINT from the kernel manager) while a request hangs."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    cells = [
        "%load_ext saga_magic",
        "%copilot sandbox",
        "%copilot sandbox --script chat slow_headers:30",
        "%%copilot\nthis request hangs until the kernel is interrupted",
        "%%copilot\nstill usable?",
        "print('answer:', _copilot.response_text)",
        "%unload_ext saga_magic",
    ]
    nb = nbformat.v4.new_notebook()
    for index, source in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"c{index}"
        if index == 3:
            cell.metadata["tags"] = ["raises-exception"]
        nb.cells.append(cell)

    def timeout(cell: Any) -> int:
        return 2 if "hangs" in cell.source else 60

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout_func=timeout,
        interrupt_on_timeout=True,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "ARC_SAGA_HOME": str(tmp_path / "home"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    client.execute(env=env)
    hung = nb.cells[3]
    errors = [o for o in hung.outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["CopilotInterrupted"]
    assert errors[0]["traceback"] == [
        "KeyboardInterrupt: interrupted: the request was cancelled; the kernel is ready"
    ]
    assert "answer: still usable?" in _text(nb.cells[5])
