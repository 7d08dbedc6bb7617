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
from dataclasses import replace
from typing import Final

from .catalogue import CHAT, ENDPOINTS, check_endpoint
from .faults import Outcome, parse_outcome
from .masking import mask_headers, mask_query
from .records import (
    AccessTokenRecord,
    Deployment,
    DeviceCodeInfo,
    DeviceFlow,
    DeviceState,
    RecordedRequest,
    RefreshTokenRecord,
    SandboxConfig,
    SecretState,
    UserRecord,
    default_deployments,
)

__all__ = ["SandboxState"]


REQUEST_LOG_LIMIT: Final = 10_000
LOOP_KEYS: Final = 256
"""Distinct token requests whose arrival times loop detection remembers (least recent dropped)."""
LOOP_HISTORY: Final = 1000
"""Arrival times remembered per distinct token request."""


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
        self.auto_approve = config.auto_approve
        self._open_seq: int | None = None
        self._initial_deployments = (
            {d.name: d for d in deployments} if deployments is not None else default_deployments()
        )
        self.reset()

    def reset(self) -> None:
        """Forget tokens, users, device flows, scripts, the log, counters and switches.

        ``auto_approve`` returns to its configured value.
        """
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
            self.loop_history: collections.OrderedDict[str, collections.deque[float]] = (
                collections.OrderedDict()
            )
            self.auto_approve = self.config.auto_approve
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
        check_endpoint(endpoint)
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
        self,
        endpoint: str,
        deployment: str | None,
        scenario: str | None,
        *,
        grant: str | None = None,
    ) -> tuple[Outcome, str | None]:
        """Return the outcome for one attempt and its source.

        A ``x-sandbox-scenario`` header wins and leaves the queues alone; otherwise the deployment
        queue, then the endpoint queue, is consumed; an empty script means ``ok``.

        Args:
            endpoint: ``chat``, ``token`` or ``devicecode``.
            deployment: The chat deployment (its own queue is used first).
            scenario: The ``x-sandbox-scenario`` header, if any.
            grant: The grant of a token request (``refresh_token`` or ``device_code``): the first
                queued entry that applies to it is taken, entries for the other grant
                (:attr:`~.FaultSpec.grant`) stay queued in order.

        Raises:
            ValueError: the scenario header names no valid fault, or one of the other grant.
        """

        def applies(outcome: Outcome) -> bool:
            return grant is None or outcome.spec.grant in (None, grant)

        if scenario is not None:
            outcome = parse_outcome(scenario, endpoint)
            if not applies(outcome):
                raise ValueError(
                    f"fault {outcome.fault!r} applies to {outcome.spec.grant} grants, "
                    f"not to this {grant} grant"
                )
            return outcome, "header"
        with self.lock:
            for key in ((endpoint, deployment), (endpoint, None)):
                queue = self.scripts.get(key)
                for index, queued in enumerate(queue or ()):
                    if applies(queued):
                        del self.scripts[key][index]
                        return queued, "script"
        return Outcome("ok"), None

    def remember_request(self, key: str) -> collections.deque[float]:
        """Add now to the arrival times of a token request (loop detection) and return them.

        At most :data:`LOOP_KEYS` distinct requests are remembered (the least recently seen is
        forgotten first), each with its last :data:`LOOP_HISTORY` arrival times.
        """
        with self.lock:
            history = self.loop_history.get(key)
            if history is None:
                history = self.loop_history[key] = collections.deque(maxlen=LOOP_HISTORY)
            self.loop_history.move_to_end(key)
            history.append(self.clock())
            while len(self.loop_history) > LOOP_KEYS:
                self.loop_history.popitem(last=False)
            return history

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
        """Append a request to the log; count endpoint POSTs.

        Headers and query parameters are masked here; ``body`` must be masked by the caller
        (:func:`~saga_magic.sandbox.masking.mask_body`).
        """
        with self.lock:
            self.seq += 1
            entry = RecordedRequest(
                self.seq,
                arrived,
                method,
                path,
                mask_query(query),
                endpoint,
                deployment,
                mask_headers(headers),
                body,
                "ok",
                None,
                None,
            )
            self.log.append(entry)
            self._open_seq = entry.seq
            if method == "POST" and endpoint in ENDPOINTS:
                self.post_counts[endpoint] += 1
            return entry

    def finish(
        self,
        entry: RecordedRequest,
        *,
        outcome: Outcome,
        source: str | None,
        status: int | None,
        delivery: str = "complete",
    ) -> None:
        """Store the outcome applied, the status answered and the planned delivery."""
        with self.lock:
            self._open_seq = None
            # Handlers run one at a time on the server thread, so the entry is the newest one
            # unless a reset() from another thread cleared the log in between.
            if self.log and self.log[-1].seq == entry.seq:
                self.log[-1] = replace(
                    entry,
                    outcome=outcome.describe(),
                    source=source,
                    status=status,
                    delivery=delivery,
                )

    def _update(self, seq: int, **changes: object) -> None:
        for index in range(len(self.log) - 1, -1, -1):
            if self.log[index].seq == seq:
                self.log[index] = replace(self.log[index], **changes)  # type: ignore[arg-type]
                return
            if self.log[index].seq < seq:
                return

    def client_gone(self, seq: int, *, head_sent: bool) -> None:
        """Note that the client left before its answer was complete (no status if no head)."""
        with self.lock:
            changes: dict[str, object] = {"delivery": "client_gone"}
            if not head_sent:
                changes["status"] = None
            self._update(seq, **changes)

    def fail_open(self, error: str) -> None:
        """Mark the request being handled (recorded, not finished) as failed with a 500."""
        with self.lock:
            seq, self._open_seq = self._open_seq, None
            if seq is not None:
                self._update(seq, status=500, error=error)

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
