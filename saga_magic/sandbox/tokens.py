"""Token material: base64url, unsigned JWT-shaped tokens, opaque secrets and fingerprints.

Token material comes from :mod:`secrets`; nothing here is cryptographically signed (the sandbox
recognises its own tokens by lookup, not by signature).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping

__all__ = [
    "b64url",
    "b64url_json",
    "decode_jwt_claims",
    "fingerprint",
    "mint_jwt",
    "new_secret",
]

_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def b64url(data: bytes) -> str:
    """Return unpadded base64url text for bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Mapping[str, object]) -> str:
    """Return unpadded base64url of compact JSON."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def mint_jwt(claims: Mapping[str, object], *, kid: str = "sandbox-key-1") -> str:
    """Return a JWT-shaped token (header.payload.signature) with a random, unchecked signature.

    Args:
        claims: The payload claims.
        kid: Key id in the header.
    """
    header = {"typ": "JWT", "alg": "RS256", "kid": kid}
    return ".".join([b64url_json(header), b64url_json(claims), b64url(secrets.token_bytes(64))])


def decode_jwt_claims(token: str) -> dict[str, object] | None:
    """Return the payload claims of a JWT-shaped token, or ``None`` when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def fingerprint(secret: str) -> str:
    """Return a short, stable, non-reversible fingerprint of a secret (``sha256:<12 hex>``).

    The request log shows secrets (bearer tokens, refresh tokens, device codes, client secrets)
    only in this form; tests compute the same value to check which secret a client sent.
    """
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def new_secret(kind: str) -> str:
    """Return fresh token material of a kind.

    Args:
        kind: ``"refresh"`` (refresh token), ``"device"`` (device code), ``"user_code"``,
            ``"opaque"`` (opaque access token) or ``"hex"`` (32 hex digits).

    Raises:
        ValueError: unknown kind.
    """
    if kind == "refresh":
        return "1.AS" + secrets.token_urlsafe(96)
    if kind == "device":
        return "DAQABIQEAAAB" + secrets.token_urlsafe(72)
    if kind == "user_code":
        return "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
    if kind == "opaque":
        return "EwB" + secrets.token_urlsafe(120)
    if kind == "hex":
        return secrets.token_hex(16)
    raise ValueError(f"unknown secret kind {kind!r}")
