"""The sandbox's records: configuration, deployments, identities, tokens, device flows, log entries.

Plain data; :class:`~saga_magic.sandbox.state.SandboxState` holds them under its lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SCOPE",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USER",
    "AccessTokenRecord",
    "Deployment",
    "DeviceCodeInfo",
    "DeviceFlow",
    "DeviceState",
    "RecordedRequest",
    "RefreshTokenRecord",
    "SandboxConfig",
    "SecretState",
    "UserRecord",
    "default_deployments",
]

DEFAULT_TENANT_ID: Final = "5a9d0000-0000-4000-8000-00000000a7e5"
DEFAULT_CLIENT_ID: Final = "5a9d0000-0000-4000-8000-0000c11e7a11"
DEFAULT_USER: Final = "ada@contoso.com"
DEFAULT_SCOPE: Final = "https://cognitiveservices.azure.com/.default offline_access"
DEFAULT_API_VERSION: Final = "2024-10-21"


@dataclass(frozen=True)
class Deployment:
    """A chat deployment the sandbox serves."""

    name: str
    """Deployment name (path segment, or body ``model`` on v1 routes)."""
    model: str = "gpt-4o-2024-11-20"
    """``model`` reported in answers."""
    reasoning: bool = False
    """Reasoning model: rejects ``max_tokens`` and ``temperature`` != 1; spends reasoning tokens."""
    stream_options_rejected: bool = False
    """Answer 400 when ``stream_options`` is sent (old api-version behaviour)."""
    permission_denied: int | None = None
    """``401`` or ``403``: valid tokens lack the role (``PermissionDenied``)."""
    context_window: int = 128_000
    """Prompt tokens above this -> 400 ``context_length_exceeded``."""
    reasoning_tokens: int = 16
    """Reasoning tokens a reasoning deployment spends per answer."""

    def __post_init__(self) -> None:
        if self.permission_denied not in (None, 401, 403):
            raise ValueError(
                f"permission_denied must be 401, 403 or None, not {self.permission_denied!r}"
            )


@dataclass(frozen=True)
class SandboxConfig:
    """Settings fixed for the lifetime of a sandbox (see :class:`~.Sandbox` for meanings)."""

    tenant_id: str = DEFAULT_TENANT_ID
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = None
    api_key: str = ""
    default_user: str = DEFAULT_USER
    default_deployment: str = "gpt-4o"
    api_version: str = DEFAULT_API_VERSION
    token_lifetime: int | None = None
    refresh_in: int | None = None
    opaque_tokens: bool = False
    clock_skew: float = 0.0
    enforce_poll_interval: bool = False
    auto_approve: bool = False
    device_code_lifetime: int = 900
    device_poll_interval: int = 5
    stream_chunk_delay: float = 0.0
    tenant_domain: str = "contoso.onmicrosoft.com"


@dataclass
class UserRecord:
    """A directory user."""

    name: str
    oid: str
    valid_from_serial: int = 0
    """Refresh tokens with a lower serial are revoked (AADSTS50173)."""
    revoked_at: float | None = None
    """When the user's sessions were revoked (for the error text)."""
    mfa_required_serial: int | None = None
    """Refresh tokens whose MFA serial is lower need MFA again (AADSTS50076)."""
    strict_rotation: bool = False
    """A superseded refresh token of this user is refused (a scripted ``rt_reuse_strict``)."""


@dataclass
class RefreshTokenRecord:
    """An issued refresh token."""

    user: str
    client_id: str
    scope: tuple[str, ...]
    issued_at: float
    serial: int
    """Issue order (revocation compares serials, not clock readings)."""
    mfa_serial: int
    """Serial of the interactive login (with MFA) this token descends from."""
    superseded: bool = False
    inactive: bool = False


@dataclass
class AccessTokenRecord:
    """An issued access token."""

    user: str
    audience: str
    expires_at: float
    uses_left: int | None = None
    revoked: bool = False


class SecretState(StrEnum):
    """States of the configured client secret."""

    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


class DeviceState(StrEnum):
    """States of a device-code login."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    EXPIRED = "expired"
    REDEEMED = "redeemed"


@dataclass
class DeviceFlow:
    """A device-code login in progress."""

    device_code: str
    user_code: str
    client_id: str
    scope: tuple[str, ...]
    issued_at: float
    expires_at: float
    interval: int
    state: DeviceState = DeviceState.PENDING
    user: str | None = None
    last_poll: float | None = None
    enforce_interval: bool = False
    """Polls sooner than ``interval`` answer ``slow_down`` (set by a scripted
    ``device_slow_down``)."""


@dataclass(frozen=True)
class DeviceCodeInfo:
    """A public snapshot of a device-code login."""

    user_code: str
    """The code shown to the user."""
    state: str
    """``pending``, ``approved``, ``declined``, ``expired`` or ``redeemed``."""
    user: str | None
    """The approving user, once approved."""
    client_id: str
    """The requesting application."""
    scope: str
    """Requested scopes, space-separated."""
    issued_at: float
    """Issue time (sandbox clock)."""
    expires_at: float
    """Expiry time (sandbox clock)."""

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the sandbox saw it, with secrets reduced to fingerprints."""

    seq: int
    """Arrival order, from 1."""
    time: float
    """Wall-clock arrival time (seconds since the epoch)."""
    method: str
    """HTTP method."""
    path: str
    """Path without the query."""
    query: Mapping[str, str]
    """Query parameters."""
    endpoint: str
    """``chat``, ``token``, ``devicecode``, ``discovery`` or ``other``."""
    deployment: str | None
    """Chat deployment, when known."""
    headers: Mapping[str, str]
    """Lower-case headers; credentials (``authorization``, ``api-key``, ``cookie``...) as
    fingerprints (see :mod:`~saga_magic.sandbox.masking`)."""
    body: object
    """Form fields, parsed JSON or text, secrets as fingerprints; a body over 64 KB is text cut
    at 64 KB with a marker."""
    outcome: str
    """The outcome applied (``"ok"`` or a fault in script-string form)."""
    source: str | None
    """``"script"``, ``"header"`` (``x-sandbox-scenario``) or ``None``."""
    status: int | None
    """Status answered (``None`` when no status line reached the client)."""
    delivery: str = "complete"
    """How the answer went out: ``complete``; ``reset`` (TCP reset before any byte);
    ``reset_mid_body`` (status line and part of the body, then a reset); ``stalled`` (part of the
    answer, then the connection held open); ``client_gone`` (the client left before the answer
    was complete, e.g. a read timeout during ``slow_headers``; noted once the server sees it)."""
    error: str | None = None
    """The sandbox's own failure (an exception in a handler, answered 500), else ``None``."""

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        data = dict(self.__dict__)
        data["query"], data["headers"] = dict(self.query), dict(self.headers)
        return data


def default_deployments() -> dict[str, Deployment]:
    """Return the deployments a new sandbox serves: ``gpt-4o`` and ``o4-mini`` (reasoning)."""
    return {
        "gpt-4o": Deployment("gpt-4o"),
        "o4-mini": Deployment("o4-mini", model="o4-mini-2025-04-16", reasoning=True),
    }
