"""Defensive JWT ``exp`` parsing: every malformed shape gives None, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from auth_helpers import b64, make_jwt
from hypothesis import given
from hypothesis import strategies as st

from saga_magic.core.jwt import MAX_TOKEN_CHARS, finite_float, jwt_exp


def raw(payload: bytes) -> str:
    return f"eyJhbGciOiJub25lIn0.{b64(payload)}.sig"


@pytest.mark.parametrize(
    ("exp", "expected"),
    [(1_700_000_000, 1_700_000_000.0), (1.5, 1.5), (-3, -3.0), (0, 0.0)],
)
def test_numeric_exp(exp: Any, expected: float) -> None:
    assert jwt_exp(make_jwt(exp=exp)) == expected


def test_unsigned_token_with_empty_signature() -> None:
    assert jwt_exp(raw(b'{"exp": 5}')[: -len("sig")]) == 5.0


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="none"),
        pytest.param(12345, id="int"),
        pytest.param(b"a.b.c", id="bytes"),
        pytest.param("", id="empty"),
        pytest.param("opaque-token-without-dots", id="one-part"),
        pytest.param("header.payload", id="two-parts"),
        pytest.param("a.b.c.d.e", id="jwe-five-parts"),
        pytest.param("a..c", id="empty-payload"),
        pytest.param("a.!!!.c", id="bad-alphabet"),
        pytest.param("a.abcde.c", id="bad-padding"),
        pytest.param("a.a+b/.c", id="standard-alphabet"),
        pytest.param(raw(b"\xff\xfe"), id="not-utf8"),
        pytest.param(raw(b"not json"), id="not-json"),
        pytest.param(raw(b"[1, 2, 3]"), id="json-array"),
        pytest.param(raw(b'"just a string"'), id="json-string"),
        pytest.param(raw(b"{}"), id="no-exp"),
        pytest.param(raw(b'{"exp": "1700000000"}'), id="exp-string"),
        pytest.param(raw(b'{"exp": true}'), id="exp-true"),
        pytest.param(raw(b'{"exp": false}'), id="exp-false"),
        pytest.param(raw(b'{"exp": null}'), id="exp-null"),
        pytest.param(raw(b'{"exp": [1]}'), id="exp-list"),
        pytest.param(raw(b'{"exp": NaN}'), id="exp-nan"),
        pytest.param(raw(b'{"exp": Infinity}'), id="exp-inf"),
        pytest.param(raw(b'{"exp": 1' + b"0" * 400 + b"}"), id="exp-overflow"),
        pytest.param(raw(b"[" * 100_000 + b"]" * 100_000)[:MAX_TOKEN_CHARS], id="deep"),
        pytest.param(raw(b"[" * 20_000 + b"]" * 20_000), id="deep-nesting"),
        pytest.param("a." + "A" * MAX_TOKEN_CHARS + ".c", id="too-long"),
    ],
)
def test_malformed_tokens_give_none(token: Any) -> None:
    assert jwt_exp(token) is None


@given(st.text(max_size=300))
def test_never_raises_on_text(token: str) -> None:
    result = jwt_exp(token)
    assert result is None or isinstance(result, float)


@given(st.binary(max_size=200))
def test_never_raises_on_any_payload(payload: bytes) -> None:
    jwt_exp(raw(payload))


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(), st.lists, max_leaves=5))
def test_never_raises_on_any_exp(value: Any) -> None:
    token = raw(json.dumps({"exp": value}).encode())
    result = jwt_exp(token)
    assert result is None or result == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (-1.5, -1.5),
        (True, None),
        ("3", None),
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        (10**400, None),
    ],
)
def test_finite_float(value: Any, expected: float | None) -> None:
    assert finite_float(value) == expected
