"""The fault catalogue and the script-entry parser."""

from __future__ import annotations

import re

import pytest

from saga_magic.sandbox import CATALOGUE, FaultKind, Outcome, fault_names, parse_outcome


def test_catalogue_covers_protocols_section_4() -> None:
    required = {
        # 4.1
        "rt_reuse_strict", "rt_revoked", "rt_inactive", "mfa_required", "secret_bad",
        "secret_expired", "token_429", "token_429_date", "token_429_garbage", "token_5xx_json",
        "token_5xx_html", "token_5xx_empty", "token_truncated", "token_reset", "token_slow",
        "loop_detect", "device_slow_down", "device_bad_code", "device_expire_early",
        # 4.2
        "429_both", "429_ms_only", "429_seconds_only", "429_http_date", "429_no_header",
        "429_quota", "429_capacity", "429_garbage", "500_json", "502_html", "504_text",
        "408_timeout", "400_context", "400_filter", "400_unsupported", "413", "404_deployment",
        "404_path", "404_apim", "auth_gateway_401", "permission_denied", "expire_token_after",
        "reasoning", "slow_headers", "slow_body", "stall_stream", "reset_mid_body",
        "reset_mid_stream", "close_no_done", "done_no_finish", "malformed_json", "html_200",
        "missing_choices", "empty_choices", "null_content", "no_usage", "filtered_output",
        "filter_down", "stream_azure", "stream_async_filter_block", "stream_error_event",
        "stream_bad_json", "stream_comments", "stream_options_rejected",
    }  # fmt: skip
    assert required <= set(CATALOGUE)
    assert "503" in fault_names("chat")


def test_specs_describe_themselves() -> None:
    spec = CATALOGUE["loop_detect"]
    assert spec.to_dict() == {
        "name": "loop_detect",
        "endpoints": ["token"],
        "kind": "modifier",
        "summary": spec.summary,
        "params": [
            {"name": "n", "type": "int", "default": 5},
            {"name": "window", "type": "float", "default": 60.0},
        ],
        "grant": None,
    }
    assert {s.kind for s in CATALOGUE.values()} == set(FaultKind)
    assert CATALOGUE["permission_denied"].to_dict()["params"] == [
        {"name": "status", "type": "int", "default": 401, "choices": [401, 403]}
    ]
    grants = {name: spec.grant for name, spec in CATALOGUE.items() if spec.grant}
    assert grants == {
        "device_bad_code": "device_code",
        "device_expire_early": "device_code",
        "device_slow_down": "device_code",
        "mfa_required": "refresh_token",
        "rt_inactive": "refresh_token",
        "rt_reuse_strict": "refresh_token",
        "rt_revoked": "refresh_token",
    }


def test_fault_names_per_endpoint() -> None:
    assert fault_names() == sorted(CATALOGUE)
    token = fault_names("token")
    assert "rt_revoked" in token
    assert "429" in token
    assert "stall_stream" not in token
    assert "rt_revoked" not in fault_names("devicecode")
    with pytest.raises(ValueError, match="unknown endpoint"):
        fault_names("nope")


