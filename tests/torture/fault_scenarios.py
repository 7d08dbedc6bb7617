"""Every sandbox fault through the engine and the auth manager: outcome, time, and what leaked.

One run (:func:`run_matrix`) feeds two torture tests: the fault matrix (item 4: documented
outcome, within the deadline, never a hang) and the secret canary (item 3: no issued secret in any
log record, event, journal row, exception text, or the raw database files).

Each fault of the sandbox catalogue (``fault_names(endpoint)``, so new faults are picked up and
must be given an expected outcome in ``test_fault_matrix.py``) is scripted on its endpoint and
driven through the matching calls:

* chat faults: ``engine.reason()`` and ``engine.stream()``;
* token-endpoint faults: ``get_valid_token()`` on an expired token (a refresh), and a device-code
  login (``start_device_login`` + ``complete_device_login``; polls go to the token endpoint);
* devicecode-endpoint faults: ``start_device_login()``.

Modes: ``once`` (the fault, then normal answers: transient faults must be ridden out) and
``persistent`` (the fault for :data:`PERSISTENT` attempts in a row). Waits between attempts run
on a virtual clock (real time plus every wait so far), shared by the sandbox, the store and the
calls, so a 60 s ``Retry-After`` costs nothing but still counts against the deadline. HTTP
timeouts are real (0.12 s in CI, 0.3 s in the full run) against real loopback sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from torture_helpers import VirtualClock, sandbox_secrets, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.events import Event, EventJournal, install_journal, subscribe
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import CATALOGUE, FaultKind, Sandbox, fault_names

PERSISTENT = 4
"""Attempts in a row that fail in ``persistent`` mode (more than the retry budget of 3)."""
DEADLINE = 60.0
"""Deadline of every engine call and refresh, in (virtual) seconds."""
HANG_GUARD = 20.0
"""Real seconds after which a call counts as hung."""
TASK = AITask("hello there wide world, tell me a story", max_tokens=16, temperature=0.5)


def script_entry(fault: str, timeout: float) -> str:
    """The fault as scripted: slow faults outlast ``timeout``, counters trip at once."""
    slow = f"{3 * timeout:g}"
    return {
        "slow_headers": f"slow_headers:{slow}",
        "slow_body": f"slow_body:{slow}",
        "token_slow": f"token_slow:{slow}",
        "expire_token_after": "expire_token_after:0",
        "loop_detect": "loop_detect:0",
        "device_expire_early": "device_expire_early:0",
    }.get(fault, fault)


QUIET_LOGGERS = ("saga", "httpx", "httpcore")
"""Loggers captured at their own level (not propagated to the root logger during the run)."""

CALLS = {
    "chat": ("reason", "stream"),
    "token": ("refresh", "device_login"),
    "devicecode": ("device_start",),
}


@dataclass
class Scenario:
    """One fault, one call, one mode."""

    endpoint: str
    """``chat``, ``token`` or ``devicecode``."""
    fault: str
    """Catalogue name."""
    call: str
    """``reason``, ``stream``, ``refresh``, ``device_login`` or ``device_start``."""
    mode: str
    """``once`` or ``persistent``."""
    variant: str = ""
    """Extra set-up, e.g. ``superseded`` (the stored refresh token was used already)."""

    @property
    def key(self) -> str:
        suffix = f"+{self.variant}" if self.variant else ""
        return f"{self.endpoint}:{self.fault}{suffix}/{self.call}/{self.mode}"


def _ci_skips(fault: str, call: str) -> bool:
    """Whether CI skips the ``once`` mode of this (fault, call): see :func:`scenarios`."""
    plain_error = CATALOGUE[fault].kind is FaultKind.ERROR
    return call == "device_login" or (call == "stream" and plain_error)


@dataclass
class Result:
    """What one scenario did."""

    scenario: Scenario
    outcome: str
    """``result`` or the exception's class name (``HANG`` when the guard fired)."""
    detail: str
    """``finish_reason`` of a result, else the error's ``code``."""
    elapsed_s: float
    """Real seconds."""
    virtual_s: float
    """Seconds on the call's clock: real time plus the waits it asked for."""
    partial_chars: int | None = None
    """Length of ``partial_text`` on a streaming error after the first delta."""
    error: BaseException | None = field(default=None, repr=False)


