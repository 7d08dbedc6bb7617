"""Issue 6 item 4: every sandbox fault -> the documented outcome, within the deadline, no hang.

The run itself is :func:`fault_scenarios.run_matrix` (shared with the secret canary). Expected
outcomes come from PROTOCOLS.md (sections 1.5, 1.6, 2.7, 2.8, 3) and DESIGN.md; ``once`` is the
fault followed by normal answers, ``persistent`` the fault on every attempt. A fault the sandbox
adds later fails this test until it is given an expected outcome here.
"""

from __future__ import annotations

from typing import Any

import pytest
from fault_scenarios import DEADLINE, HANG_GUARD, MatrixRun, Result
from torture_helpers import Report

pytestmark = pytest.mark.torture

R = "result"
Pair = tuple[str, str]  # (once, persistent)


def both(outcome: str) -> Pair:
    """The same outcome whether the fault happens once or on every attempt."""
    return (outcome, outcome)


def rides(outcome: str) -> Pair:
    """Ridden out when it happens once; ``outcome`` once the retry budget is spent."""
    return (R, outcome)


TRANSIENT, TIMEOUT, RATE = "TransientError", "RequestTimeoutError", "RateLimitError"
AUTH, CONFIG, INPUT = "AuthenticationError", "ConfigurationError", "InputValidationError"

# fault -> ((reason once, persistent), (stream once, persistent)). Streams: a failure after the
# first delta is raised at once with partial_text (never retried); variants that shape a
# non-streaming answer do not apply to a stream, and SSE variants break a non-streaming call's
# JSON (a parse error, retried once).
CHAT: dict[str, tuple[Pair, Pair]] = {
    "ok": (both(R), both(R)),
    "no_usage": (both(R), both(R)),
    "null_content": (both(R), both(R)),  # empty text: a result with a warning event
    "filter_down": (both(R), both(R)),
    "filtered_output": (both(R), both(R)),  # finish_reason content_filter is a result
    "reasoning": (both(R), both(R)),  # max_tokens / temperature adapted once per engine
    "stream_options_rejected": (both(R), both(R)),
    "400_context": (both(INPUT), both(INPUT)),
    "400_filter": (both(INPUT), both(INPUT)),
    "413": (both(INPUT), both(INPUT)),
    "400_unsupported": (rides(CONFIG), rides(CONFIG)),  # adapted once, then CONFIG
    "404_deployment": (both(CONFIG), both(CONFIG)),
    "404_path": (both(CONFIG), both(CONFIG)),
    "404_apim": (both(CONFIG), both(CONFIG)),
    "permission_denied": (both("PermissionDeniedError"), both("PermissionDeniedError")),
    "auth_gateway_401": (rides(AUTH), rides(AUTH)),  # one forced refresh, then re-login
    "expire_token_after": (rides(AUTH), rides(AUTH)),
    "408_timeout": (rides(TIMEOUT), rides(TIMEOUT)),
    "429": (rides(RATE), rides(RATE)),
    "429_both": (rides(RATE), rides(RATE)),
    "429_ms_only": (rides(RATE), rides(RATE)),
    "429_seconds_only": (rides(RATE), rides(RATE)),
    "429_http_date": (rides(RATE), rides(RATE)),
    "429_no_header": (rides(RATE), rides(RATE)),
    "429_capacity": (rides(RATE), rides(RATE)),  # 6 s wait fits the 60 s deadline
    "429_garbage": (rides(RATE), rides(RATE)),
    "429_quota": (both(RATE), both(RATE)),  # 86400 s: fail fast, no sleep
    **{
        f"{s}_{b}": (rides(TRANSIENT), rides(TRANSIENT))
        for s in (500, 502, 503)
        for b in ("json", "html", "text", "empty")
    },
    **{f"504_{b}": (rides(TIMEOUT), rides(TIMEOUT)) for b in ("json", "html", "text", "empty")},
    "reset": (rides(TRANSIENT), rides(TRANSIENT)),
    "slow_headers": (rides(TIMEOUT), rides(TIMEOUT)),
    "slow_body": (rides(TIMEOUT), both(R)),  # a trickling stream is alive: idle gap, deadline
    "reset_mid_body": (rides(TRANSIENT), both(TRANSIENT)),
    "malformed_json": (rides(TRANSIENT), rides(TRANSIENT)),  # parse error, retried once
    "html_200": (rides(TRANSIENT), rides(TRANSIENT)),
    "missing_choices": (rides(TRANSIENT), both(R)),
    "empty_choices": (rides(TRANSIENT), both(R)),
    "stream_azure": (rides(TRANSIENT), both(R)),
    "stream_comments": (rides(TRANSIENT), both(R)),
    "stream_async_filter_block": (rides(TRANSIENT), both(R)),
    "done_no_finish": (rides(TRANSIENT), both(R)),  # [DONE] ends a stream well
    "close_no_done": (rides(TRANSIENT), both(TRANSIENT)),  # EOF without finish: truncated
    "stream_error_event": (rides(TRANSIENT), both(TRANSIENT)),
    "stream_bad_json": (rides(TRANSIENT), both(TRANSIENT)),
    "reset_mid_stream": (rides(TRANSIENT), both(TRANSIENT)),
    "stall_stream": (rides(TIMEOUT), both(TIMEOUT)),  # idle gap after the first delta
}