@pytest.mark.parametrize(
    ("entry", "endpoint", "fault", "params", "delay"),
    [
        ("ok", "chat", "ok", {}, 0.0),
        ("  429_both ", "chat", "429_both", {}, 0.0),
        ("429:retry_after=1.5", "chat", "429", {"retry_after": "1.5"}, 0.0),
        ("429:retry_after=2,retry_after_ms=300", "chat", "429",
         {"retry_after": "2", "retry_after_ms": "300"}, 0.0),
        ("slow_headers:0.2", "chat", "slow_headers", {"seconds": 0.2}, 0.0),
        ("slow_headers:seconds=0.2,delay_ms=50", "chat", "slow_headers", {"seconds": 0.2}, 0.05),
        ("loop_detect:3/10", "token", "loop_detect", {"n": 3, "window": 10.0}, 0.0),
        ("stall_stream:2", "chat", "stall_stream", {"k": 2}, 0.0),
        ("429_garbage:nan", "chat", "429_garbage", {"value": "nan"}, 0.0),
        ("clock_skew:-600", "token", "clock_skew", {"seconds": -600.0}, 0.0),
        ({"fault": "429_both", "delay_ms": 50}, "chat", "429_both", {}, 0.05),
        ({"fault": "stall_stream", "k": 3}, "chat", "stall_stream", {"k": 3}, 0.0),
        ("500", "chat", "500_json", {}, 0.0),
        ("503", "chat", "503_json", {"retry_after": "1"}, 0.0),
        ("403", "chat", "permission_denied", {"status": 403}, 0.0),
        ("500", "token", "token_5xx_json", {"status": 500}, 0.0),
        ("429", "devicecode", "token_429", {}, 0.0),
    ],
)  # fmt: skip
def test_parse_entries(
    entry: str | dict[str, object],
    endpoint: str,
    fault: str,
    params: dict[str, object],
    delay: float,
) -> None:
    outcome = parse_outcome(entry, endpoint)
    assert outcome.fault == fault
    assert dict(outcome.params) == params
    assert outcome.delay == pytest.approx(delay)


@pytest.mark.parametrize(
    ("entry", "endpoint", "message"),
    [
        ("nope", "chat", "unknown fault 'nope' for endpoint 'chat'; known: "),
        ("rt_revoked", "chat", "does not apply to endpoint 'chat'"),
        ("stall_stream", "token", "does not apply to endpoint 'token'"),
        ("slow_headers:abc", "chat", "expected a float"),
        ("slow_headers:-1", "chat", "non-negative"),
        ("slow_headers:inf", "chat", "non-negative"),
        ("stall_stream:1.5", "chat", "expected a int"),
        ("slow_headers:1,2", "chat", "at most 1 argument"),
        ("slow_headers:bogus=1", "chat", "has no parameter 'bogus' (parameters: seconds)"),
        ("reset:bogus=1", "chat", "(parameters: none)"),
        ("ok:delay_ms=-5", "chat", "delay_ms"),
        ({"fault": 5}, "chat", "needs a 'fault' string"),
        ({"fault": "stall_stream", "k": True}, "chat", "expected a int"),
        ({"fault": "stall_stream", "k": [1]}, "chat", "expected a int"),
        ("ok", "nowhere", "unknown endpoint"),
        ("permission_denied:500", "chat", "expected 401 or 403, got '500'"),
        ({"fault": "permission_denied", "status": 200}, "chat", "expected 401 or 403, got 200"),
    ],
)
def test_parse_errors(entry: str | dict[str, object], endpoint: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_outcome(entry, endpoint)


def test_literal_http_date_needs_the_mapping_form() -> None:
    """Finding 16 (documented): commas split the string form; the mapping form keeps them."""
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_outcome(f"429:retry_after={date}", "chat").text("retry_after") == "Wed"
    assert parse_outcome({"fault": "429", "retry_after": date}, "chat").text("retry_after") == date


def test_parse_rejects_other_types() -> None:
    with pytest.raises(ValueError, match="string or a mapping"):
        parse_outcome(42, "chat")  # type: ignore[arg-type]


def test_outcome_accessors_and_describe() -> None:
    outcome = parse_outcome("429:retry_after=soon,delay_ms=25", "chat")
    assert outcome.describe() == "429:retry_after=soon,delay_ms=25"
    assert outcome.text("retry_after") == "soon"
    assert outcome.optional_number("retry_after") is None
    assert outcome.optional_number("http_date") is None
    with pytest.raises(KeyError):
        outcome.number("retry_after")
    with pytest.raises(KeyError):
        outcome.text("http_date")
    with pytest.raises(KeyError):
        outcome.number("not_a_param")
    stall = Outcome("stall_stream")
    assert stall.integer("k") == 1
    assert stall.describe() == "stall_stream"
    assert parse_outcome("slow_body:0.5", "chat").describe() == "slow_body:seconds=0.5"
