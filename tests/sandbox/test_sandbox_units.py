"""Small units that the wire tests reach only at their edges."""

from __future__ import annotations

import httpx
import pytest
from sbx_helpers import FakeClock, refresh

from saga_magic.sandbox import Outcome, Sandbox, control, decode_jwt_claims, issuance
from saga_magic.sandbox import state as state_module
from saga_magic.sandbox.device import create_flow, decline, wait_for_user_code
from saga_magic.sandbox.issuance import resource_of
from saga_magic.sandbox.records import SandboxConfig
from saga_magic.sandbox.state import SandboxState
from saga_magic.sandbox.stream import split_pieces
from saga_magic.sandbox.tokens import b64url_json, new_secret


@pytest.mark.parametrize("text", ["", "   ", "one", "  lead and trail  \n", "a\tb\n\nc ", "x  y"])
def test_split_pieces_reassembles(text: str) -> None:
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == max(len(text.split()), 1 if text else 0)


def test_decode_jwt_claims_rejects_non_jwts() -> None:
    assert decode_jwt_claims("opaque") is None
    assert decode_jwt_claims("a.!!!.c") is None
    assert decode_jwt_claims("a." + b64url_json({"x": 1})[:-2] + "_-.c") is None
    assert decode_jwt_claims("a.WzFd.c") is None  # a JSON list, not claims
    assert decode_jwt_claims("a." + b64url_json({"x": 1}) + ".c") == {"x": 1}


def test_new_secret_kinds() -> None:
    assert len(new_secret("user_code")) == 9
    assert len(new_secret("hex")) == 32
    with pytest.raises(ValueError, match="unknown secret kind"):
        new_secret("nope")


def test_resource_of() -> None:
    assert resource_of(["openid", "offline_access"]) == "https://graph.microsoft.com"
    assert resource_of(["User.Read"]) == "https://graph.microsoft.com"
    assert resource_of(["openid", "https://x.example/a/.default"]) == "https://x.example/a"


def test_finish_after_reset_is_ignored() -> None:
    state = SandboxState(SandboxConfig())
    entry = state.record(
        arrived=0.0, method="POST", path="/", query={}, endpoint="chat", headers={}, body=None
    )
    state.reset()
    state.finish(entry, outcome=Outcome("ok"), source=None, status=200)
    assert state.requests() == []


def test_wait_skips_finished_logins() -> None:
    state = SandboxState(SandboxConfig())
    create_flow(state, client_id="c", scope=("openid",), early_expiry=None, mkt=None)
    decline(state)
    with pytest.raises(TimeoutError):
        wait_for_user_code(state, 0.01)


def test_long_sessions_forget_expired_material(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, client: httpx.Client
) -> None:
    monkeypatch.setattr(issuance, "_TOKEN_MEMORY", 1)
    with Sandbox(clock=clock, token_lifetime=10) as sb:
        first = str(sb.issue_tokens()["refresh_token"])
        second = str(sb.issue_tokens()["refresh_token"])
        assert refresh(client, sb, first).status_code == 200
        assert refresh(client, sb, second).status_code == 200
        clock.advance(3601)
        assert refresh(client, sb, first).status_code == 200
        assert len(sb.state.access_tokens) == 1  # the expired ones were dropped


def test_loop_history_is_capped(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Finding 19: a bounded number of distinct requests, each with bounded arrival times."""
    monkeypatch.setattr(state_module, "LOOP_KEYS", 2)
    monkeypatch.setattr(state_module, "LOOP_HISTORY", 3)
    state = SandboxState(SandboxConfig(), clock=clock)
    for key in ("a", "b", "a", "c"):
        state.remember_request(key)
        clock.advance(1)
    assert list(state.loop_history) == ["a", "c"]  # b was the least recently seen
    for _ in range(5):
        history = state.remember_request("a")
    assert len(history) == 3
    assert history[-1] == clock.now


def test_log_updates_find_their_entry_or_nothing() -> None:
    state = SandboxState(SandboxConfig())
    state.fail_open("nothing is open")  # no request being handled: nothing to mark
    for _ in range(3):
        entry = state.record(
            arrived=0.0, method="GET", path="/", query={}, endpoint="other", headers={}, body=""
        )
        state.finish(entry, outcome=Outcome("ok"), source=None, status=200)
    state.client_gone(2, head_sent=True)
    state.client_gone(99, head_sent=False)  # newer than the log: ignored
    state.log.popleft()
    state.client_gone(1, head_sent=False)  # forgotten already: ignored
    assert [(r.seq, r.status, r.delivery) for r in state.requests()] == [
        (2, 200, "client_gone"),
        (3, 200, "complete"),
    ]
    state.log.clear()
    state.client_gone(3, head_sent=False)
    assert state.requests() == []


@pytest.mark.parametrize(
    ("host", "ok"),
    [("", False), ("[", False), ("127.0.0.1", True), ("LOCALHOST:80", True), ("::1", False)],
)
def test_loopback_host_names(host: str, ok: bool) -> None:
    assert control._loopback_host(host) is ok
