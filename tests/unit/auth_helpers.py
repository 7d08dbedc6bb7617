"""Doubles for the auth tests: a coordinating fake store, a scripted Entra token endpoint, JWTs."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.protocols import RefreshCooldown
from saga_magic.core.types import TokenInfo

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TOKEN_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
DEVICE_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/devicecode"
TRACE_ID = "0f5e6a2b-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
CORRELATION_ID = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"

_serial = itertools.count(1)


def secret(kind: str) -> str:
    """A unique opaque secret, long enough for the events registry (>= 16 characters)."""
    return f"{kind}-{next(_serial):04d}-9f3a7c1e5b2d8f4a6c0e"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: Mapping[str, Any] | None = None, **kw: Any) -> str:
    """An unsigned three-part JWT with the given claims."""
    payload = {"aud": "https://cognitiveservices.azure.com", "jti": next(_serial)}
    payload.update(claims or {})
    payload.update(kw)
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}.c2lnbmF0dXJl"


# -- responses ----------------------------------------------------------------------------------


def token_ok(
    access_token: str | None = None,
    refresh_token: str | None = None,
    *,
    expires_in: Any = 3600,
    omit_refresh: bool = False,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": "https://cognitiveservices.azure.com/.default",
        "expires_in": expires_in,
        "ext_expires_in": 7200,
        "access_token": access_token or secret("at"),
    }
    if not omit_refresh:
        body["refresh_token"] = refresh_token or secret("rt")
    body.update(extra)
    return httpx.Response(200, json=body, headers={"x-ms-request-id": TRACE_ID, **(headers or {})})


def oauth_error(
    status: int,
    error: str,
    codes: tuple[int, ...] = (),
    *,
    text: str = "Something went wrong.",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    """An Entra error answer in the exact shape of PROTOCOLS.md 1.4."""
    first = f"AADSTS{codes[0]}: {text}" if codes else text
    body: dict[str, Any] = {
        "error": error,
        "error_description": (
            f"{first}\r\nTrace ID: {TRACE_ID}\r\nCorrelation ID: {CORRELATION_ID}\r\n"
            "Timestamp: 2024-05-01 12:00:00Z"
        ),
        "error_codes": list(codes),
        "timestamp": "2024-05-01 12:00:00Z",
        "trace_id": TRACE_ID,
        "correlation_id": CORRELATION_ID,
    }
    if codes:
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={codes[0]}"
    body.update(extra)
    return httpx.Response(
        status, json=body, headers={"x-ms-request-id": TRACE_ID, **(headers or {})}
    )


IIS_HTML = (
    "<!DOCTYPE html><html><head><title>500 - Internal server error.</title></head>"
    "<body><h2>500 - Internal server error.</h2></body></html>"
)


def html(status: int, text: str = IIS_HTML) -> httpx.Response:
    return httpx.Response(status, text=text, headers={"content-type": "text/html"})


def device_ok(
    device_code: str | None = None, *, user_code: str = "ABCD-EFGH", **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "device_code": device_code or secret("dc"),
        "user_code": user_code,
        "verification_uri": "https://microsoft.com/devicelogin",
        "expires_in": 900,
        "interval": 5,
        "message": f"To sign in, open https://microsoft.com/devicelogin and enter {user_code}.",
    }
    body.update(extra)
    return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Entra:
    """A scripted token + devicecode endpoint behind ``httpx.MockTransport``."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[httpx.Request] = []
        self.forms: list[dict[str, str]] = []

    def reply(self, *replies: Reply) -> Entra:
        self.script.extend(replies)
        return self

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.forms.append(dict(urllib.parse.parse_qsl(request.content.decode())))
        if not self.script:
            raise AssertionError(f"unexpected request #{len(self.requests)} to {request.url}")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        if callable(item) and not isinstance(item, httpx.Response):
            return item(request)
        return item

    @property
    def posts(self) -> int:
        return len(self.requests)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


# -- stores -------------------------------------------------------------------------------------


