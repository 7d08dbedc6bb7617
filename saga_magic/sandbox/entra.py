"""Entra ID v2.0 endpoints: discovery, devicecode and token, with Entra's error shape (PROTOCOLS 1).

Routes (``{tenant}`` = the sandbox tenant id, its domain, ``common`` or ``organizations``):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``GET /{tenant}/discovery/v2.0/keys``
* ``GET /common/discovery/instance`` (MSAL instance discovery)
* ``POST /{tenant}/oauth2/v2.0/devicecode``
* ``POST /{tenant}/oauth2/v2.0/token`` (``refresh_token`` and device-code grants)

A devicecode or token request takes its scripted outcome only once it passes the method and tenant
checks (and, for the token endpoint, names a supported ``grant_type``): a ``GET`` probe, a wrong
tenant or an unknown grant is answered normally, leaves the script alone and ignores
``x-sandbox-scenario``. A token request takes the first queued outcome that applies to its grant
(``device_*`` faults wait for a device-code poll, ``rt_*`` and ``mfa_required`` for a
refresh-token grant; the ones passed over stay queued in order).

Switch-like faults act beyond the request that consumes them: a scripted ``rt_reuse_strict`` makes
the presenting user's superseded refresh tokens fail from then on (until
:meth:`~saga_magic.sandbox.Sandbox.rt_reuse_strict` ``(False)`` or a reset), and a scripted
``device_slow_down`` answers ``slow_down`` and enforces that login's ``interval`` from then on.
A scripted ``loop_detect:N/W`` judges only the request that takes it (against every identical
request seen before); :meth:`~saga_magic.sandbox.Sandbox.loop_detect` is the switch.
"""

from __future__ import annotations

from typing import Final, NamedTuple
from urllib.parse import urlsplit

from .catalogue import DEVICE_GRANT, REFRESH_GRANT
from .common import (
    basic_credentials,
    conclude,
    deliver,
    json_bytes,
    parse_form,
    record_request,
    take_outcome,
)
from .device import approve, create_flow
from .entra_errors import (
    bad_code,
    bad_tenant,
    entra_error,
    entra_fault,
    inactive,
    mfa_required,
    missing_param,
    ok_reply,
    post_only,
    revoked,
    secret_error,
    slow_down,
)
from .faults import DEVICECODE, TOKEN, Outcome
from .issuance import issue_token_response, split_scopes
from .records import DeviceState, SecretState
from .server import Reply, Request
from .state import SandboxState

__all__ = [
    "DEVICE_CODE_GRANT",
    "handle_devicecode",
    "handle_discovery",
    "handle_instance_discovery",
    "handle_keys",
    "handle_token",
]

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
_CLIENT_INFO_PREFIX: Final = "1"
_GRANTS: Final = {"refresh_token": REFRESH_GRANT, DEVICE_CODE_GRANT: DEVICE_GRANT}


def _tenant_known(state: SandboxState, tenant: str) -> bool:
    config = state.config
    return tenant.lower() in {
        config.tenant_id.lower(),
        config.tenant_domain.lower(),
        "common",
        "organizations",
    }


# discovery --------------------------------------------------------------------------------------


def handle_discovery(state: SandboxState, request: Request, tenant: str) -> Reply:
    """Serve the OpenID Connect discovery document of a tenant."""
    entry = record_request(state, request, "discovery")
    if not _tenant_known(state, tenant):
        reply = bad_tenant(state, request, tenant)
    else:
        base = f"{state.base_url}/{tenant}"
        tid = state.config.tenant_id if tenant not in ("common", "organizations") else "{tenantid}"
        reply = ok_reply(
            request,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{state.base_url}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "claims_supported": [
                    "sub",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "nbf",
                    "name",
                    "oid",
                    "tid",
                ],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            },
        )
    return conclude(state, entry, reply)


def handle_keys(state: SandboxState, request: Request, tenant: str) -> Reply:
    """Serve an empty JWKS (sandbox tokens are not signed)."""
    entry = record_request(state, request, "discovery")
    reply = (
        ok_reply(request, {"keys": []})
        if _tenant_known(state, tenant)
        else bad_tenant(state, request, tenant)
    )
    return conclude(state, entry, reply)