# Token-endpoint faults -> ((refresh once, persistent), (device login once, persistent)).
# The sandbox gives ``device_*`` faults to device-code polls only and ``rt_*`` / ``mfa_required``
# to refresh-token grants only (the other call gets normal answers). A device login rides out
# transient poll failures until the code expires. A transport fault
# delivers the answer the request earned in a broken way: the poll that was lost had redeemed
# the one-use device code, so the next poll is told invalid_grant (AADSTS54005) and the login
# must start again (inherent to RFC 8628, not recoverable by any client).
LOST_REDEMPTION = both(AUTH)
TOKEN: dict[str, tuple[Pair, Pair]] = {
    "ok": (both(R), both(R)),
    "opaque_token": (both(R), both(R)),
    "clock_skew": (both(R), both(R)),
    "rt_reuse_strict": (both(R), both(R)),  # a fresh refresh token is not superseded
    "device_expire_early": (both(R), both(AUTH)),
    "rt_revoked": (both(AUTH), both(R)),
    "rt_inactive": (both(AUTH), both(R)),
    "mfa_required": (both(AUTH), both(R)),
    "secret_bad": (both(CONFIG), both(CONFIG)),
    "secret_expired": (both(CONFIG), both(CONFIG)),
    "device_bad_code": (both(R), both(AUTH)),
    "device_slow_down": (both(R), both(R)),  # interval + 5 s per slow_down, then approved
    "token_429": (rides(RATE), both(R)),
    "token_429_date": (rides(RATE), both(R)),
    "token_429_garbage": (rides(RATE), both(R)),
    "loop_detect": (rides(RATE), both(R)),  # AADSTS50196 is throttling, not re-login
    "token_5xx_json": (rides(TRANSIENT), both(R)),
    "token_5xx_html": (rides(TRANSIENT), both(R)),
    "token_5xx_empty": (rides(TRANSIENT), both(R)),
    "token_truncated": (rides(TRANSIENT), both(R)),
    "token_reset": (rides(TRANSIENT), LOST_REDEMPTION),
    "reset": (rides(TRANSIENT), LOST_REDEMPTION),
    "reset_mid_body": (rides(TRANSIENT), LOST_REDEMPTION),
    "slow_headers": (rides(TIMEOUT), LOST_REDEMPTION),
    "slow_body": (rides(TIMEOUT), LOST_REDEMPTION),
    "token_slow": (rides(TIMEOUT), LOST_REDEMPTION),
}

DEVICECODE: dict[str, Pair] = {
    "ok": both(R),
    "device_expire_early": both(R),
    "token_429": rides(RATE),
    "token_429_date": rides(RATE),
    "token_429_garbage": rides(RATE),
    "token_5xx_json": rides(TRANSIENT),
    "token_5xx_html": rides(TRANSIENT),
    "token_5xx_empty": rides(TRANSIENT),
    "token_truncated": rides(TRANSIENT),
    "token_reset": rides(TRANSIENT),
    "reset": rides(TRANSIENT),
    "reset_mid_body": rides(TRANSIENT),
    "slow_headers": rides(TIMEOUT),
    "slow_body": rides(TIMEOUT),
    "token_slow": rides(TIMEOUT),
}

DEVICE_CODE_LIFETIME = 900.0


def expected(result: Result) -> str | None:
    s = result.scenario
    mode = 0 if s.mode == "once" else 1
    if s.variant == "superseded":  # strict rotation and a refresh token used before
        return AUTH
    tables: dict[str, dict[str, Any]] = {"chat": CHAT, "token": TOKEN, "devicecode": DEVICECODE}
    entry = tables[s.endpoint].get(s.fault)
    if entry is None:
        return None
    if s.endpoint == "devicecode":
        return str(entry[mode])
    column = 0 if s.call in ("reason", "refresh") else 1
    return str(entry[column][mode])


def deadline(result: Result) -> float:
    return DEVICE_CODE_LIFETIME if result.scenario.call == "device_login" else DEADLINE


def matrix_rows(run: MatrixRun) -> list[dict[str, Any]]:
    return [
        {
            "scenario": r.scenario.key,
            "expected": expected(r),
            "outcome": r.outcome,
            "detail": r.detail,
            "partial_chars": r.partial_chars,
            "elapsed_s": r.elapsed_s,
            "virtual_s": r.virtual_s,
            "deadline_s": deadline(r),
        }
        for r in run.results
    ]


def test_every_fault_has_its_documented_outcome(fault_run: MatrixRun, report: Report) -> None:
    rows = matrix_rows(fault_run)
    wrong = [row for row in rows if row["outcome"] != row["expected"]]
    late = [row for row in rows if row["virtual_s"] > row["deadline_s"] + 1.0]
    hung = [row for row in rows if row["outcome"] == "HANG" or row["elapsed_s"] >= HANG_GUARD]
    report(
        "fault_matrix",
        {
            "scenarios": len(rows),
            "faults": len({row["scenario"].split("/")[0] for row in rows}),
            "unexpected": len(wrong),
            "past_deadline": len(late),
            "hangs": len(hung),
            "max_elapsed_s": max(row["elapsed_s"] for row in rows),
            "max_virtual_s_engine_refresh": max(
                row["virtual_s"] for row in rows if row["deadline_s"] == DEADLINE
            ),
            "rows": rows,
        },
    )
    assert hung == []
    assert late == []
    assert wrong == [], "\n".join(
        f"{r['scenario']}: expected {r['expected']}, got {r['outcome']} ({r['detail']})"
        for r in wrong
    )


def test_streams_failing_after_the_first_delta_keep_the_partial_text(
    fault_run: MatrixRun,
) -> None:
    after_first_delta = [
        r
        for r in fault_run.results
        if r.scenario.call == "stream"
        and r.outcome != R
        and r.scenario.fault
        in {"close_no_done", "stream_error_event", "stream_bad_json", "reset_mid_stream"}
    ]
    assert len(after_first_delta) == 8
    assert all(r.partial_chars for r in after_first_delta), after_first_delta
