"""EntraIDAuthManager: a valid bearer token per user, from memory when possible.

The hot path (:meth:`EntraIDAuthManager.get_valid_token` on a cache hit) is one dict lookup and
one float compare against a refresh time computed when the token was cached: no store read, no
decrypt, no JWT parse, no event (hits are counted in ``cache_hits``). Everything else (single
flight, the cross-process lease, cool-downs, retries, persistence) lives in :mod:`.refresh`;
the wire format in :mod:`.entra`; the device-code poll loop in :mod:`.device`.

Decisions where the spec leaves room:

* Expiry is the earlier of the stored ``expires_at`` and a parseable JWT ``exp``; neither means
  expired. The refresh time is that minus ``buffer_seconds``, or the server's ``refresh_in``
  time when earlier. A 200 answer without ``expires_in`` counts as 3600 s (still capped by the
  JWT ``exp``).
* Opportunistic refresh (inside the buffer, not expired) never hurts the caller: whatever the
  failure, the still-valid token is returned until it expires (see :mod:`.refresh`).
* Constructor: empty or malformed tenant / client id, an empty scope list and an insecure
  authority host raise :class:`ConfigurationError` (they come from settings); out-of-range
  numbers raise :class:`ValueError` (they come from code).
* Device codes without ``expires_in`` live 900 s (Entra's documented default), ``interval``
  defaults to 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from .config import DEFAULT_AUTHORITY_HOST, DEFAULT_SCOPES, Settings, require_secure_url
from .device import DeviceCodeLogin, DevicePoll, poll_device_login
from .entra import EntraClient
from .errors import ArcSagaException, ConfigurationError, TokenStorageError
from .events import new_op_id
from .jwt import finite_float
from .protocols import IEncryptedStore
from .refresh import TokenRefresher, emit, error_fields, grant_state, storage_call
from .retry import Clock, RetryEvent, RetryPolicy, Sleep
from .types import TokenInfo

if TYPE_CHECKING:
    from .store import SQLiteEncryptedTokenStore

__all__ = ["DeviceCodeLogin", "DevicePoll", "EntraIDAuthManager"]

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*")


def _check(name: str, value: float, *, positive: bool) -> None:
    number = finite_float(value)
    if number is None or not (number > 0 if positive else number >= 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}")


class EntraIDAuthManager:
    """Gives out valid Entra ID access tokens per user; refreshes and logs in.

    Args:
        token_store: Encrypted store of one token set per user; when it also implements
            :class:`~saga_magic.core.protocols.IRefreshCoordinator`, refreshes are
            single-flighted across processes.
        tenant_id: Tenant GUID or domain (``AZURE_TENANT_ID``).
        client_id: App registration's client id (``AZURE_CLIENT_ID``).
        client_secret: For confidential clients only (``AZURE_CLIENT_SECRET``).
        scopes: Scopes to request (an iterable, or a space-separated string); by default
            ``https://cognitiveservices.azure.com/.default offline_access``.
        authority_host: Entra host; ``https://login.microsoftonline.com`` by default. Plain
            ``http://`` only for loopback hosts.
        http_client: Client for the token endpoint (not closed by :meth:`close`); one is
            created on first use otherwise.
        max_retries: Retries after the first attempt (5 -> 6 attempts, waits 1+2+4+8+16 s).
        backoff_base: Factor of that schedule.
        buffer_seconds: Refresh this long before expiry.
        refresh_deadline: Seconds one refresh (attempts, waits, lease waits) may take.
        timeout: Per-attempt HTTP timeout: seconds (each phase and the whole attempt), or an
            ``httpx.Timeout`` (per phase); always capped by the time left before the deadline.
        clock: Unix time (injected in tests).
        sleep: Async sleep (injected in tests).
        jitter: Extra positive wait for a given wait; small random jitter by default.
        lease_ttl: Seconds a refresh lease outlives a holder that died (plus one attempt's
            timeout; the holder renews it while it waits between attempts).
        lease_poll_interval: Seconds between checks while another process refreshes.

    Raises:
        ConfigurationError: tenant or client id empty or malformed, no scopes, or an
            insecure ``authority_host``.
        ValueError: a numeric option out of range.
    """

    def __init__(
        self,
        token_store: IEncryptedStore,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        scopes: Iterable[str] | str | None = None,
        authority_host: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        buffer_seconds: float = 300,
        refresh_deadline: float = 120.0,
        timeout: float | httpx.Timeout = 30.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[float], float] | None = None,
        lease_ttl: float = 30.0,
        lease_poll_interval: float = 0.05,
    ) -> None:
        if not tenant_id or not _TENANT.fullmatch(tenant_id):
            raise ConfigurationError(
                "AZURE_TENANT_ID is empty or not a tenant id or domain",
                hint="set AZURE_TENANT_ID to your tenant's GUID or domain",
            )
        if not client_id or not client_id.strip():
            raise ConfigurationError("AZURE_CLIENT_ID is empty", hint="set AZURE_CLIENT_ID")
        host = (authority_host or DEFAULT_AUTHORITY_HOST).rstrip("/")
        require_secure_url(host, setting="AZURE_AUTHORITY_HOST")
        if scopes is None:
            scopes = DEFAULT_SCOPES
        scope_list = tuple(scopes.split() if isinstance(scopes, str) else scopes)
        if not scope_list:
            raise ConfigurationError("no scopes to request", hint="set ARC_SAGA_SCOPES")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an integer >= 0")
        _check("backoff_base", backoff_base, positive=False)
        _check("buffer_seconds", buffer_seconds, positive=False)
        _check("refresh_deadline", refresh_deadline, positive=True)
        _check("lease_ttl", lease_ttl, positive=True)
        _check("lease_poll_interval", lease_poll_interval, positive=True)
        attempt_bound = refresh_deadline
        if not isinstance(timeout, httpx.Timeout):
            _check("timeout", timeout, positive=True)
            attempt_bound = min(timeout, refresh_deadline)

        options: dict[str, Any] = {"backoff_base": backoff_base}
        if jitter is not None:
            options["jitter"] = jitter
        self._policy = RetryPolicy(max_retries=max_retries, **options)
        self._entra = EntraClient(
            authority_host=host,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret or None,
            scopes=scope_list,
            http_client=http_client,
            timeout=timeout,
            clock=clock,
        )
        self._refresher = TokenRefresher(
            token_store,
            self._entra,
            policy=self._policy,
            buffer=float(buffer_seconds),
            deadline=float(refresh_deadline),
            lease_ttl=float(lease_ttl) + float(attempt_bound),
            lease_poll_interval=float(lease_poll_interval),
            clock=clock,
            sleep=sleep,
        )
        self._owned_store: SQLiteEncryptedTokenStore | None = None
        self._clock = clock
        self._sleep = sleep
        self._cache = self._refresher.cache
        self.cache_hits = 0
        """Calls answered from memory (counted, not logged)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        store: IEncryptedStore | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> EntraIDAuthManager:
        """Build a manager from :class:`Settings` (the environment by default).

        Args:
            settings: Settings to use; ``Settings.from_env()`` when ``None``.
            store: Token store; by default a ``SQLiteEncryptedTokenStore`` at
                ``settings.token_store_path``, closed by :meth:`close`.
            http_client: Client for the token endpoint (not closed by :meth:`close`).

        Returns:
            The manager.

        Raises:
            ConfigurationError: ``AZURE_TENANT_ID`` or ``AZURE_CLIENT_ID`` missing, or a
                setting malformed.
            TokenStorageError: the default store cannot be opened.
        """
        settings = settings if settings is not None else Settings.from_env()
        settings.require("tenant_id", "client_id")
        created: SQLiteEncryptedTokenStore | None = None
        if store is None:
            from .store import SQLiteEncryptedTokenStore

            # Key and key file come from the settings, so errors name their real source.
            store = created = SQLiteEncryptedTokenStore(
                settings.token_store_path, settings=settings
            )
        try:
            manager = cls(
                store,
                tenant_id=settings.tenant_id or "",
                client_id=settings.client_id or "",
                client_secret=settings.client_secret,
                scopes=settings.scopes,
                authority_host=settings.authority_host,
                http_client=http_client,
            )
        except Exception:
            if created is not None:
                created.close()  # not in a coroutine here: nothing to hand off
            raise
        manager._owned_store = created
        return manager

    # -- tokens -----------------------------------------------------------------------------

    async def get_valid_token(self, user_id: str, *, op_id: str | None = None) -> str:
        """Return a non-expired access token for ``user_id``, refreshing when needed.

        Args:
            user_id: Whose token.
            op_id: The caller's operation id, carried by the refresh events this call starts
                (a new one when ``None``).

        Returns:
            The bearer token.

        Raises:
            AuthenticationError: no token stored, or Entra wants a new sign-in.
            ConfigurationError: the app registration or a setting is wrong.
            TokenPersistenceError: refreshed, but the new token could not be saved (or one
                could not be saved moments ago: ``code="cooldown"``).
            TokenStorageError: the store cannot be read.
            TransientError: Entra could not be reached within the budget
                (:class:`~saga_magic.core.errors.RateLimitError` when throttled).
            ArcSagaException: the manager is closed (``code="closed"``).
        """
        entry = self._cache.get(user_id)
        if entry is not None and self._clock() < entry[0]:
            self.cache_hits += 1
            return entry[1]
        return (await self._refresher.join(user_id, force=False, rejected=None, op_id=op_id))[0]

    async def force_refresh(
        self, user_id: str, *, rejected_token: str | None = None, op_id: str | None = None
    ) -> str:
        """Replace a token the API rejected (single-flighted like :meth:`get_valid_token`).

        Args:
            user_id: Whose token.
            rejected_token: The token the API refused; a different unexpired token already in
                the store (saved by another process) is returned without a POST. ``None``:
                refresh regardless of expiry.
            op_id: The caller's operation id, carried by the refresh events this call starts.

        Returns:
            A new bearer token.

        Raises:
            AuthenticationError: no token stored, or Entra wants a new sign-in.
            ConfigurationError: the app registration or a setting is wrong.
            TokenPersistenceError: refreshed, but the new token could not be saved.
            TokenStorageError: the store cannot be read.
            TransientError: Entra could not be reached within the budget.
            ArcSagaException: the manager is closed (``code="closed"``).
        """
        entry = self._cache.get(user_id)
        if entry is not None and rejected_token in (None, entry[1]):
            del self._cache[user_id]
        join = self._refresher.join
        token, forced = await join(user_id, force=True, rejected=rejected_token, op_id=op_id)
        if not forced and (rejected_token is None or token == rejected_token):
            # We joined a plain refresh, which may have re-used the stored token: force one.
            token, _ = await join(user_id, force=True, rejected=rejected_token, op_id=op_id)
        return token

    # -- device-code login -------------------------------------------------------------------

    async def start_device_login(self, user_id: str) -> DeviceCodeLogin:
        """Ask Entra for a device code for ``user_id`` (retried like a refresh).

        Args:
            user_id: Whose token the login will save.

        Returns:
            What to show the user; pass it to :meth:`complete_device_login`.

        Raises:
            ConfigurationError: the app registration or a setting is wrong.
            TransientError: Entra could not be reached within the budget.
        """
        op_id = new_op_id()
        deadline_at = self._clock() + self._refresher.deadline

        def on_retry(event: RetryEvent) -> None:
            emit(
                logging.WARNING,
                "device_code_retry",
                user_id,
                op_id,
                attempt=event.attempt,
                max_attempts=event.max_attempts,
                wait_s=round(event.wait_s, 3),
                next_attempt_at=event.next_attempt_at,
                reason=event.reason,
                **error_fields(event.error),
            )

        try:
            grant = await self._policy.run(
                lambda _: self._entra.request_device_code(budget=deadline_at - self._clock()),
                deadline_at=deadline_at,
                clock=self._clock,
                sleep=self._sleep,
                on_retry=on_retry,
            )
        except ArcSagaException as error:
            emit(logging.WARNING, "login_failed", user_id, op_id, **error_fields(error))
            raise
        emit(
            logging.INFO,
            "device_code_issued",
            user_id,
            op_id,
            user_code=grant.user_code,
            verification_uri=grant.verification_uri,
            expires_at=grant.expires_at,
            interval=grant.interval,
        )
        return DeviceCodeLogin(
            user_id=user_id,
            user_code=grant.user_code,
            verification_uri=grant.verification_uri,
            message=grant.message,
            expires_at=grant.expires_at,
            interval=grant.interval,
            op_id=op_id,
            _device_code=grant.device_code,
        )

    async def complete_device_login(
        self, login: DeviceCodeLogin, *, on_poll: Callable[[DevicePoll], None] | None = None
    ) -> TokenInfo:
        """Wait for the user to approve ``login``, then save and cache the token.

        Cancelling the awaiting task stops polling at once; nothing is saved. The save clears
        the store's re-login flag and cool-down.

        Args:
            login: From :meth:`start_device_login`.
            on_poll: Called after each poll that did not finish the login.

        Returns:
            Metadata of the saved token (``created_at`` is the store's: an existing user's
            first sign-in, not now).

        Raises:
            AuthenticationError: declined, or the code expired (locally or by Entra).
            ConfigurationError: the app registration or a setting is wrong.
            TokenPersistenceError: approved, but the token could not be saved.
            Exception: whatever ``on_poll`` raised (the login ends, ``login_failed`` is emitted).
        """
        user_id, op_id = login.user_id, login.op_id
        try:
            grant = await poll_device_login(
                self._entra, login, clock=self._clock, sleep=self._sleep, on_poll=on_poll
            )
            await self._refresher.persist(user_id, op_id, grant)
        except asyncio.CancelledError:
            emit(logging.INFO, "login_failed", user_id, op_id, code="cancelled")
            raise
        except ArcSagaException as error:
            emit(logging.WARNING, "login_failed", user_id, op_id, **error_fields(error))
            raise
        except Exception as error:  # on_poll raised: the login ends, and says so
            emit(logging.WARNING, "login_failed", user_id, op_id, error=type(error).__name__)
            raise
        state = grant_state(grant, buffer=self._refresher.buffer)
        self._refresher.remember(user_id, state)
        emit(logging.INFO, "login_complete", user_id, op_id, expires_at=state.expires_at)
        now = self._clock()
        stored = await self._stored_info(user_id)
        return TokenInfo(
            user_id=user_id,
            expires_at=state.expires_at,
            created_at=now if stored is None else stored.created_at,
            updated_at=now if stored is None else stored.updated_at,
            scopes=tuple(grant.scope.split()),
        )

    async def _stored_info(self, user_id: str) -> TokenInfo | None:
        """The store's metadata row of ``user_id`` (best effort: the login itself succeeded)."""
        with contextlib.suppress(ArcSagaException):
            for info in await self.token_infos():
                if info.user_id == user_id:
                    return info
        return None

    # -- housekeeping ----------------------------------------------------------------------

    async def logout(self, user_id: str) -> bool:
        """Delete ``user_id``'s stored token and forget it in memory.

        A refresh in flight for the user is cancelled first (its callers get
        :class:`~saga_magic.core.errors.AuthenticationError` with ``code="signed_out"``), so it
        cannot save or cache a token again after the logout.

        Args:
            user_id: Whose token.

        Returns:
            True when a stored token was deleted.

        Raises:
            TokenStorageError: the store cannot delete (or has no ``delete_token``).
        """
        op_id = new_op_id()
        await self._refresher.sign_out(user_id)
        delete = getattr(self._refresher.store, "delete_token", None)
        if delete is None:
            raise TokenStorageError("this token store cannot delete tokens")
        deleted = bool(await storage_call(delete(user_id), "delete"))
        self._refresher.forget(user_id)
        emit(logging.INFO, "logout", user_id, op_id, deleted=deleted)
        return deleted

    async def token_infos(self) -> list[TokenInfo]:
        """Return the non-secret metadata of every stored token.

        Returns:
            One :class:`TokenInfo` per user; empty when the store cannot list.

        Raises:
            TokenStorageError: the store cannot be read.
        """
        list_tokens = getattr(self._refresher.store, "list_tokens", None)
        if list_tokens is None:
            return []
        return list(await storage_call(list_tokens(), "list"))

    async def close(self) -> None:
        """Cancel refreshes in flight; close the HTTP client and the store if created here.

        Later token calls that need Entra raise ``ArcSagaException(code="closed")``.
        """
        await self._refresher.cancel_all()
        await self._entra.close()
        store, self._owned_store = self._owned_store, None
        if store is not None:
            await store.aclose()  # in a thread: closing may wait for a busy database
