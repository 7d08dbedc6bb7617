"""Value types shared by the core, the magic and the TUI."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AIProvider",
    "AIResult",
    "AITask",
    "ChatMessage",
    "TokenInfo",
    "TokenStatus",
    "TokenUsage",
]


class AIProvider(enum.StrEnum):
    """Which backend answered a task."""

    COPILOT_CHAT = "copilot_chat"
    """An Azure OpenAI (or OpenAI-compatible) chat-completions deployment behind Entra ID."""


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One earlier turn of a conversation."""

    role: Role
    """``system``, ``user`` or ``assistant``."""
    content: str
    """The text of the turn."""


def _new_task_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class AITask:
    """A request to the reasoning engine.

    Args:
        prompt: The user's message.
        system_prompt: Optional system message sent first.
        max_tokens: Optional cap on the answer's length in tokens.
        temperature: Optional sampling temperature (0-2).
        history: Earlier turns of the conversation, oldest first, sent before ``prompt``.
        task_id: Id of the task; a fresh one by default.
    """

    prompt: str
    """The user's message."""
    system_prompt: str | None = field(default=None, kw_only=True)
    """System message sent before everything else."""
    max_tokens: int | None = field(default=None, kw_only=True)
    """Cap on the answer's length in tokens."""
    temperature: float | None = field(default=None, kw_only=True)
    """Sampling temperature."""
    history: tuple[ChatMessage, ...] = field(default=(), kw_only=True)
    """Earlier turns of the conversation, oldest first."""
    task_id: str = field(default_factory=_new_task_id, kw_only=True)
    """Id that follows the task through events and its result."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts reported by the server."""

    prompt_tokens: int = 0
    """Tokens in the request."""
    completion_tokens: int = 0
    """Tokens in the answer (reasoning tokens included)."""
    total_tokens: int = 0
    """Sum of both."""
    reasoning_tokens: int | None = None
    """Hidden reasoning tokens, for reasoning deployments."""


@dataclass(frozen=True, slots=True)
class AIResult:
    """The engine's answer to an :class:`AITask`."""

    response_text: str
    """The assistant's text (may be empty: see ``finish_reason``)."""
    finish_reason: str | None
    """``stop``, ``length``, ``content_filter``, ... as the server said."""
    usage: TokenUsage
    """Token counts."""
    provider: AIProvider
    """Which backend answered."""
    task_id: str
    """The task's id."""
    latency_ms: float
    """Wall time of the whole call, retries and waits included."""
    request_id: str | None = None
    """Server request id of the successful attempt."""
    model: str | None = None
    """Model the server reported."""
    attempts: int = 1
    """HTTP attempts the call took."""


class TokenStatus(enum.StrEnum):
    """What a user's stored token is good for right now."""

    VALID = "valid"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    RELOGIN = "re-login needed"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Non-secret metadata of a stored token (readable without the encryption key)."""

    user_id: str
    """Whose token it is."""
    expires_at: float | None
    """Unix time the access token expires, if known."""
    created_at: float
    """Unix time the row was first written."""
    updated_at: float
    """Unix time of the last save (the last refresh or login)."""
    scopes: tuple[str, ...] = ()
    """Scopes the token was granted."""
    relogin_required: bool = False
    """Set when Entra refused the refresh token: only a new sign-in helps."""
    cooldown_until: float | None = None
    """Unix time before which no process retries a refresh that just failed, if any."""

    def status(self, *, now: float | None = None, buffer_seconds: float = 300.0) -> TokenStatus:
        """Classify the token at ``now``.

        Args:
            now: Unix time to judge at; the current time by default.
            buffer_seconds: How long before expiry a token counts as expiring.

        Returns:
            The token's :class:`TokenStatus`.
        """
        if self.relogin_required:
            return TokenStatus.RELOGIN
        current = time.time() if now is None else now
        if self.expires_at is None or self.expires_at <= current:
            return TokenStatus.EXPIRED
        if self.expires_at - current <= buffer_seconds:
            return TokenStatus.EXPIRING
        return TokenStatus.VALID
