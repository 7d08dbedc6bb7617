"""Sandbox state: configuration, identities, issued tokens, device flows, scripts, request log.

One :class:`SandboxState` per sandbox, shared by the server thread (handlers) and the caller's
threads (the Python API); every read and write happens under :attr:`SandboxState.lock`.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from .faults import CHAT, ENDPOINTS, Outcome, parse_outcome
from .tokens import fingerprint

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
    "SandboxState",
    "SecretState",
    "UserRecord",
]

DEFAULT_TENANT_ID: Final = "5a9d0000-0000-4000-8000-00000000a7e5"
DEFAULT_CLIENT_ID: Final = "5a9d0000-0000-4000-8000-0000c11e7a11"
DEFAULT_USER: Final = "ada@contoso.com"
DEFAULT_SCOPE: Final = "https://cognitiveservices.azure.com/.default offline_access"
DEFAULT_API_VERSION: Final = "2024-10-21"
REQUEST_LOG_LIMIT: Final = 10_000
SECRET_FIELDS: Final = frozenset(
    {"refresh_token", "device_code", "client_secret", "client_assertion", "code", "password"}
)
SECRET_HEADERS: Final = frozenset({"authorization", "api-key", "ocp-apim-subscription-key"})


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
    """Lower-case headers; ``authorization`` and ``api-key`` as fingerprints."""
    body: object
    """Form fields (secrets as fingerprints), parsed JSON, or text."""
    outcome: str
    """The outcome applied (``"ok"`` or a fault in script-string form)."""
    source: str | None
    """``"script"``, ``"header"`` (``x-sandbox-scenario``) or ``None``."""
    status: int | None
    """Status answered (``None`` when no status line was sent)."""

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        data = dict(self.__dict__)
        data["query"], data["headers"] = dict(self.query), dict(self.headers)
        return data


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return headers with credentials reduced to fingerprints (scheme kept)."""
    masked: dict[str, str] = {}
    for key, value in headers.items():
        if key in SECRET_HEADERS:
            scheme, sep, credential = value.partition(" ")
            value = f"{scheme} {fingerprint(credential)}" if sep else fingerprint(value)
        masked[key] = value
    return masked


def mask_form(form: Mapping[str, str]) -> dict[str, str]:
    """Return form fields with secrets reduced to fingerprints."""
    return {k: fingerprint(v) if k in SECRET_FIELDS else v for k, v in form.items()}


def default_deployments() -> dict[str, Deployment]:
    """Return the deployments a new sandbox serves: ``gpt-4o`` and ``o4-mini`` (reasoning)."""
    return {
        "gpt-4o": Deployment("gpt-4o"),
        "o4-mini": Deployment("o4-mini", model="o4-mini-2025-04-16", reasoning=True),
    }


