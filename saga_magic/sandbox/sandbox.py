"""The :class:`Sandbox`: a local Entra ID + Azure OpenAI chat emulator on a loopback port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

from . import device
from .admin import EntraAdmin
from .app import Router
from .catalogue import check_endpoint
from .records import (
    DEFAULT_API_VERSION,
    DEFAULT_CLIENT_ID,
    DEFAULT_TENANT_ID,
    DEFAULT_USER,
    Deployment,
    DeviceCodeInfo,
    RecordedRequest,
    SandboxConfig,
)
from .server import HttpServer, check_loopback
from .state import SandboxState
from .tokens import new_secret

__all__ = ["Sandbox"]


class Sandbox(EntraAdmin):
    """A local emulator of Entra ID (device-code and refresh-token grants) and a Copilot chat
    deployment (Azure OpenAI chat completions), with scriptable faults.

    The server runs in a daemon thread with its own event loop, so the sandbox works from plain
    code, from tests and from inside a running event loop alike. It binds loopback only.

    Args:
        host: Loopback host to bind (``127.0.0.1``, ``::1``, ``localhost``).
        port: Port to bind; ``0`` picks a free one.
        tenant_id: Directory (tenant) id served under ``/{tenant}/``.
        client_id: The one registered application.
        client_secret: ``None`` for a public client (a sent secret -> AADSTS700025); a string
            makes the app confidential (secret required on the token endpoint).
        api_key: Key accepted in the chat ``api-key`` header; ``None`` generates one; ``""``
            accepts no key (bearer tokens only).
        default_user: User for device approvals and :meth:`issue_tokens` without a user.
        deployments: Chat deployments; ``None`` serves ``gpt-4o`` and ``o4-mini`` (reasoning).
        default_deployment: Deployment in :attr:`chat_endpoint`.
        api_version: ``api-version`` in :attr:`chat_endpoint`.
        token_lifetime: Fixed ``expires_in`` (any value, small ones included); ``None`` draws
            3600-5400 s per token like Entra.
        refresh_in: Send ``refresh_in`` with this value; ``None`` omits it.
        opaque_tokens: Issue opaque (non-JWT) access tokens.
        clock_skew: Seconds added to ``iat``/``nbf``/``exp`` of issued JWTs (server clock ahead).
        auto_approve: Approve device logins on their first poll (demo mode).
        enforce_poll_interval: Answer ``slow_down`` to polls faster than ``interval`` (a scripted
            ``device_slow_down`` turns this on for its own login only).
        device_code_lifetime: Device-code ``expires_in``.
        device_poll_interval: Device-code ``interval``.
        stream_chunk_delay: Seconds between SSE chunks (0 for tests, ~0.03 for demos).
        clock: Wall clock for token expiry, device flows and loop detection.

    Raises:
        ValueError: a non-loopback host.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        api_key: str | None = None,
        default_user: str = DEFAULT_USER,
        deployments: Iterable[Deployment] | None = None,
        default_deployment: str = "gpt-4o",
        api_version: str = DEFAULT_API_VERSION,
        token_lifetime: int | None = None,
        refresh_in: int | None = None,
        opaque_tokens: bool = False,
        clock_skew: float = 0.0,
        auto_approve: bool = False,
        enforce_poll_interval: bool = False,
        device_code_lifetime: int = 900,
        device_poll_interval: int = 5,
        stream_chunk_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = SandboxConfig(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            api_key=api_key if api_key is not None else "sbx-" + new_secret("hex"),
            default_user=default_user,
            default_deployment=default_deployment,
            api_version=api_version,
            token_lifetime=token_lifetime,
            refresh_in=refresh_in,
            opaque_tokens=opaque_tokens,
            clock_skew=clock_skew,
            enforce_poll_interval=enforce_poll_interval,
            auto_approve=auto_approve,
            device_code_lifetime=device_code_lifetime,
            device_poll_interval=device_poll_interval,
            stream_chunk_delay=stream_chunk_delay,
        )
        self._state = SandboxState(config, deployments=deployments, clock=clock)
        self._host = host
        self._port = port
        self._server: HttpServer | None = None
        self._stopped = False
        self._router = Router(self)
        check_loopback(host)  # refuse a bad host now, not at start()

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a background thread; return once listening.

        Raises:
            RuntimeError: already running.
            OSError: the port cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("sandbox already running")
        server = HttpServer(self._router, host=self._host, port=self._port, clock=self._state.clock)
        server.start()
        self._server, self._stopped = server, False
        host = server.host if ":" not in server.host else f"[{server.host}]"
        self._state.base_url = f"http://{host}:{server.port}"
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent; the state is kept).

        The addresses (:attr:`base_url`, :meth:`env`, ...) raise until the next :meth:`start`.
        """
        server, self._server = self._server, None
        if server is not None:
            self._stopped = True
            server.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None and self._server.running

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (also the authority host).

        Raises:
            RuntimeError: not started, or stopped.
        """
        if self._server is None:
            raise RuntimeError("sandbox stopped" if self._stopped else "sandbox not started")
        return self._state.base_url

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def authority_host(self) -> str:
        """Value for ``AZURE_AUTHORITY_HOST``."""
        return self.base_url

    @property
    def tenant_id(self) -> str:
        """Value for ``AZURE_TENANT_ID``."""
        return self._state.config.tenant_id

    @property
    def client_id(self) -> str:
        """Value for ``AZURE_CLIENT_ID``."""
        return self._state.config.client_id

    @property
    def client_secret(self) -> str | None:
        """The configured client secret (``None`` for a public client)."""
        return self._state.config.client_secret

    @property
    def api_key(self) -> str:
        """The key accepted in the chat ``api-key`` header."""
        return self._state.config.api_key

    @property
    def default_user(self) -> str:
        """The user for approvals and tokens when none is named."""
        return self._state.config.default_user

    @property
    def token_endpoint(self) -> str:
        """``{base}/{tenant}/oauth2/v2.0/token``."""
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def devicecode_endpoint(self) -> str:
        """``{base}/{tenant}/oauth2/v2.0/devicecode``."""
        return f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/devicecode"

    @property
    def chat_endpoint(self) -> str:
        """Azure deployments URL of the default deployment, with ``api-version``."""
        return self.chat_url()

    def chat_url(self, deployment: str | None = None, *, shape: str = "deployments") -> str:
        """Return a chat completions URL.

        Args:
            deployment: Deployment for the ``deployments`` shape (default deployment if ``None``).
            shape: ``"deployments"``, ``"v1"`` (``/openai/v1/...``) or ``"openai"`` (``/v1/...``).

        Raises:
            ValueError: unknown shape.
        """
        config = self._state.config
        if shape == "deployments":
            name = deployment or config.default_deployment
            return (
                f"{self.base_url}/openai/deployments/{name}/chat/completions"
                f"?api-version={config.api_version}"
            )
        if shape == "v1":
            return f"{self.base_url}/openai/v1/chat/completions"
        if shape == "openai":
            return f"{self.base_url}/v1/chat/completions"
        raise ValueError(f"unknown chat URL shape {shape!r}")

    def env(self) -> dict[str, str]:
        """Return the environment that points the product at this sandbox."""
        return {
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "ARC_SAGA_COPILOT_ENDPOINT": self.chat_endpoint,
        }

    # scripts and the request log ---------------------------------------------------------------

    def script(
        self,
        endpoint: str,
        outcomes: Iterable[str | Mapping[str, object]],
        *,
        deployment: str | None = None,
        replace: bool = False,
    ) -> None:
        """Queue outcomes for an endpoint, consumed one per request in order.

        Args:
            endpoint: ``"chat"``, ``"token"`` or ``"devicecode"``.
            outcomes: Entries such as ``"429_both"``, ``"429:retry_after=1.5"``,
                ``"slow_headers:0.2"``, ``{"fault": "500_json", "delay_ms": 50}``, ``"ok"``.
            deployment: Chat only: a queue used before the endpoint-wide one for this deployment.
            replace: Drop what is still queued first.

        Raises:
            ValueError: an unknown endpoint or fault, or a bad parameter (nothing is queued).
        """
        self._state.add_script(endpoint, outcomes, deployment=deployment, replace=replace)

    def pending(self, endpoint: str | None = None) -> dict[str, list[str]]:
        """Return the still-queued outcomes by queue (``chat``, ``chat/<deployment>``, ...)."""
        return self._state.pending(endpoint)

    def requests(
        self, endpoint: str | None = None, *, deployment: str | None = None
    ) -> list[RecordedRequest]:
        """Return recorded requests (secrets as fingerprints), oldest first.

        Args:
            endpoint: ``chat``, ``token``, ``devicecode``, ``discovery`` or ``other``.
            deployment: Chat deployment filter.
        """
        return self._state.requests(endpoint, deployment=deployment)

    def post_count(self, endpoint: str) -> int:
        """Return how many POSTs reached an endpoint (``chat``, ``token``, ``devicecode``).

        Raises:
            ValueError: unknown endpoint.
        """
        check_endpoint(endpoint)
        with self._state.lock:
            return self._state.post_counts[endpoint]

    def reset(self) -> None:
        """Forget tokens, users, device logins, scripts, the log, counters, switches and
        deployment changes; ``auto_approve`` returns to its constructor value (addresses, ids
        and constructor options stay)."""
        self._state.reset()

    # device flow hooks ------------------------------------------------------------------------

    @property
    def auto_approve(self) -> bool:
        """Whether device logins are approved on their first poll."""
        return self._state.auto_approve

    @auto_approve.setter
    def auto_approve(self, enabled: bool) -> None:
        with self._state.lock:
            self._state.auto_approve = enabled

    def approve_device_code(self, user_code: str | None = None, *, user: str | None = None) -> str:
        """Approve a pending device login (latest if ``None``); return its user code.

        Raises:
            LookupError: no such or no pending login.
            ValueError: the login is not pending any more.
        """
        return device.approve(self._state, user_code, user=user)

    def decline_device_code(self, user_code: str | None = None) -> str:
        """Decline a pending device login (latest if ``None``); return its user code.

        Raises:
            LookupError: no such or no pending login.
            ValueError: the login is not pending any more.
        """
        return device.decline(self._state, user_code)

    def expire_device_code(self, user_code: str | None = None) -> str:
        """Expire a pending device login now (latest if ``None``); return its user code.

        Raises:
            LookupError: no such or no pending login.
            ValueError: the login is not pending any more.
        """
        return device.expire(self._state, user_code)

    def device_codes(self) -> list[DeviceCodeInfo]:
        """Return every device login so far, oldest first."""
        return self._state.device_info()

    def wait_for_user_code(self, within: float = 5.0) -> str:
        """Block until a device login is pending; return the latest pending user code.

        Raises:
            TimeoutError: none within ``within`` seconds.
        """
        return device.wait_for_user_code(self._state, within)

    async def wait_for_user_code_async(self, within: float = 5.0) -> str:
        """Await a pending device login without blocking the event loop.

        Raises:
            TimeoutError: none within ``within`` seconds.
        """
        return await device.wait_for_user_code_async(self._state, within)

    # deployments ------------------------------------------------------------------------------

    def set_deployment(self, deployment: Deployment) -> None:
        """Add or replace a chat deployment (e.g. ``Deployment("o3", reasoning=True)``)."""
        with self._state.lock:
            self._state.deployments[deployment.name] = deployment

    def deployment(self, name: str) -> Deployment:
        """Return a deployment by name.

        Raises:
            KeyError: unknown deployment.
        """
        with self._state.lock:
            return self._state.deployments[name]

    def deployments(self) -> list[Deployment]:
        """Return the served deployments, sorted by name."""
        with self._state.lock:
            return sorted(self._state.deployments.values(), key=lambda d: d.name)

    @property
    def state(self) -> SandboxState:
        """The shared state (for the HTTP handlers and the control plane)."""
        return self._state
