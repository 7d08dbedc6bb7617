"""Token issuance: the success body of the Entra token endpoint (PROTOCOLS 1.3).

Access tokens are JWT-shaped (v1 claims for ``https://cognitiveservices.azure.com``) unless opaque
tokens are requested; every access token is registered with its audience and expiry so the chat
endpoint can recognise it. Refresh tokens are registered with their user, client, scopes and MFA
time; each use supersedes the presented one.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from typing import Final

from .records import AccessTokenRecord, RefreshTokenRecord
from .state import SandboxState
from .tokens import b64url_json, mint_jwt, new_secret

__all__ = [
    "COGNITIVE_AUDIENCE",
    "OIDC_SCOPES",
    "issue_token_response",
    "resource_of",
    "split_scopes",
]

COGNITIVE_AUDIENCE: Final = "https://cognitiveservices.azure.com"
GRAPH_RESOURCE: Final = "https://graph.microsoft.com"
OIDC_SCOPES: Final = frozenset({"openid", "profile", "email", "offline_access"})
_BACKDATE: Final = 300
_ID_TOKEN_LIFETIME: Final = 3600
_TOKEN_MEMORY: Final = 10_000
_BEARER: Final = "Bearer"


def split_scopes(scope: str) -> tuple[str, ...]:
    """Return the scopes of a space-separated scope string, in order, without duplicates."""
    return tuple(dict.fromkeys(scope.split()))


def resource_of(scopes: Sequence[str]) -> str:
    """Return the resource (audience) of the first resource scope; Graph when there is none."""
    for scope in scopes:
        if scope in OIDC_SCOPES:
            continue
        if "://" in scope and scope.count("/") >= 3:
            return scope.rsplit("/", 1)[0]
        return GRAPH_RESOURCE
    return GRAPH_RESOURCE


def _granted_scope(scopes: Sequence[str], resource: str) -> str:
    granted: list[str] = []
    for scope in scopes:
        if scope == f"{resource}/.default":
            granted += [f"{resource}/user_impersonation", scope]
        elif scope.startswith(resource + "/") or scope in OIDC_SCOPES:
            granted.append(scope)
    return " ".join(dict.fromkeys(granted or [f"{resource}/user_impersonation"]))


def _display_name(user: str) -> str:
    return user.split("@", 1)[0].replace(".", " ").title()


def _lifetime(state: SandboxState, expires_in: int | None) -> int:
    if expires_in is not None:
        return expires_in
    if state.config.token_lifetime is not None:
        return state.config.token_lifetime
    return 3600 + secrets.randbelow(1801)


def issue_token_response(
    state: SandboxState,
    *,
    user: str,
    client_id: str,
    scopes: Sequence[str],
    with_refresh: bool,
    mfa_serial: int | None = None,
    opaque: bool | None = None,
    skew: float | None = None,
    client_info: bool = False,
    expires_in: int | None = None,
    consent: Sequence[str] | None = None,
) -> dict[str, object]:
    """Register and return a token set shaped like the token endpoint's 200 body.

    Args:
        state: Sandbox state (the caller holds the lock or accepts a short one).
        user: User principal name.
        client_id: Application the tokens are for.
        scopes: Requested (or consented) scopes.
        with_refresh: Whether to issue a refresh token.
        mfa_serial: Serial of the interactive login the tokens descend from; ``None`` means
            this issue is itself an interactive login.
        opaque: Opaque access token; ``None`` follows the sandbox setting.
        skew: Seconds added to JWT ``iat``/``nbf``/``exp``; ``None`` follows the sandbox setting.
        client_info: Include ``client_info`` (MSAL asks with ``client_info=1``).
        expires_in: Access-token lifetime; ``None`` follows the sandbox setting.
        consent: Scopes the new refresh token carries; ``None`` for ``scopes``.
    """
    config = state.config
    with state.lock:
        record = state.user(user)
        now = state.clock()
        lifetime = _lifetime(state, expires_in)
        resource = resource_of(scopes)
        shift = config.clock_skew if skew is None else skew
        issued = int(now + shift)
        use_opaque = config.opaque_tokens if opaque is None else opaque
        if use_opaque:
            access_token = new_secret("opaque")
        else:
            access_token = mint_jwt(
                {
                    "aud": resource,
                    "iss": f"https://sts.windows.net/{config.tenant_id}/",
                    "iat": issued - _BACKDATE,
                    "nbf": issued - _BACKDATE,
                    "exp": issued + lifetime,
                    "acr": "1",
                    "amr": ["pwd", "mfa"],
                    "appid": client_id,
                    "appidacr": "0",
                    "ipaddr": "127.0.0.1",
                    "name": _display_name(user),
                    "oid": record.oid,
                    "preferred_username": user,
                    "scp": "user_impersonation",
                    "sub": record.oid.replace("-", "")[:22],
                    "tid": config.tenant_id,
                    "unique_name": user,
                    "upn": user,
                    "uti": new_secret("hex")[:22],
                    "ver": "1.0",
                }
            )
        if len(state.access_tokens) > _TOKEN_MEMORY:  # long sessions: forget expired tokens
            for token in [t for t, r in state.access_tokens.items() if r.expires_at <= now]:
                del state.access_tokens[token]
        state.access_tokens[access_token] = AccessTokenRecord(user, resource, now + lifetime)
        body: dict[str, object] = {
            "token_type": _BEARER,
            "scope": _granted_scope(scopes, resource),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
        }
        if config.refresh_in is not None:
            body["refresh_in"] = config.refresh_in
        body["access_token"] = access_token
        if with_refresh:
            refresh_token = new_secret("refresh")
            serial = state.next_serial()
            state.refresh_tokens[refresh_token] = RefreshTokenRecord(
                user,
                client_id,
                tuple(consent if consent is not None else scopes),
                now,
                serial,
                serial if mfa_serial is None else mfa_serial,
            )
            body["refresh_token"] = refresh_token
        if "openid" in scopes:
            body["id_token"] = mint_jwt(
                {
                    "aud": client_id,
                    "iss": f"{state.base_url}/{config.tenant_id}/v2.0",
                    "iat": issued,
                    "nbf": issued,
                    "exp": issued + _ID_TOKEN_LIFETIME,
                    "name": _display_name(user),
                    "oid": record.oid,
                    "preferred_username": user,
                    "sub": record.oid.replace("-", "")[:22],
                    "tid": config.tenant_id,
                    "uti": str(uuid.uuid4())[:22],
                    "ver": "2.0",
                }
            )
        if client_info:
            body["client_info"] = b64url_json({"uid": record.oid, "utid": config.tenant_id})
        return body