class PlainStore:
    """Only IEncryptedStore: get_token / save_token (no coordination, no delete, no list)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.reads = 0
        self.saves: list[tuple[str, dict[str, Any]]] = []
        self.fail_get: Exception | None = None
        self.fail_save: Exception | None = None

    async def get_token(self, user_id: str) -> dict[str, Any] | None:
        self.reads += 1
        await asyncio.sleep(0)
        if self.fail_get is not None:
            raise self.fail_get
        row = self.rows.get(user_id)
        return dict(row) if row is not None else None

    async def save_token(self, user_id: str, token: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        if self.fail_save is not None:
            raise self.fail_save
        self.rows[user_id] = dict(token)
        self.saves.append((user_id, dict(token)))


@dataclass
class Lease:
    owner: str
    expires_at: float


class FakeStore(PlainStore):
    """IEncryptedStore + IRefreshCoordinator in memory, modelling versions, leases, cool-downs."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, int] = {}
        self._seq = 0
        self.leases: dict[str, Lease] = {}
        self.lease_log: list[tuple[str, str, float]] = []
        self.cooldowns: dict[str, RefreshCooldown] = {}
        self.relogin: dict[str, bool] = {}
        self.fail_coordination: Exception | None = None
        self.on_acquire: Callable[[str], None] | None = None
        self.after_acquire: Callable[[], Awaitable[None]] | None = None
        self.holder_checks = 0

    def put(self, user_id: str, **token: Any) -> None:
        """Write a row directly, as another process would (bumps the version)."""
        self.rows[user_id] = dict(token)
        self._bump(user_id)

    def _bump(self, user_id: str) -> None:
        self._seq += 1
        self.versions[user_id] = self._seq
        self.relogin[user_id] = False
        self.cooldowns.pop(user_id, None)

    async def save_token(self, user_id: str, token: Mapping[str, Any]) -> None:
        await super().save_token(user_id, token)
        self._bump(user_id)

    async def delete_token(self, user_id: str) -> bool:
        await asyncio.sleep(0)
        self.versions.pop(user_id, None)
        return self.rows.pop(user_id, None) is not None

    async def list_tokens(self) -> list[TokenInfo]:
        return [
            TokenInfo(
                user_id=user,
                expires_at=row.get("expires_at"),
                created_at=0.0,
                updated_at=0.0,
                relogin_required=self.relogin.get(user, False),
            )
            for user, row in sorted(self.rows.items())
        ]

    async def try_acquire_lease(self, user_id: str, *, owner: str, ttl: float, now: float) -> bool:
        await asyncio.sleep(0)
        self.lease_log.append(("acquire", owner, ttl))
        if self.fail_coordination is not None:
            raise self.fail_coordination
        if self.on_acquire is not None:
            self.on_acquire(owner)
        held = self.leases.get(user_id)
        if held is not None and held.owner != owner and held.expires_at > now:
            return False
        self.leases[user_id] = Lease(owner, now + ttl)
        if self.after_acquire is not None:  # e.g. the commit is slow and the caller cancelled
            await self.after_acquire()
        return True

    async def lease_holder(self, user_id: str, *, now: float) -> str | None:
        await asyncio.sleep(0)
        self.holder_checks += 1
        if self.fail_coordination is not None:
            raise self.fail_coordination
        held = self.leases.get(user_id)
        return held.owner if held is not None and held.expires_at > now else None

    async def release_lease(self, user_id: str, *, owner: str) -> None:
        self.lease_log.append(("release", owner, 0.0))
        if self.fail_coordination is not None:
            raise self.fail_coordination
        held = self.leases.get(user_id)
        if held is not None and held.owner == owner:
            del self.leases[user_id]

    async def token_version(self, user_id: str) -> int | None:
        return self.versions.get(user_id) if user_id in self.rows else None

    async def get_cooldown(self, user_id: str, *, now: float) -> RefreshCooldown | None:
        cooldown = self.cooldowns.get(user_id)
        return cooldown if cooldown is not None and cooldown.until > now else None

    async def set_cooldown(self, user_id: str, cooldown: RefreshCooldown | None) -> None:
        if self.fail_coordination is not None:
            raise self.fail_coordination
        if cooldown is None:
            self.cooldowns.pop(user_id, None)
        elif user_id in self.rows:
            self.cooldowns[user_id] = cooldown

    async def set_relogin_required(self, user_id: str, required: bool) -> None:
        if self.fail_coordination is not None:
            raise self.fail_coordination
        if user_id in self.rows:
            self.relogin[user_id] = required


# -- the harness --------------------------------------------------------------------------------


@dataclass
class Harness:
    """A manager wired to a fake store, a scripted Entra and a fake clock."""

    manager: EntraIDAuthManager
    store: Any
    entra: Entra
    clock: Any
    client: httpx.AsyncClient
    extra: dict[str, Any] = field(default_factory=dict)

    def seed(
        self,
        user: str = "alice",
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        expires_in: float | None = 3600.0,
        **extra: Any,
    ) -> dict[str, Any]:
        """Store a token set for ``user`` expiring ``expires_in`` s from now."""
        row: dict[str, Any] = {
            "access_token": access_token or secret("at"),
            "refresh_token": refresh_token or secret("rt"),
            "token_type": "Bearer",
            "scope": "https://cognitiveservices.azure.com/.default",
        }
        if expires_in is not None:
            row["expires_at"] = self.clock() + expires_in
        row.update(extra)
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(self.store, FakeStore):
            self.store.put(user, **row)
        else:
            self.store.rows[user] = row
        return row


def build(
    store: Any, clock: Any, entra: Entra | None = None, **options: Any
) -> tuple[EntraIDAuthManager, Entra, httpx.AsyncClient]:
    entra = entra or Entra()
    client = entra.client()
    options.setdefault("jitter", lambda wait: 0.0)
    manager = EntraIDAuthManager(
        store,
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        http_client=client,
        clock=clock,
        sleep=clock.sleep,
        **options,
    )
    return manager, entra, client


# -- exception chains ---------------------------------------------------------------------------


def exception_chain(error: BaseException) -> list[BaseException]:
    """Every exception reachable from ``error`` through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        todo.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return seen


def assert_clean_chain(error: BaseException, *secrets: str) -> None:
    """No httpx exception (it holds the request, body and headers) and no secret in the chain."""
    for link in exception_chain(error):
        assert not isinstance(link, httpx.HTTPError), f"{type(link).__name__} reachable"
        assert not isinstance(link, httpx.Request | httpx.Response)
        texts = [str(link), repr(link), repr(link.args), repr(vars(link))]
        for value in secrets:
            for text in texts:
                assert value not in text, f"secret in {type(link).__name__}: {text}"