def scenarios(*, full: bool = True) -> list[Scenario]:
    """Every (fault, call, mode) of the catalogue, plus the strict-rotation variant.

    In CI (``full=False``) a device login meets each token-endpoint fault in ``persistent``
    mode only (the login polls on past failures, so that run shows the recovery too), and a
    stream meets a plain error answer (an ``error`` fault: a status and a body) in
    ``persistent`` mode only (``reason()`` shows the recovery through the same retry loop).
    """
    found = [
        Scenario(endpoint, fault, call, mode)
        for endpoint, calls in CALLS.items()
        for fault in fault_names(endpoint)
        if fault in CATALOGUE
        and endpoint in CATALOGUE[fault].endpoints  # not an alias ("500", "401", ...)
        for call in calls
        for mode in ("once", "persistent")
        if full or mode == "persistent" or not _ci_skips(fault, call)
    ]
    found += [
        Scenario("token", "rt_reuse_strict", "refresh", mode, variant="superseded")
        for mode in ("once", "persistent")
    ]
    return found


class Capture(logging.Handler):
    """Every log record of every logger, formatted with its exception, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[tuple[str, str]] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append((f"log:{record.name}", self.format(record)))
        event = getattr(record, "saga_event", None)
        if isinstance(event, Event):
            self.texts.append((f"log-event:{record.name}", event.to_json()))


def _error_texts(where: str, error: BaseException) -> list[tuple[str, str]]:
    texts = [(f"{where}:str", str(error)), (f"{where}:repr", repr(error))]
    texts.append((f"{where}:traceback", "".join(traceback.format_exception(error))))
    texts.append((f"{where}:dict", repr(vars(error))))
    return texts


@dataclass
class MatrixRun:
    """The whole run: results, captured texts, and the secrets to look for."""

    results: list[Result]
    texts: list[tuple[str, str]]
    secrets: list[str]
    events: int


class _Harness:
    def __init__(
        self,
        sb: Sandbox,
        store: SQLiteEncryptedTokenStore,
        client: Any,
        timeout: float,
        clock: VirtualClock,
    ) -> None:
        self.sb, self.store, self.client, self.timeout = sb, store, client, timeout
        self.clock = clock
        self.users = 0

    async def run(self, scenario: Scenario) -> Result:
        self.users += 1
        user = f"fm-{self.users:03d}@contoso.com"
        expired = scenario.call == "refresh"
        row = await seed(self.sb, self.store, user, expired=expired)
        if scenario.variant == "superseded":
            await self.client.post(
                self.sb.token_endpoint,
                data={
                    "client_id": self.sb.client_id,
                    "grant_type": "refresh_token",
                    "refresh_token": row["refresh_token"],
                    "scope": row["scope"],
                },
            )
        count = 1 if scenario.mode == "once" else PERSISTENT
        self.sb.script(scenario.endpoint, [script_entry(scenario.fault, self.timeout)] * count)
        clock = self.clock
        manager = EntraIDAuthManager(
            self.store,
            tenant_id=self.sb.tenant_id,
            client_id=self.sb.client_id,
            authority_host=self.sb.authority_host,
            http_client=self.client,
            max_retries=2,
            refresh_deadline=DEADLINE,
            timeout=self.timeout,
            clock=clock,
            sleep=clock.sleep,
            jitter=lambda wait: 0.0,
            lease_poll_interval=0.01,
        )
        engine = CopilotReasoningEngine(
            manager,
            endpoint=self.sb.chat_endpoint,
            user_id=user,
            http_client=self.client,
            timeout=self.timeout,
            deadline=DEADLINE,
            max_retries=2,
            idle_timeout=self.timeout,
            clock=clock,
            sleep=clock.sleep,
            jitter=lambda wait: 0.0,
        )
        calls: dict[str, Callable[[], Awaitable[str]]] = {
            "reason": lambda: _reason(engine),
            "stream": lambda: _stream(engine),
            "refresh": lambda: _refresh(manager, user),
            "device_start": lambda: _device_start(manager, user),
            "device_login": lambda: _device_login(manager, user),
        }
        started, virtual_start = time.perf_counter(), clock()
        error: BaseException | None = None
        try:
            detail = await asyncio.wait_for(calls[scenario.call](), HANG_GUARD)
            outcome = "result"
        except TimeoutError as exc:
            outcome, detail, error = (
                ("HANG", "", exc)
                if time.perf_counter() - started >= HANG_GUARD
                else (type(exc).__name__, str(getattr(exc, "code", "")), exc)
            )
        except Exception as exc:
            outcome, detail, error = type(exc).__name__, str(getattr(exc, "code", "")), exc
        finally:
            await engine.close()
            await manager.close()
            for endpoint in CALLS:
                self.sb.script(endpoint, [], replace=True)
        return Result(
            scenario,
            outcome,
            detail,
            round(time.perf_counter() - started, 3),
            round(clock() - virtual_start, 3),
            len(getattr(error, "partial_text", None) or "") or None,
            error,
        )


async def _reason(engine: CopilotReasoningEngine) -> str:
    result = await engine.reason(TASK)
    return str(result.finish_reason)


async def _stream(engine: CopilotReasoningEngine) -> str:
    async with engine.stream(TASK) as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    return str(stream.result.finish_reason)


async def _refresh(manager: EntraIDAuthManager, user: str) -> str:
    await manager.get_valid_token(user)
    return ""


async def _device_start(manager: EntraIDAuthManager, user: str) -> str:
    await manager.start_device_login(user)
    return ""


async def _device_login(manager: EntraIDAuthManager, user: str) -> str:
    login = await manager.start_device_login(user)
    await manager.complete_device_login(login)
    return ""


async def _run(folder: Path, timeout: float, full: bool) -> MatrixRun:
    key = SQLiteEncryptedTokenStore.generate_key()
    events: list[Event] = []
    capture = Capture()
    # Every logger at DEBUG into ``capture``. The chatty ones (the core, httpx, httpcore) stop
    # at their own level, so the test runner's log capture does not format thousands of records.
    loggers = [logging.getLogger(name) for name in ("", *QUIET_LOGGERS)]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
        lg.propagate = lg.name == "root"
    unsubscribe = subscribe(events.append)
    journal = EventJournal(folder / "journal.db")
    previous = install_journal(journal)
    results: list[Result] = []
    try:
        # One virtual clock for the sandbox, the store and every call: a device login that
        # waits 5 s between polls is seen by the sandbox to wait 5 s (it enforces intervals).
        clock = VirtualClock()
        with Sandbox(token_lifetime=3600, auto_approve=True, clock=clock) as sb:
            async with httpx.AsyncClient() as client:
                path = folder / "tokens.db"
                with SQLiteEncryptedTokenStore(path, encryption_key=key, clock=clock) as store:
                    harness = _Harness(sb, store, client, timeout, clock)
                    for scenario in scenarios(full=full):
                        results.append(await harness.run(scenario))
            secrets = sandbox_secrets(sb, key)
    finally:
        unsubscribe()
        install_journal(previous)
        journal.close()
        for lg, level, propagate in saved:
            lg.removeHandler(capture)
            lg.setLevel(level)
            lg.propagate = propagate
    texts = list(capture.texts)
    texts += [("event", event.to_json()) for event in events]
    with EventJournal.open_reader(folder / "journal.db") as reader:
        rows = reader.read_after(0, limit=1_000_000)
    texts += [("journal", row.event.to_json()) for row in rows]
    for result in results:
        if result.error is not None:
            texts += _error_texts(f"error:{result.scenario.key}", result.error)
    for path in sorted(folder.iterdir()):  # raw bytes: the encrypted store, the journal, WALs
        texts.append((f"file:{path.name}", path.read_bytes().decode("latin-1")))
    return MatrixRun(results, texts, secrets, len(events))


def run_matrix(folder: Path, *, timeout: float, full: bool) -> MatrixRun:
    """Run every scenario (in a fresh event loop) and capture everything it wrote.

    Args:
        folder: Where the token store and the journal go.
        timeout: Real per-attempt HTTP timeout and stream idle timeout of every call; the slow
            faults take three times as long.
        full: Every scenario (the benchmark run), or the CI selection (see :func:`scenarios`).
    """
    return asyncio.run(_run(folder, timeout, full))
