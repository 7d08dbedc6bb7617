"""One error tree for the whole product.

Every failure a caller can act on has its own class; context rides on the exception, attached at
the HTTP boundary (``auth.py`` / ``engine.py``) and nowhere else::

    ArcSagaException                      base of everything raised on purpose
    ├── AuthenticationError               sign-in needed or refused: run ``%copilot login``
    │   ├── PermissionDeniedError         signed in, but the role is missing (403)
    │   └── TokenPersistenceError ─┐      refreshed, but the new token could not be saved
    ├── TokenStorageError ─────────┘      the encrypted store: key, file, permissions, corruption
    ├── ConfigurationError                a setting is wrong (endpoint, tenant, client, deployment)
    ├── InputValidationError (ValueError) the request is wrong (too long, filtered, bad option)
    └── TransientError                    worth retrying later (5xx, connection, parse glitch)
        ├── RateLimitError                429 or throttled; ``retry_after`` says how long to wait
        └── RequestTimeoutError (TimeoutError)  408 / 504 / client-side timeout

Errors raised from an HTTP answer carry ``status``, ``code`` (the OAuth ``error`` or the API
``code``), ``request_id`` / ``correlation_id`` where the server sent one, and ``attempts``. They
never carry a token, a secret, or a raw response body: only short, redacted previews.
"""

from __future__ import annotations

__all__ = [
    "ArcSagaException",
    "AuthenticationError",
    "ConfigurationError",
    "InputValidationError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "TokenPersistenceError",
    "TokenStorageError",
    "TransientError",
]


class ArcSagaException(Exception):
    """Base class of every error this product raises on purpose.

    Args:
        message: One human sentence saying what went wrong (no secrets).
        status: HTTP status of the answer that caused it, if any.
        code: OAuth ``error`` (``invalid_grant``) or API ``code`` (``DeploymentNotFound``).
        error_codes: Entra ``AADSTS`` numbers, when the server sent them.
        request_id: ``x-ms-request-id`` / ``apim-request-id`` / ``x-request-id`` of the answer.
        correlation_id: Entra ``correlation_id``, or the client request id we sent.
        attempts: How many HTTP attempts were made before giving up.
        hint: What the user should do next, one short sentence.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        error_codes: tuple[int, ...] = (),
        request_id: str | None = None,
        correlation_id: str | None = None,
        attempts: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        """The human sentence, without the context suffix."""
        self.status = status
        """HTTP status of the answer that caused the error, if any."""
        self.code = code
        """OAuth ``error`` or API ``code``."""
        self.error_codes = error_codes
        """Entra AADSTS numbers."""
        self.request_id = request_id
        """Server request id (``x-ms-request-id``, ``apim-request-id``, ``x-request-id``)."""
        self.correlation_id = correlation_id
        """Entra correlation id or our client request id."""
        self.attempts = attempts
        """Number of HTTP attempts made."""
        self.hint = hint
        """What to do next."""

    def context(self) -> dict[str, object]:
        """Return the non-empty context fields, for events and error displays.

        Returns:
            A dict with the set fields among status, code, error_codes, request_id,
            correlation_id, attempts and (for rate limits) retry_after.
        """
        fields: dict[str, object] = {
            "status": self.status,
            "code": self.code,
            "error_codes": list(self.error_codes) or None,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
            "attempts": self.attempts,
        }
        retry_after = getattr(self, "retry_after", None)
        if retry_after is not None:
            fields["retry_after"] = retry_after
        return {key: value for key, value in fields.items() if value is not None}

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{key}={value}" for key, value in self.context().items() if key != "error_codes"
        ]
        if self.error_codes:
            details.append("AADSTS" + ",".join(str(code) for code in self.error_codes))
        if details:
            parts.append(f"({', '.join(details)})")
        if self.hint:
            parts.append(f"-> {self.hint}")
        return " ".join(parts)


class AuthenticationError(ArcSagaException):
    """Sign-in is needed again, or the token was refused (re-login: ``%copilot login``)."""


class PermissionDeniedError(AuthenticationError):
    """The signed-in principal lacks the role (assign *Cognitive Services OpenAI User*)."""


class ConfigurationError(ArcSagaException):
    """A setting is wrong: endpoint, tenant, client id or secret, scope, deployment, api-version."""


class InputValidationError(ArcSagaException, ValueError):
    """The request content is wrong: too long, filtered by policy, or an invalid option."""


class TokenStorageError(ArcSagaException):
    """The encrypted token store failed: wrong key, unreadable or corrupt file, loose modes."""


class TokenPersistenceError(AuthenticationError, TokenStorageError):
    """A refreshed token could not be saved; it was discarded and the old row left intact."""


class TransientError(ArcSagaException):
    """A failure worth retrying later: 5xx, connection error, malformed answer from a proxy.

    Args:
        message: What went wrong.
        retry_after: Seconds the server asked us to wait, if it said.
        partial_text: Text already streamed before a mid-stream failure, if any.
        **kwargs: Context fields of :class:`ArcSagaException`.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        partial_text: str | None = None,
        status: int | None = None,
        code: str | None = None,
        error_codes: tuple[int, ...] = (),
        request_id: str | None = None,
        correlation_id: str | None = None,
        attempts: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            code=code,
            error_codes=error_codes,
            request_id=request_id,
            correlation_id=correlation_id,
            attempts=attempts,
            hint=hint,
        )
        self.retry_after = retry_after
        """Seconds the server asked us to wait before the next attempt, if known."""
        self.partial_text = partial_text
        """Text received before a streaming answer broke off."""


class RateLimitError(TransientError):
    """Throttled (429, or Entra AADSTS50196); ``retry_after`` says when to try again."""


class RequestTimeoutError(TransientError, TimeoutError):
    """The request timed out (408, 504, or no answer within the client's timeout)."""
