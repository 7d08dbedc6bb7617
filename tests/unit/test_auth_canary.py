"""Canary: run the auth flows at DEBUG and look for any secret in any sink or exception text.

Secrets: every access, refresh and id token issued or stored, the client secret, the device code.
Sinks: stdlib log records, in-process subscribers, the SQLite journal, exception str/repr (and
their causes). The server is made to echo secrets back in its error bodies, the worst case.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import (
    CORRELATION_ID,
    FakeStore,
    Harness,
    build,
    device_ok,
    html,
    make_jwt,
    oauth_error,
    secret,
    token_ok,
)

from saga_magic.core.errors import ArcSagaException
from saga_magic.core.events import REDACTED, Event, EventJournal, install_journal, subscribe

CLIENT_SECRET = "client-secret-canary-7d1f9a3c5e"


async def test_no_secret_reaches_any_sink(
    fake_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="saga")
    seen: list[Event] = []
    unsubscribe = subscribe(seen.append)
    journal = EventJournal(tmp_path / "journal.db")
    previous = install_journal(journal)
    store = FakeStore()
    manager, entra, client = build(store, fake_clock, client_secret=CLIENT_SECRET, max_retries=2)
    h = Harness(manager, store, entra, fake_clock, client)
    secrets: list[str] = [CLIENT_SECRET]
    failures: list[BaseException] = []

    def issue(**extra: Any) -> httpx.Response:
        access, refresh, id_token = make_jwt(exp=fake_clock() + 3600), secret("rt"), make_jwt()
        secrets.extend([access, refresh, id_token])
        return token_ok(access, refresh, id_token=id_token, **extra)

    def echo(status: int, error: str, codes: tuple[int, ...], leaked: str) -> httpx.Response:
        return oauth_error(
            status,
            error,
            codes,
            text=f"Bad refresh_token {leaked} for client_secret={CLIENT_SECRET}.",
            claims=f'{{"token":"{leaked}"}}',
        )

    async def expect_failure(call: Any) -> None:
        with pytest.raises(ArcSagaException) as caught:
            await call
        failures.append(caught.value)

    try:
        # 1. A refresh through a 500 page and a connection reset that both echo the RT.
        row = h.seed(expires_in=-1)
        secrets += [row["access_token"], row["refresh_token"]]
        rt = row["refresh_token"]
        entra.reply(
            html(500, f"<html><body>refresh_token={rt} {CLIENT_SECRET}</body></html>"),
            httpx.ConnectError(f"reset while sending refresh_token={rt}&client_secret=x"),
            issue(),
        )
        await manager.get_valid_token("alice")

        # 2. invalid_grant echoing the RT and the secret.
        fake_clock.advance(4000)
        rt = store.rows["alice"]["refresh_token"]
        entra.reply(echo(400, "invalid_grant", (50173,), rt))
        await expect_failure(manager.get_valid_token("alice"))

        # 3. A rejected token, a forced refresh, then a failed save.
        row = h.seed("bob", expires_in=3600)
        secrets += [row["access_token"], row["refresh_token"]]
        entra.reply(issue())
        await manager.force_refresh("bob", rejected_token=row["access_token"])
        store.fail_save = OSError("disk full")
        entra.reply(issue())
        await expect_failure(manager.force_refresh("bob"))
        store.fail_save = None

        # 4. Opportunistic failure with an echo, 401 invalid_client with an echo.
        row = h.seed("carol", expires_in=100)
        secrets += [row["access_token"], row["refresh_token"]]
        entra.reply(echo(503, "temporarily_unavailable", (50033,), row["refresh_token"]))
        await manager.get_valid_token("carol")
        row = h.seed("dave", expires_in=-1)
        secrets += [row["access_token"], row["refresh_token"]]
        entra.reply(echo(401, "invalid_client", (7000222,), row["refresh_token"]))
        await expect_failure(manager.get_valid_token("dave"))

        # 5. Device login: pending bodies echo the device code; then a declined login.
        device_code = secret("device-code")
        secrets.append(device_code)
        entra.reply(device_ok(device_code))
        login = await manager.start_device_login("erin")
        entra.reply(
            oauth_error(400, "authorization_pending", (70016,), text=f"pending {device_code}"),
            echo(429, "temporarily_unavailable", (), device_code),
            issue(),
        )
        await manager.complete_device_login(login)
        assert device_code not in repr(login)
        other_code = secret("device-code")
        secrets.append(other_code)
        entra.reply(device_ok(other_code))
        login = await manager.start_device_login("frank")
        entra.reply(echo(400, "authorization_declined", (), other_code))
        await expect_failure(manager.complete_device_login(login))

        # 6. A cancelled login.
        entra.reply(device_ok(secret("device-code")))
        secrets.append(entra.script[-1].json()["device_code"])
        login = await manager.start_device_login("gina")
        entra.reply(oauth_error(400, "authorization_pending"))
        task = asyncio.ensure_future(manager.complete_device_login(login))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert journal.flush(timeout=5.0)
        rows = journal.read_after(0, limit=10_000)
    finally:
        install_journal(previous)
        journal.close()
        unsubscribe()
        await manager.close()
        await client.aclose()

    texts: list[str] = []
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), str(record.__dict__)]
    texts += [event.to_json() for event in seen]
    texts += [repr(event) for event in seen]
    texts += [row.event.to_json() for row in rows]
    for error in failures:
        chain: BaseException | None = error
        while chain is not None:
            texts += [str(chain), repr(chain), repr(vars(chain))]
            chain = chain.__cause__ or chain.__context__
    assert len(failures) == 4
    assert len(rows) >= len(seen) > 20
    assert any(CORRELATION_ID in text for text in texts)  # the useful context is there
    assert any("invalid_grant" in text for text in texts)
    assert any(f"Bad refresh_token {REDACTED}" in str(error) for error in failures)  # scrubbed
    secrets = [s for s in secrets if s]
    assert len(secrets) > 15
    leaks = [(s[:12], t[:120]) for s in secrets for t in texts if s in t]
    assert leaks == []
