"""The Entra admin hooks of :class:`~saga_magic.sandbox.Sandbox`: what a tenant administrator
(or time) does to users, tokens and the client secret, without going through the wire."""

from __future__ import annotations

from .issuance import issue_token_response, split_scopes
from .records import DEFAULT_SCOPE, SecretState
from .state import SandboxState

__all__ = ["EntraAdmin"]


class EntraAdmin:
    """Entra admin hooks, mixed into :class:`~saga_magic.sandbox.Sandbox`."""

    _state: SandboxState

    def issue_tokens(
        self,
        user: str | None = None,
        *,
        scope: str = DEFAULT_SCOPE,
        opaque: bool | None = None,
        expires_in: int | None = None,
    ) -> dict[str, object]:
        """Seed a user with tokens as if they had just signed in; return the token-endpoint body.

        Args:
            user: User principal name (default user if ``None``).
            scope: Space-separated scopes; a refresh token needs ``offline_access``.
            opaque: Opaque access token (``None`` follows the constructor).
            expires_in: Access-token lifetime (``None`` follows the constructor).
        """
        scopes = split_scopes(scope)
        return issue_token_response(
            self._state,
            user=user or self._state.config.default_user,
            client_id=self._state.config.client_id,
            scopes=scopes,
            with_refresh="offline_access" in scopes,
            opaque=opaque,
            client_info=True,
            expires_in=expires_in,
        )

    def revoke_user(self, user: str | None = None) -> None:
        """Revoke a user's sessions: their refresh tokens answer 400 ``invalid_grant`` 50173."""
        state = self._state
        with state.lock:
            record = state.user(user or state.config.default_user)
            record.valid_from_serial = state.serial + 1
            record.revoked_at = state.clock()

    def age_refresh_tokens(self, user: str | None = None) -> int:
        """Mark a user's refresh tokens inactive (400 ``invalid_grant`` 700082); return how many."""
        state = self._state
        name = user or state.config.default_user
        with state.lock:
            records = [r for r in state.refresh_tokens.values() if r.user == name]
            for record in records:
                record.inactive = True
            return len(records)

    def require_mfa(self, user: str | None = None, *, enabled: bool = True) -> None:
        """Demand MFA: refresh tokens from earlier logins answer ``invalid_grant`` 50076 with
        ``suberror`` and ``claims`` until the user signs in again (device code)."""
        state = self._state
        with state.lock:
            record = state.user(user or state.config.default_user)
            record.mfa_required_serial = state.serial + 1 if enabled else None

    def expire_client_secret(self) -> None:
        """Make the configured secret expired (401 ``invalid_client`` 7000222)."""
        self._set_secret_state(SecretState.EXPIRED)

    def revoke_client_secret(self) -> None:
        """Make the configured secret invalid (401 ``invalid_client`` 7000215)."""
        self._set_secret_state(SecretState.REVOKED)

    def restore_client_secret(self) -> None:
        """Make the configured secret valid again."""
        self._set_secret_state(SecretState.VALID)

    def _set_secret_state(self, value: SecretState) -> None:
        with self._state.lock:
            self._state.secret_state = value

    def rt_reuse_strict(self, enabled: bool = True) -> None:
        """Switch strict rotation: a superseded refresh token answers 400 ``invalid_grant``.

        Switching off also ends the per-user strictness a scripted ``rt_reuse_strict`` left.
        """
        with self._state.lock:
            self._state.rt_reuse_strict = enabled
            if not enabled:
                for record in self._state.users.values():
                    record.strict_rotation = False

    def loop_detect(self, n: int | None, window: float = 60.0) -> None:
        """Answer 400 ``invalid_grant`` AADSTS50196 to more than ``n`` identical token requests
        within ``window`` seconds; ``n=None`` switches detection off.

        Raises:
            ValueError: negative ``n`` or non-positive ``window``.
        """
        if n is not None and (n < 0 or window <= 0):
            raise ValueError("loop_detect needs n >= 0 and window > 0")
        with self._state.lock:
            self._state.loop_detect = None if n is None else (n, float(window))

    def expire_access_tokens(self, user: str | None = None) -> int:
        """Expire issued access tokens (all users for ``None``); return how many."""
        state = self._state
        with state.lock:
            records = [r for r in state.access_tokens.values() if user in (None, r.user)]
            for record in records:
                record.revoked = True
            return len(records)