class SandboxState:
    """Everything mutable about a sandbox, guarded by one re-entrant lock.

    Args:
        config: Fixed settings.
        deployments: Chat deployments; ``None`` for :func:`default_deployments`.
        clock: Wall clock in seconds (token expiry, device flows, loop detection).
    """

    def __init__(
        self,
        config: SandboxConfig,
        *,
        deployments: Iterable[Deployment] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.base_url = ""
        self.auto_approve = False
        self._initial_deployments = (
            {d.name: d for d in deployments} if deployments is not None else default_deployments()
        )
        self.reset()

    def reset(self) -> None:
        """Forget tokens, users, device flows, scripts, the log, counters and switches."""
        with self.lock:
            self.users: dict[str, UserRecord] = {}
            self.refresh_tokens: dict[str, RefreshTokenRecord] = {}
            self.access_tokens: dict[str, AccessTokenRecord] = {}
            self.device_flows: dict[str, DeviceFlow] = {}
            self.scripts: dict[tuple[str, str | None], collections.deque[Outcome]] = {}
            self.log: collections.deque[RecordedRequest] = collections.deque(
                maxlen=REQUEST_LOG_LIMIT
            )
            self.seq = 0
            self.serial = 0
            self.post_counts: collections.Counter[str] = collections.Counter()
            self.rt_reuse_strict = False
            self.loop_detect: tuple[int, float] | None = None
            self.loop_history: dict[str, collections.deque[float]] = {}
            self.secret_state = SecretState.VALID
            self.deployments: dict[str, Deployment] = dict(self._initial_deployments)
            self.rate_window: dict[str, tuple[int, int, int]] = {}
            self.changed.notify_all()

    # identities -------------------------------------------------------------------------------

    def user(self, name: str) -> UserRecord:
        """Return the user record for a name, creating it (stable object id) on first use."""
        with self.lock:
            record = self.users.get(name)
            if record is None:
                oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"saga-sandbox-user:{name}"))
                record = self.users[name] = UserRecord(name, oid)
            return record

    def next_serial(self) -> int:
        """Return the next token serial."""
        with self.lock:
            self.serial += 1
            return self.serial

    # scripts ----------------------------------------------------------------------------------

    def add_script(
        self,
        endpoint: str,
        outcomes: Iterable[str | Mapping[str, object]],
        *,
        deployment: str | None = None,
        replace: bool = False,
    ) -> list[Outcome]:
        """Parse and queue outcomes (all or nothing).

        Raises:
            ValueError: an unknown endpoint, a bad entry, or a deployment for a non-chat endpoint.
        """
        if isinstance(outcomes, str | bytes | Mapping):
            raise ValueError("outcomes must be a list of script entries")
        if endpoint not in ENDPOINTS:
            raise ValueError(
                f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}"
            )
        if deployment is not None and endpoint != CHAT:
            raise ValueError("only the chat endpoint has per-deployment scripts")
        parsed = [parse_outcome(entry, endpoint) for entry in outcomes]
        with self.lock:
            queue = self.scripts.setdefault((endpoint, deployment), collections.deque())
            if replace:
                queue.clear()
            queue.extend(parsed)
        return parsed

    def pending(self, endpoint: str | None = None) -> dict[str, list[str]]:
        """Return queued outcomes by queue name (``chat``, ``chat/<deployment>``, ``token``...)."""
        with self.lock:
            result: dict[str, list[str]] = {}
            for (name, deployment), queue in sorted(
                self.scripts.items(), key=lambda item: (item[0][0], item[0][1] or "")
            ):
                if queue and (endpoint is None or name == endpoint):
                    key = name if deployment is None else f"{name}/{deployment}"
                    result[key] = [o.describe() for o in queue]
            return result

    def take_outcome(
        self, endpoint: str, deployment: str | None, scenario: str | None
    ) -> tuple[Outcome, str | None]:
        """Return the outcome for one attempt and its source.

        A ``x-sandbox-scenario`` header wins and leaves the queues alone; otherwise the deployment
        queue, then the endpoint queue, is consumed; an empty script means ``ok``.

        Raises:
            ValueError: the scenario header names no valid fault.
        """
        if scenario is not None:
            return parse_outcome(scenario, endpoint), "header"
        with self.lock:
            for key in ((endpoint, deployment), (endpoint, None)):
                queue = self.scripts.get(key)
                if queue:
                    return queue.popleft(), "script"
        return Outcome("ok"), None

    # request log ------------------------------------------------------------------------------

    def record(
        self,
        *,
        arrived: float,
        method: str,
        path: str,
        query: Mapping[str, str],
        endpoint: str,
        headers: Mapping[str, str],
        body: object,
        deployment: str | None = None,
    ) -> RecordedRequest:
        """Append a request to the log (secrets masked by the caller); count endpoint POSTs."""
        with self.lock:
            self.seq += 1
            entry = RecordedRequest(
                self.seq,
                arrived,
                method,
                path,
                dict(query),
                endpoint,
                deployment,
                mask_headers(headers),
                body,
                "ok",
                None,
                None,
            )
            self.log.append(entry)
            if method == "POST" and endpoint in ENDPOINTS:
                self.post_counts[endpoint] += 1
            return entry

    def finish(
        self, entry: RecordedRequest, *, outcome: Outcome, source: str | None, status: int | None
    ) -> None:
        """Store the outcome applied and the status answered on a logged request."""
        with self.lock:
            # Handlers run one at a time on the server thread, so the entry is the newest one
            # unless a reset() from another thread cleared the log in between.
            if self.log and self.log[-1].seq == entry.seq:
                self.log[-1] = replace(
                    entry, outcome=outcome.describe(), source=source, status=status
                )

    def requests(
        self, endpoint: str | None = None, *, deployment: str | None = None
    ) -> list[RecordedRequest]:
        """Return logged requests, oldest first, optionally filtered."""
        with self.lock:
            return [
                r
                for r in self.log
                if (endpoint is None or r.endpoint == endpoint)
                and (deployment is None or r.deployment == deployment)
            ]

    # device flows -----------------------------------------------------------------------------

    def device_info(self) -> list[DeviceCodeInfo]:
        """Return snapshots of every device flow, oldest first."""
        with self.lock:
            return [
                DeviceCodeInfo(
                    f.user_code,
                    str(f.state),
                    f.user,
                    f.client_id,
                    " ".join(f.scope),
                    f.issued_at,
                    f.expires_at,
                )
                for f in self.device_flows.values()
            ]

    def find_flow(self, user_code: str | None) -> DeviceFlow:
        """Return the flow with a user code, or the latest pending one for ``None``.

        Raises:
            LookupError: no such flow.
        """
        with self.lock:
            flows = list(self.device_flows.values())
            if user_code is None:
                for flow in reversed(flows):
                    if flow.state is DeviceState.PENDING:
                        return flow
                raise LookupError("no pending device-code login")
            wanted = user_code.strip().upper().replace("-", "")
            for flow in flows:
                if flow.user_code == wanted:
                    return flow
            raise LookupError(f"no device-code login with user code {user_code!r}")
