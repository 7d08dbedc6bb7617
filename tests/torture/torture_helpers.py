"""Shared pieces of the torture tests: a virtual clock, worker processes, the secret scanner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox

WORKER = Path(__file__).with_name("torture_worker.py")

Report = Callable[[str, dict[str, Any]], None]
"""Records a test's figures (the ``report`` fixture)."""


@dataclass(frozen=True)
class Scale:
    """CI or full sizes, chosen by ``--torture-full`` (the ``scale`` fixture)."""

    full: bool
    """True in the benchmark run."""

    def pick(self, ci: int, full: int) -> int:
        """Return ``full`` in the benchmark run, ``ci`` otherwise."""
        return full if self.full else ci


class VirtualClock:
    """Real time plus every (fake) sleep so far: waits count toward deadlines, cost nothing."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)


class Worker:
    """A ``torture_worker.py`` subprocess spoken to in JSON lines over stdin/stdout."""

    def __init__(self, mode: str, args: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), mode, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker silent for {timeout} s; stderr: {self.stderr}") from None
        if line is None:
            raise AssertionError(f"worker exited ({self.proc.poll()}); stderr: {self.stderr}")
        message: dict[str, Any] = json.loads(line)
        return message

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)[-4000:]

    def close(self, timeout: float = 30.0) -> int:
        """Close stdin (the worker's cue to finish), wait, and release the pipes."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def sandbox_args(sb: Sandbox) -> dict[str, Any]:
    """What a worker needs to reach the sandbox."""
    return {"authority": sb.authority_host, "tenant": sb.tenant_id, "client_id": sb.client_id}


async def seed(
    sb: Sandbox, store: SQLiteEncryptedTokenStore, user: str, *, expired: bool = False
) -> dict[str, Any]:
    """Sign ``user`` in at the sandbox and save the token set; return what was saved."""
    body = dict(sb.issue_tokens(user))
    if expired:
        body.pop("expires_in", None)
        body["expires_at"] = time.time() - 60
    await store.save_token(user, body)
    return body


def sandbox_secrets(sb: Sandbox, *extra: str) -> list[str]:
    """Every secret the sandbox issued or knows: tokens, device codes, keys, the client secret."""
    state = sb.state
    with state.lock:
        found = [*state.access_tokens, *state.refresh_tokens, *state.device_flows]
    found += [sb.api_key, *(s for s in (sb.client_secret, *extra) if s)]
    return sorted(set(found))


_WINDOW = 20


def _fragments(secret: str) -> list[str]:
    """Slices unique to a secret: its tail and middle (a JWT's header is common to all)."""
    if len(secret) <= _WINDOW:
        return [secret]
    middle = len(secret) // 2
    return [secret[-_WINDOW:], secret[middle : middle + _WINDOW]]


def find_secrets(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """Return ``"<where>: <secret prefix>..."`` for each text holding a slice of a secret.

    Every 20-character window of each text is looked up in a set of the secrets' slices, so the
    scan is linear in the size of the texts, whatever the number of secrets.
    """
    owner: dict[str, str] = {}
    short: list[str] = []
    for secret in secrets:
        for piece in _fragments(secret):
            if len(piece) == _WINDOW:
                owner[piece] = secret
            else:
                short.append(piece)
    hits: list[str] = []
    for where, text in texts:
        found = next((p for p in short if p in text), None)
        if found is None:
            windows = (text[i : i + _WINDOW] for i in range(len(text) - _WINDOW + 1))
            found = owner.get(next((w for w in windows if w in owner), ""))
        if found:
            hits.append(f"{where}: {found[:12]}...")
    return hits
