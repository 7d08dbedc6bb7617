"""Secret masking for the request log: one set of rules for every endpoint.

The log never holds a credential, only its :func:`~.tokens.fingerprint` (``sha256:<12 hex>``):

* headers: ``authorization`` and ``proxy-authorization`` keep their scheme (``Bearer sha256:...``);
  ``api-key``, ``x-api-key`` and ``ocp-apim-subscription-key`` become a fingerprint; ``cookie``
  keeps the cookie names and fingerprints each value;
* query parameters and form fields named like a secret (:data:`SECRET_FIELDS`);
* JSON bodies: walked, every value under a secret-named key (any depth) fingerprinted;
* any other text: ``name=value``, ``name: value`` and ``"name":"value"`` assignments of a secret
  name, and ``Bearer``/``Basic`` credentials, have their value fingerprinted.

Bodies longer than :data:`BODY_CAP` bytes are kept as masked text cut at the cap, with a marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from .tokens import fingerprint

__all__ = [
    "BODY_CAP",
    "SECRET_FIELDS",
    "SECRET_HEADERS",
    "mask_body",
    "mask_form",
    "mask_headers",
    "mask_json",
    "mask_query",
    "mask_text",
]

BODY_CAP: Final = 64 * 1024
"""Bytes of a request body kept in the log; longer bodies are cut, with a marker."""
SECRET_FIELDS: Final = frozenset(
    {
        "access_token",
        "api-key",
        "api_key",
        "assertion",
        "client_assertion",
        "client_secret",
        "code",
        "device_code",
        "id_token",
        "password",
        "refresh_token",
        "subscription-key",
        "x-api-key",
    }
)
"""Query, form and JSON names whose values are secrets (compared in lower case)."""
SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "ocp-apim-subscription-key"}
)
"""Headers whose values are credentials (``cookie`` is masked per cookie)."""
_SCHEMED: Final = frozenset({"authorization", "proxy-authorization"})
_TEXT_SECRET: Final = re.compile(
    r"(?i)(?P<key>\b(?:refresh_token|client_secret|client_assertion|device_code|access_token"
    r"|id_token|x-api-key|api[-_]key|subscription-key|password|assertion|code)\b)"
    r"(?P<sep>\"?\s*[:=]\s*\"?)"
    r"(?P<value>[^\s\"&,;}\]]+)"
)
_TEXT_CREDENTIAL: Final = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic)(?P<sep>\s+)(?P<value>[^\s\"&,;]+)"
)


def _fp(value: str) -> str:
    return fingerprint(value.strip())


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return headers with credentials reduced to fingerprints (an auth scheme is kept)."""
    masked: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name in _SCHEMED:
            scheme, sep, credential = value.strip().partition(" ")
            value = f"{scheme} {_fp(credential)}" if sep else _fp(value)
        elif name in SECRET_HEADERS:
            value = _fp(value)
        elif name == "cookie":
            value = "; ".join(_mask_cookie(part) for part in value.split(";") if part.strip())
        masked[key] = value
    return masked


def _mask_cookie(part: str) -> str:
    name, sep, value = part.strip().partition("=")
    return f"{name}={_fp(value)}" if sep else _fp(name)


def mask_form(form: Mapping[str, str]) -> dict[str, str]:
    """Return form fields with secrets reduced to fingerprints."""
    return {k: _fp(v) if k.lower() in SECRET_FIELDS else v for k, v in form.items()}


def mask_query(query: Mapping[str, str]) -> dict[str, str]:
    """Return query parameters with secrets reduced to fingerprints."""
    return mask_form(query)


def mask_json(value: object) -> object:
    """Return a parsed JSON value with every value under a secret-named key fingerprinted."""
    if isinstance(value, dict):
        return {
            k: _secret_value(v) if str(k).lower() in SECRET_FIELDS else mask_json(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_json(item) for item in value]
    return value


def _secret_value(value: object) -> str:
    return _fp(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))


def mask_text(text: str) -> str:
    """Return free text with secret assignments and ``Bearer``/``Basic`` credentials masked."""
    text = _TEXT_SECRET.sub(lambda m: m["key"] + m["sep"] + _fp(m["value"]), text)
    return _TEXT_CREDENTIAL.sub(lambda m: m["scheme"] + m["sep"] + _fp(m["value"]), text)


def _content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def mask_body(raw: bytes, headers: Mapping[str, str]) -> object:
    """Return a request body as the log keeps it: masked form fields, masked JSON, or masked text.

    Args:
        raw: The body bytes.
        headers: The request headers (lower-case names), for ``content-type``.
    """
    if len(raw) > BODY_CAP:
        head = raw[:BODY_CAP].decode("utf-8", "replace")
        return mask_text(head) + f"...[sandbox: body cut at {BODY_CAP} of {len(raw)} bytes]"
    text = raw.decode("utf-8", "replace")
    if _content_type(headers) == "application/x-www-form-urlencoded":
        return mask_form(dict(parse_qsl(text, keep_blank_values=True)))
    try:
        return mask_json(json.loads(raw))
    except (ValueError, RecursionError):  # not JSON, or too deep to parse or walk
        return mask_text(text)
