"""The saga-sandbox command: export lines, loopback notice, auto-approve, clean stop."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sbx_helpers import SCOPE

from saga_magic.sandbox import Sandbox
from saga_magic.sandbox import __main__ as cli


def _exports(text: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if k.isupper()}


class _Run:
    """``main()`` in a thread, stopped through its stop event."""

    def __init__(self, argv: list[str]) -> None:
        self.out = io.StringIO()
        self.stop = threading.Event()
        self.status: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.status.append(cli.main(argv, out=self.out, stop=self.stop))
        )

    def __enter__(self) -> dict[str, str]:
        self.thread.start()
        deadline = time.monotonic() + 5
        while "api-key" not in self.out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        return _exports(self.out.getvalue())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_main_prints_env_and_auto_approves(client: httpx.Client) -> None:
    run = _Run(["--port", "0", "--token-lifetime", "60", "--stream-delay", "0"])
    with run as env:
        assert set(env) == {
            "AZURE_AUTHORITY_HOST",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "ARC_SAGA_COPILOT_ENDPOINT",
        }
        base = env["AZURE_AUTHORITY_HOST"]
        token_url = f"{base}/{env['AZURE_TENANT_ID']}/oauth2/v2.0"
        flow = client.post(
            f"{token_url}/devicecode", data={"client_id": env["AZURE_CLIENT_ID"], "scope": SCOPE}
        ).json()
        tokens = client.post(
            f"{token_url}/token",
            data={
                "client_id": env["AZURE_CLIENT_ID"],
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": flow["device_code"],
            },
        ).json()
        assert tokens["expires_in"] == 60
        answer = client.post(
            env["ARC_SAGA_COPILOT_ENDPOINT"].strip("'"),
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {tokens['access_token']}"},
        )
        assert answer.json()["choices"][0]["message"]["content"] == "hi"
    text = run.out.getvalue()
    assert run.status == [0]
    assert "# listening on loopback only: http://127.0.0.1:" in text
    assert "approved automatically" in text
    assert text.rstrip().endswith("# sandbox stopped")


def test_main_without_auto_approve() -> None:
    run = _Run(["--no-auto-approve"])
    with run:
        pass
    assert "approve device logins at http://127.0.0.1:" in run.out.getvalue()
    assert run.status == [0]


def test_enforce_poll_interval_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 3: the command line can switch the interval check on."""
    seen: list[bool] = []

    def interrupt(stop: threading.Event) -> None:
        raise KeyboardInterrupt

    real = Sandbox

    def spy(**options: object) -> Sandbox:
        sandbox = real(**options)  # type: ignore[arg-type]
        seen.append(sandbox.state.config.enforce_poll_interval)
        return sandbox

    monkeypatch.setattr(cli, "_wait_forever", interrupt)
    monkeypatch.setattr(cli, "Sandbox", spy)
    assert cli.main(["--enforce-poll-interval"], out=io.StringIO()) == 0
    assert cli.main([], out=io.StringIO()) == 0
    assert seen == [True, False]


def test_main_refuses_non_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--host", "0.0.0.0"]) == 2
    assert "loopback only" in capsys.readouterr().err


def test_ctrl_c_in_the_main_thread(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(stop: threading.Event) -> None:
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, "_wait_forever", interrupt)
    assert cli.main([]) == 0
    assert "# sandbox stopped" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(KeyboardInterrupt):
        cli._raise_interrupt(signal.SIGTERM, None)


def test_wait_forever_returns_when_stopped() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.05, stop.set)
    timer.start()
    cli._wait_forever(stop, poll=0.01)
    timer.join()
    assert stop.is_set()


def test_every_option_has_help() -> None:
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_subprocess_stops_cleanly(sig: signal.Signals, client: httpx.Client) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "saga_magic.sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("# api-key"):
                break
        exports = _exports("".join(lines))
        stats = client.get(f"{exports['AZURE_AUTHORITY_HOST']}/_sandbox/stats")
        assert stats.status_code == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "# sandbox stopped" in out
    assert "Traceback" not in err
