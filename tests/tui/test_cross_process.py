"""A child process writes events to the journal; the TUI (journal source) shows them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from tui_helpers import wait_for

from saga_magic.core.config import Settings
from saga_tui.app import SagaApp
from saga_tui.widgets.event_log import EventLog
from saga_tui.widgets.retries_panel import RetriesPanel

CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from saga_magic.core.events import EventJournal, install_journal, log_with_context

    journal = EventJournal(sys.argv[1])
    install_journal(journal)
    logger = logging.getLogger("saga.child")
    for i in range(int(sys.argv[2])):
        log_with_context(logger, logging.INFO, "child_tick", user_id="kernel", op_id="c1", i=i)
    now = time.time()
    log_with_context(
        logger, logging.WARNING, "copilot_retry", user_id="kernel", op_id="c2",
        attempt=1, max_attempts=6, wait_s=30.0, next_attempt_at=now + 30, reason="429",
        access_token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA",
    )
    assert journal.flush(10)
    install_journal(None)
    journal.close()
    """
)


@pytest.mark.slow
async def test_events_from_another_process_appear(
    make_app: Callable[..., SagaApp], settings: Settings
) -> None:
    app = make_app(source="journal", poll_interval=0.02)
    async with app.run_test(size=(160, 48)) as pilot:
        log = app.query_one(EventLog)
        await wait_for(pilot, lambda: app.source_state == "waiting")
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(settings.journal_path), "250"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        await wait_for(pilot, lambda: len(log.entries) == 251)
        assert app.source_state == "live"
        assert [e.event.context.get("i") for e in log.entries[:3]] == [0, 1, 2]
        assert {e.event.pid for e in log.entries} != {os.getpid()}
        assert [e.rowid for e in log.entries] == list(range(1, 252))
        assert "c2" in app.query_one(RetriesPanel).rows
        last = log.entries[-1].event
        assert last.context["access_token"] == "[REDACTED]"
        assert app.events_seen == 251
