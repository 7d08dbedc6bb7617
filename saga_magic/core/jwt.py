"""Defensive reading of a JWT's ``exp`` claim (no signature check, no crash, ever).

Entra access tokens may be JWTs, encrypted JWEs (five parts) or opaque strings. The auth manager
only wants one number from them, the expiry, to take the earlier of it and the stored
``expires_at``. Anything that is not a well-formed three-part JWT with a numeric ``exp`` gives
``None``: the caller then relies on ``expires_at`` alone (and a token with neither is expired).
"""

from __future__ import annotations

import base64
import binascii
import json
import math

__all__ = ["MAX_TOKEN_CHARS", "finite_float", "jwt_exp"]

MAX_TOKEN_CHARS = 64 * 1024
"""Longer strings are not parsed (Entra tokens are a few KB; this bounds the work)."""


def finite_float(value: object) -> float | None:
    """Read a JSON-ish number defensively (shared by the auth modules' parsers).

    Args:
        value: Any value.

    Returns:
        ``value`` as a finite float when it is an ``int`` or ``float`` (not a ``bool``);
        ``None`` for anything else, NaN, infinities and integers too large for a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def jwt_exp(token: object) -> float | None:
    """Return the ``exp`` claim of a JWT as unix seconds, or ``None``.

    The signature is not verified: the value is only used to refresh *earlier*, never to trust
    a token longer than the server said.

    Args:
        token: The access token (any value; non-strings give ``None``).

    Returns:
        ``exp`` as a float when ``token`` is a three-part JWT whose payload is a JSON object
        with a finite numeric (not boolean) ``exp``; otherwise ``None``. Malformed input
        (one, two or five parts, bad base64, non-UTF-8, non-JSON, missing or odd ``exp``)
        never raises.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    segment = parts[1]
    try:
        raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
        claims = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        # ValueError covers UnicodeDecodeError and json.JSONDecodeError; RecursionError a
        # pathologically nested payload.
        return None
    if not isinstance(claims, dict):
        return None
    return finite_float(claims.get("exp"))
