"""The canary: run every flow at DEBUG against the sandbox; no issued secret may surface anywhere.

Secrets are collected from the sandbox's own records (every access token, refresh token and
device code it issued, the client secret) and from the token-endpoint answers captured by an
httpx hook on the test's client (``id_token`` included). Sinks searched: every log record (message,
args, attributes, formatted traceback), every event delivered to a subscriber (its JSON), every
journal row and the journal's raw database files, and every exception caught (str, repr,
context, the whole chained traceback). The token store's raw files must not hold them in clear
either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from integ_helpers import Capture, Clock, issued_secrets, make_auth, make_engine

from saga_magic.core.auth import DevicePoll, EntraIDAuthManager
from saga_magic.core.engine import CopilotReasoningEngine
from saga_magic.core.errors import ArcSagaException
from saga_magic.core.events import Event, EventJournal, install_journal, subscribe
from saga_magic.core.refresh import PERSIST_COOLDOWN
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.core.types import AITask
from saga_magic.sandbox import DEFAULT_SCOPE, Sandbox

SCOPES = DEFAULT_SCOPE + " openid profile"  # openid: id tokens are issued too
USER = "canary"
SEEDED = "seeded"


def _needles(secret: str) -> set[str]:
    """The secret, and distinctive pieces of it (a truncated leak is still a leak)."""
    needles = {secret}
    parts = secret.split(".")
    if len(parts) >= 3:  # a JWT: its header is shared by all tokens, its body and signature not
        needles |= {part for part in parts[1:] if len(part) >= 16}
        needles |= {part[len(part) // 2 : len(part) // 2 + 24] for part in parts[1:]}
    elif len(secret) >= 32:
        middle = len(secret) // 2
        needles |= {secret[:24], secret[middle - 12 : middle + 12], secret[-24:]}
    return needles


def _leaks(secrets: Iterable[str], texts: Iterable[tuple[str, str]]) -> list[str]:
    needles = {needle: secret[:8] for secret in secrets for needle in _needles(secret)}
    found = []
    for where, text in texts:
        for needle, label in needles.items():
            if needle in text:
                found.append(f"secret {label}... in {where}: ...{text[:160]!r}")
    return found


def _exception_texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, ArcSagaException):
        texts.append(repr(error.context()))
        texts.append(str(error.hint))
    seen: BaseException | None = error.__cause__ or error.__context__
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return texts


class Run:
    """Everything the canary flows touch, and everything they must not leak into."""

    def __init__(
        self,
        sb: Sandbox,
        clock: Clock,
        store: SQLiteEncryptedTokenStore,
        http: httpx.AsyncClient,
        capture: Capture,
    ) -> None:
        self.sb = sb
        self.clock = clock
        self.store = store
        self.http = http
        self.capture = capture
        self.errors: list[BaseException] = []
        self.outputs: list[str] = []
        self.events: list[Event] = []
        self.seeded: list[str] = []

    async def expect_failure(self, call: Any) -> None:
        """Await ``call``; the failure it must end in is kept for the scan."""
        try:
            async with asyncio.timeout(5):
                await call
        except ArcSagaException as error:
            self.errors.append(error)
        else:
            raise AssertionError("the flow was expected to fail")

    async def stream(self, engine: CopilotReasoningEngine, prompt: str) -> None:
        """Stream an answer; a mid-stream failure is kept for the scan."""
        try:
            async with asyncio.timeout(5):
                stream = engine.stream(AITask(prompt))
                async with stream:
                    async for _delta in stream:
                        pass
            self.outputs.append(repr(stream.result))
        except ArcSagaException as error:
            self.errors.append(error)


async def _device_login(run: Run, auth: EntraIDAuthManager, user: str) -> None:
    login = await auth.start_device_login(user)
    run.outputs += [repr(login), str(login), login.message]

    def approve(poll: DevicePoll) -> None:
        run.outputs.append(repr(poll))
        run.sb.approve_device_code(login.user_code)

    info = await auth.complete_device_login(login, on_poll=approve)
    run.outputs.append(repr(info))


async def _flows(run: Run, auth: EntraIDAuthManager, engine: CopilotReasoningEngine) -> None:
    sb, clock = run.sb, run.clock
    # Device login with a slow_down, then chat (both shapes of answer).
    sb.script("token", ["device_slow_down"])
    await _device_login(run, auth, USER)
    run.outputs.append(repr(await engine.reason(AITask("canary one"))))
    await run.stream(engine, "canary streamed")
    # Expired: a refresh through a 503 and a 429.
    clock.advance(3600)
    sb.script("token", ["token_5xx_json", "token_429:2"])
    run.outputs.append(repr(await engine.reason(AITask("after refresh"))))
    # 401 -> forced refresh; chat faults of every family.
    sb.script("chat", ["auth_gateway_401", "429_both", "500_json", "malformed_json"])
    run.outputs.append(repr(await engine.reason(AITask("through faults"))))
    sb.script("chat", ["stream_error_event", "reset_mid_stream:1"])
    await run.stream(engine, "broken stream one")
    await run.stream(engine, "broken stream two")
    sb.script("chat", ["400_filter"])
    await run.expect_failure(engine.reason(AITask("filtered")))
    sb.script("chat", ["auth_gateway_401", "auth_gateway_401"])
    await run.expect_failure(engine.reason(AITask("rejected twice")))
    sb.script("chat", ["permission_denied"])
    await run.expect_failure(engine.reason(AITask("no role")))
    # Refresh failures: re-login, configuration, transient, persistence.
    clock.advance(3600)
    sb.script("token", ["rt_revoked"])
    await run.expect_failure(auth.get_valid_token(USER))
    await run.expect_failure(auth.get_valid_token(USER))  # the cool-down's error
    await _device_login(run, auth, USER)  # signing in again clears it
    clock.advance(3600)
    sb.script("token", ["secret_bad"])
    await run.expect_failure(auth.get_valid_token(USER))
    clock.advance(61)
    sb.script("token", ["token_reset", "token_truncated", "token_5xx_html", "token_slow:1.0"])
    await run.expect_failure(auth.get_valid_token(USER))
    clock.advance(61)
    db = run.store.db_path
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON tokens BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    await run.expect_failure(auth.get_valid_token(USER))
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER refuse")
    await run.expect_failure(auth.get_valid_token(USER))  # fails fast for a few seconds
    clock.advance(PERSIST_COOLDOWN)
    assert await auth.get_valid_token(USER)  # writable again: refreshed and saved
    # Device login failures.
    login = await auth.start_device_login("declined")
    sb.decline_device_code(login.user_code)
    await run.expect_failure(auth.complete_device_login(login))
    # A user seeded with opaque tokens the core never saw issued, rejected by the chat endpoint.
    seeded = sb.issue_tokens(opaque=True)
    run.seeded += [str(seeded["access_token"]), str(seeded["refresh_token"])]
    await run.store.save_token(SEEDED, seeded)
    other = make_engine(
        sb, auth, clock=clock, sleep=clock.sleep, user_id=SEEDED, http_client=run.http
    )
    try:
        sb.script("chat", ["auth_gateway_401"])
        sb.script("token", ["rt_inactive"])
        await run.expect_failure(other.reason(AITask("seeded user")))
    finally:
        await other.close()
    run.outputs += [repr(i) for i in await auth.token_infos()]
    await auth.logout(USER)


@pytest.mark.parametrize("confidential", [False, True], ids=["public", "confidential"])
async def test_no_issued_secret_reaches_any_sink(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, confidential: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="saga")
    secret = "canary-client-secret-5f1e9a7c3b0d4e2f8a6c" if confidential else None
    journal_path = tmp_path / "journal.db"
    journal = EventJournal(journal_path)
    install_journal(journal)  # closed by the autouse fixture's reset_for_tests
    capture = Capture()
    with Sandbox(token_lifetime=3600, client_secret=secret, clock=clock) as sb:
        async with httpx.AsyncClient(verify=False, event_hooks={"response": [capture]}) as http:
            with SQLiteEncryptedTokenStore(
                tmp_path / "tokens.db",
                encryption_key=SQLiteEncryptedTokenStore.generate_key(),
                clock=clock,
            ) as store:
                run = Run(sb, clock, store, http, capture)
                subscribe(run.events.append)
                auth = make_auth(
                    sb,
                    store,
                    clock=clock,
                    sleep=clock.sleep,
                    scopes=SCOPES,
                    http_client=http,
                    max_retries=3,
                    timeout=0.5,
                )
                engine = make_engine(
                    sb, auth, clock=clock, sleep=clock.sleep, user_id=USER, http_client=http
                )
                try:
                    async with asyncio.timeout(20):
                        await _flows(run, auth, engine)
                finally:
                    await engine.close()
                    await auth.close()
                store_files = [p for p in tmp_path.glob("tokens.db*") if p.is_file()]
                store_bytes = b"".join(p.read_bytes() for p in store_files)
        secrets = issued_secrets(sb) | capture.values() | set(run.seeded)
    assert journal.flush(timeout=5)

    # The canary is not vacuous: many secrets, events, records, rows and failures.
    assert secret is None or secret in secrets
    assert any(s.count(".") == 2 for s in run.capture.values())  # id/access JWTs captured
    assert len(secrets) >= 15
    assert len(run.events) >= 60
    assert len(caplog.records) >= 60
    assert len(run.errors) >= 10
    names = {e.event for e in run.events}
    assert {
        "device_code_issued",
        "device_code_poll",
        "login_complete",
        "login_failed",
        "token_refresh_retry",
        "token_refresh_failed_auth",
        "token_refresh_failed",
        "token_persistence_failed",
        "copilot_retry",
        "copilot_parse_error",
        "copilot_error",
        "copilot_auth_failed",
        "copilot_stream_complete",
        "logout",
        "engine_closed",
    } <= names

    texts: list[tuple[str, str]] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        where = f"log record {record.name}"
        texts += [
            (where, record.getMessage()),
            (where, repr(record.args)),
            (where, repr(record.__dict__)),
            (where, formatter.format(record)),
        ]
    texts += [(f"event {e.event}", e.to_json()) for e in run.events]
    with contextlib.closing(sqlite3.connect(journal_path)) as conn:
        rows = conn.execute("SELECT * FROM events").fetchall()
    assert len(rows) >= len(run.events)
    texts += [("journal row", repr(row)) for row in rows]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("journal.db*") if p.is_file())
    texts.append(("journal file", raw.decode("latin-1")))
    for error in run.errors:
        texts += [(f"exception {type(error).__name__}", t) for t in _exception_texts(error)]
    texts += [("returned value", text) for text in run.outputs]
    texts.append(("token store file", store_bytes.decode("latin-1")))

    # The scanner itself finds a planted secret.
    for planted in secrets:
        assert _leaks([planted], [("planted", f"x {planted[: len(planted) * 3 // 4]} y")])

    assert _leaks(secrets, texts) == []