def handle_instance_discovery(state: SandboxState, request: Request) -> Reply:
    """Serve MSAL instance discovery for the sandbox host."""
    entry = record_request(state, request, "discovery")
    host = urlsplit(state.base_url).netloc
    path = urlsplit(request.query.get("authorization_endpoint", "")).path.strip("/")
    tenant = path.split("/")[0] or "common"
    reply = ok_reply(
        request,
        {
            "tenant_discovery_endpoint": (
                f"{state.base_url}/{tenant}/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        },
    )
    return conclude(state, entry, reply)


def _client_id_error(state: SandboxState, request: Request, client_id: str) -> Reply | None:
    config = state.config
    if not client_id:
        return missing_param(state, request, "client_id")
    if client_id != config.client_id:
        return entra_error(
            state,
            request,
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{config.tenant_id}'. This can happen if the application has not been installed by "
            "the administrator of the tenant or consented to by any user in the tenant.",
        )
    return None


def _client_error(state: SandboxState, request: Request, form: dict[str, str]) -> Reply | None:
    """Check the client id and the client credential (public or confidential)."""
    config = state.config
    basic = basic_credentials(request)
    client_id = form.get("client_id") or (basic[0] if basic else "")
    id_error = _client_id_error(state, request, client_id)
    if id_error is not None:
        return id_error
    secret = form.get("client_secret") or (basic[1] if basic else "")
    assertion = form.get("client_assertion", "")
    if config.client_secret is None:
        if secret or assertion:
            return secret_error(state, request, 700025, client_id)
        return None
    if not secret and not assertion:
        return secret_error(state, request, 7000218, client_id)
    if assertion or secret != config.client_secret or state.secret_state is SecretState.REVOKED:
        return secret_error(state, request, 7000215, client_id)
    if state.secret_state is SecretState.EXPIRED:
        return secret_error(state, request, 7000222, client_id)
    return None


# devicecode -------------------------------------------------------------------------------------


def handle_devicecode(state: SandboxState, request: Request, tenant: str) -> Reply:
    """Serve ``/{tenant}/oauth2/v2.0/devicecode``."""
    entry = record_request(state, request, DEVICECODE)
    if request.method != "POST" or not _tenant_known(state, tenant):
        return conclude(state, entry, _devicecode(state, request, tenant, Outcome("ok")))
    picked = take_outcome(state, request, DEVICECODE)
    if isinstance(picked, Reply):
        return conclude(state, entry, picked)
    outcome, source = picked
    reply = entra_fault(state, request, outcome) or _devicecode(state, request, tenant, outcome)
    return deliver(state, entry, outcome, source, reply)


def _devicecode(state: SandboxState, request: Request, tenant: str, outcome: Outcome) -> Reply:
    if request.method != "POST":
        return post_only(state, request)
    if not _tenant_known(state, tenant):
        return bad_tenant(state, request, tenant)
    form = parse_form(request)
    client_error = _client_id_error(state, request, form.get("client_id", ""))
    if client_error is not None:
        return client_error
    scopes = split_scopes(form.get("scope", ""))
    if not scopes:
        return missing_param(state, request, "scope")
    early = outcome.number("seconds") if outcome.fault == "device_expire_early" else None
    body = create_flow(
        state,
        client_id=form["client_id"],
        scope=scopes,
        early_expiry=early,
        mkt=request.query.get("mkt"),
    )
    return ok_reply(request, body)


# token ------------------------------------------------------------------------------------------


def handle_token(state: SandboxState, request: Request, tenant: str) -> Reply:
    """Serve ``/{tenant}/oauth2/v2.0/token``."""
    entry = record_request(state, request, TOKEN)
    grant = _GRANTS.get(parse_form(request).get("grant_type", ""))
    if request.method != "POST" or not _tenant_known(state, tenant) or grant is None:
        with state.lock:
            return conclude(state, entry, _token(state, request, tenant, Outcome("ok")))
    picked = take_outcome(state, request, TOKEN, grant=grant)
    if isinstance(picked, Reply):
        return conclude(state, entry, picked)
    outcome, source = picked
    with state.lock:
        reply = entra_fault(state, request, outcome) or _token(state, request, tenant, outcome)
    return deliver(state, entry, outcome, source, reply)


def _looped(state: SandboxState, form: dict[str, str], outcome: Outcome) -> bool:
    if outcome.fault == "loop_detect":
        rule: tuple[int, float] | None = (outcome.integer("n"), outcome.number("window"))
    else:
        rule = state.loop_detect
    history = state.remember_request(json_bytes(sorted(form.items())).decode("utf-8"))
    now = history[-1]
    if rule is None:
        return False
    limit, window = rule
    return sum(1 for t in history if now - t <= window) > limit


def _token(state: SandboxState, request: Request, tenant: str, outcome: Outcome) -> Reply:
    if request.method != "POST":
        return post_only(state, request)
    if not _tenant_known(state, tenant):
        return bad_tenant(state, request, tenant)
    form = parse_form(request)
    if _looped(state, form, outcome):
        return entra_error(
            state,
            request,
            400,
            "invalid_grant",
            50196,
            "The server terminated an operation because it encountered a client request loop. "
            "Please contact your app vendor.",
        )
    client_error = _client_error(state, request, form)
    if client_error is not None:
        return client_error
    grant = form.get("grant_type", "")
    if not grant:
        return missing_param(state, request, "grant_type")
    if grant == "refresh_token":
        return _refresh_grant(state, request, form, outcome)
    if grant == DEVICE_CODE_GRANT:
        return _device_grant(state, request, form, outcome)
    return entra_error(
        state,
        request,
        400,
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant}'.",
    )


class _IssueOptions(NamedTuple):
    opaque: bool | None
    skew: float | None
    client_info: bool


def _issue_options(form: dict[str, str], outcome: Outcome) -> _IssueOptions:
    return _IssueOptions(
        True if outcome.fault == "opaque_token" else None,
        outcome.number("seconds") if outcome.fault == "clock_skew" else None,
        form.get("client_info") == _CLIENT_INFO_PREFIX,
    )


def _refresh_grant(
    state: SandboxState, request: Request, form: dict[str, str], outcome: Outcome
) -> Reply:
    token = form.get("refresh_token", "")
    if not token:
        return missing_param(state, request, "refresh_token")
    record = state.refresh_tokens.get(token)
    if record is None:
        return entra_error(
            state, request, 400, "invalid_grant", 70000, "Provided grant is invalid or malformed."
        )
    user = state.user(record.user)
    if outcome.fault == "rt_reuse_strict":
        user.strict_rotation = True
    if record.superseded and (state.rt_reuse_strict or user.strict_rotation):
        return entra_error(
            state,
            request,
            400,
            "invalid_grant",
            70000,
            "The refresh token was already used; a rotated refresh token cannot be reused "
            "(strict rotation).",
        )
    if record.serial < user.valid_from_serial:
        return revoked(state, request, user.revoked_at)
    if record.inactive:
        return inactive(state, request, record.issued_at)
    if user.mfa_required_serial is not None and record.mfa_serial < user.mfa_required_serial:
        return mfa_required(state, request)
    scopes = split_scopes(form.get("scope", "")) or record.scope
    record.superseded = True
    options = _issue_options(form, outcome)
    body = issue_token_response(
        state,
        user=record.user,
        client_id=record.client_id,
        scopes=scopes,
        with_refresh=True,
        mfa_serial=record.mfa_serial,
        opaque=options.opaque,
        skew=options.skew,
        client_info=options.client_info,
        consent=record.scope,
    )
    return ok_reply(request, body)


def _device_grant(
    state: SandboxState, request: Request, form: dict[str, str], outcome: Outcome
) -> Reply:
    code = form.get("device_code", "")
    if not code:
        return missing_param(state, request, "device_code")
    flow = state.device_flows.get(code)
    if flow is None or outcome.fault == "device_bad_code":
        return bad_code(state, request)
    now = state.clock()
    if outcome.fault == "device_expire_early":
        flow.expires_at = min(flow.expires_at, flow.issued_at + outcome.number("seconds"))
    if flow.state is DeviceState.PENDING and now >= flow.expires_at:
        flow.state = DeviceState.EXPIRED
    too_fast = flow.last_poll is not None and now - flow.last_poll < flow.interval
    flow.last_poll = now
    if outcome.fault == "device_slow_down":
        flow.enforce_interval = True
        return slow_down(state, request)
    if flow.state is DeviceState.PENDING:
        if too_fast and (state.config.enforce_poll_interval or flow.enforce_interval):
            return slow_down(state, request)
        if state.auto_approve:
            approve(state, flow.user_code)
    if flow.state is DeviceState.PENDING:
        return entra_error(
            state,
            request,
            400,
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )
    if flow.state is DeviceState.DECLINED:
        return entra_error(
            state,
            request,
            400,
            "authorization_declined",
            70000,
            "The user declined the authorization request.",
        )
    if flow.state is DeviceState.EXPIRED:
        return entra_error(
            state, request, 400, "expired_token", 70019, "Verification code expired."
        )
    if flow.state is DeviceState.REDEEMED:
        return entra_error(
            state,
            request,
            400,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
            "or use an existing refresh token.",
        )
    options = _issue_options(form, outcome)
    body = issue_token_response(
        state,
        user=flow.user or state.config.default_user,
        client_id=flow.client_id,
        scopes=flow.scope,
        with_refresh="offline_access" in flow.scope,
        opaque=options.opaque,
        skew=options.skew,
        client_info=options.client_info,
    )
    flow.state = DeviceState.REDEEMED
    state.changed.notify_all()
    return ok_reply(request, body)
