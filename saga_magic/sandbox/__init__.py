"""A local, faithful emulator of Entra ID and an Azure OpenAI (Copilot) chat deployment.

In the spirit of Azurite: it speaks the real wire protocols over real loopback sockets, so the
product, its tests and offline notebook work run without a tenant or an Azure resource. It imports
nothing from ``saga_magic.core``: an independent peer catches the core's misreadings.

Quick start::

    from saga_magic.sandbox import Sandbox

    with Sandbox() as sb:                      # 127.0.0.1, free port, background thread
        os.environ.update(sb.env())            # AZURE_AUTHORITY_HOST, AZURE_TENANT_ID,
                                               # AZURE_CLIENT_ID, ARC_SAGA_COPILOT_ENDPOINT
        tokens = sb.issue_tokens()             # seed the default user (skip the device login)
        sb.script("chat", ["429_both", "503", "ok"])    # consumed one per request
        ...                                    # call the product
        [r.status for r in sb.requests("chat")]         # [429, 503, 200]

From a shell: ``saga-sandbox`` (or ``python -m saga_magic.sandbox``) prints ``export`` lines and
auto-approves device logins.

Endpoints (``{tenant}`` = :attr:`Sandbox.tenant_id`, its domain, ``common``, ``organizations``):

* ``POST /{tenant}/oauth2/v2.0/devicecode`` and ``POST /{tenant}/oauth2/v2.0/token``
  (``refresh_token`` and device-code grants; Entra's error shape with AADSTS codes).
* ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``GET /common/discovery/instance``.
* ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``,
  ``POST /openai/v1/chat/completions``, ``POST /v1/chat/completions`` (streaming or not).
* ``GET|POST /devicelogin``: a page to approve a device login by hand. The devicecode answer's
  ``verification_uri`` is this page of the sandbox itself (``{base}/devicelogin``), not
  ``https://microsoft.com/devicelogin``, so a person following the printed instructions reaches
  the emulator.
* ``/_sandbox/...``: the control plane (scripts, request log, reset, admin and device hooks) for
  local programs only (no ``Origin``, a loopback ``Host``, JSON bodies); see
  :mod:`saga_magic.sandbox.control`.

Python API (all on :class:`Sandbox`):

* lifecycle: ``start()``, ``stop()``, ``with``/``async with``; ``base_url``, ``authority_host``,
  ``tenant_id``, ``client_id``, ``token_endpoint``, ``devicecode_endpoint``, ``chat_endpoint``,
  ``chat_url(deployment, shape=)``, ``env()``, ``api_key`` (the addresses raise once stopped).
* scripts and log: ``script(endpoint, outcomes, deployment=, replace=)``, ``pending()``,
  ``requests(endpoint, deployment=)`` (:class:`RecordedRequest`: secrets in headers, query and
  body as :func:`fingerprint`, bodies cut at 64 KB, the status and how the answer was delivered),
  ``post_count(endpoint)``, ``reset()``.
* Entra hooks: ``issue_tokens(user, scope=, opaque=, expires_in=)``, ``revoke_user``,
  ``age_refresh_tokens``, ``require_mfa``, ``expire_client_secret``, ``revoke_client_secret``,
  ``restore_client_secret``, ``rt_reuse_strict``, ``loop_detect``, ``expire_access_tokens``.
* device login: ``approve_device_code``, ``decline_device_code``, ``expire_device_code``,
  ``device_codes()``, ``wait_for_user_code[_async]()``, ``auto_approve`` (property).
* deployments: ``set_deployment(Deployment(...))``, ``deployment(name)``, ``deployments()``.

Faults (:data:`CATALOGUE`, ``GET /_sandbox/faults``) are queued per endpoint (``chat``, ``token``,
``devicecode``; chat also per deployment) with :meth:`Sandbox.script` or ``POST /_sandbox/script``,
consumed one per request, or applied to one request with the header
``x-sandbox-scenario: <fault>``. Entries: ``"429_both"``, ``"429:retry_after=1.5"``,
``"slow_headers:0.2"``, ``"loop_detect:3/10"``, ``{"fault": "500_json", "delay_ms": 50}``; every
fault takes ``delay_ms``. Bare status codes are aliases (chat ``500`` = ``500_json``, ``503`` =
``503_json`` with ``retry-after: 1``; token ``429`` = ``token_429``, ``5xx`` = ``token_5xx_json``).
A value with a comma (a literal HTTP-date) needs the mapping form. Token-endpoint faults of one
grant wait for a request of that grant (:mod:`saga_magic.sandbox.entra`); stream requests get the
body-shaping variants in stream form (:func:`saga_magic.sandbox.stream.sse_events`).
"""

from __future__ import annotations

from .faults import CATALOGUE, FaultKind, FaultSpec, Outcome, fault_names, parse_outcome
from .records import (
    DEFAULT_API_VERSION,
    DEFAULT_CLIENT_ID,
    DEFAULT_SCOPE,
    DEFAULT_TENANT_ID,
    DEFAULT_USER,
    Deployment,
    DeviceCodeInfo,
    RecordedRequest,
)
from .sandbox import Sandbox
from .tokens import decode_jwt_claims, fingerprint

__all__ = [
    "CATALOGUE",
    "DEFAULT_API_VERSION",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SCOPE",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USER",
    "Deployment",
    "DeviceCodeInfo",
    "FaultKind",
    "FaultSpec",
    "Outcome",
    "RecordedRequest",
    "Sandbox",
    "decode_jwt_claims",
    "fault_names",
    "fingerprint",
    "parse_outcome",
]
