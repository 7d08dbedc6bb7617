"""Conversation memory: consecutive ``%%copilot`` cells continue one conversation per user.

Bounded two ways so a long notebook does not grow the prompt without end: the last
``max_turns`` question/answer pairs (default 20), and at most ``max_chars`` characters of
questions and answers together (default 100,000: a few long answers can fill a context window
long before 20 turns do); the oldest turns go first. ``--new`` or ``%copilot reset`` starts
over. Only successful turns are kept: a failed cell adds nothing.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saga_magic.core.types import ChatMessage

__all__ = ["DEFAULT_MAX_CHARS", "DEFAULT_MAX_TURNS", "ConversationMemory"]

DEFAULT_MAX_TURNS = 20
"""Question/answer pairs kept per user unless configured otherwise."""
DEFAULT_MAX_CHARS = 100_000
"""Characters of questions and answers kept per user unless configured otherwise."""


class ConversationMemory:
    """Per-user, bounded history of ``(prompt, answer)`` turns.

    Args:
        max_turns: Turns kept per user (at least 0; 0 disables memory).
        max_chars: Characters (questions plus answers) kept per user, at least 0; the oldest
            turns are dropped beyond it (a single turn larger than this is not kept).

    Raises:
        ValueError: ``max_turns`` or ``max_chars`` is negative.
    """

    def __init__(
        self, *, max_turns: int = DEFAULT_MAX_TURNS, max_chars: int = DEFAULT_MAX_CHARS
    ) -> None:
        self._turns: dict[str, deque[tuple[str, str]]] = {}
        self._max_turns = 0
        self._max_chars = 0
        self.max_turns = max_turns
        self.max_chars = max_chars

    @property
    def max_turns(self) -> int:
        """Turns kept per user; setting it trims every conversation."""
        return self._max_turns

    @max_turns.setter
    def max_turns(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_turns must be >= 0")
        self._max_turns = value
        for user, turns in list(self._turns.items()):
            self._turns[user] = deque(turns, maxlen=value)

    @property
    def max_chars(self) -> int:
        """Characters kept per user; setting it trims every conversation."""
        return self._max_chars

    @max_chars.setter
    def max_chars(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_chars must be >= 0")
        self._max_chars = value
        for turns in self._turns.values():
            self._trim(turns)

    def _trim(self, turns: deque[tuple[str, str]]) -> None:
        size = sum(len(prompt) + len(answer) for prompt, answer in turns)
        while turns and size > self._max_chars:
            prompt, answer = turns.popleft()
            size -= len(prompt) + len(answer)

    def add(self, user: str, prompt: str, answer: str) -> None:
        """Append a finished turn to ``user``'s conversation (dropping the oldest beyond a bound).

        Args:
            user: The user id.
            prompt: What was asked (after interpolation).
            answer: What came back.
        """
        turns = self._turns.setdefault(user, deque(maxlen=self._max_turns))
        turns.append((prompt, answer))
        self._trim(turns)

    def chars(self, user: str) -> int:
        """How many characters ``user``'s conversation holds (questions plus answers).

        Args:
            user: The user id.

        Returns:
            The count.
        """
        return sum(len(prompt) + len(answer) for prompt, answer in self._turns.get(user, ()))

    def history(self, user: str) -> tuple[ChatMessage, ...]:
        """Return ``user``'s conversation as chat messages, oldest first.

        Args:
            user: The user id.

        Returns:
            Alternating user / assistant messages.
        """
        from saga_magic.core.types import ChatMessage

        messages: list[ChatMessage] = []
        for prompt, answer in self._turns.get(user, ()):
            messages.append(ChatMessage("user", prompt))
            messages.append(ChatMessage("assistant", answer))
        return tuple(messages)

    def turns(self, user: str) -> int:
        """How many turns ``user``'s conversation holds.

        Args:
            user: The user id.

        Returns:
            The count.
        """
        return len(self._turns.get(user, ()))

    def users(self) -> list[str]:
        """Users with a non-empty conversation, sorted."""
        return sorted(user for user, turns in self._turns.items() if turns)

    def reset(self, user: str | None = None) -> int:
        """Forget ``user``'s conversation, or everyone's.

        Args:
            user: The user id; ``None`` resets all users.

        Returns:
            How many turns were forgotten.
        """
        if user is None:
            count = sum(len(turns) for turns in self._turns.values())
            self._turns.clear()
            return count
        return len(self._turns.pop(user, ()))
