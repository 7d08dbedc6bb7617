"""The shared core: token store, Entra ID auth manager, Copilot engine, errors, events.

No IPython, no Textual in here, ever: the magic and the TUI import the core, not the reverse.
Everything public is re-exported here; the submodules are implementation.
"""

from __future__ import annotations

import logging

from .auth import DeviceCodeLogin, EntraIDAuthManager
from .config import Settings
from .engine import CopilotReasoningEngine
from .errors import (
    ArcSagaException,
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    TokenPersistenceError,
    TokenStorageError,
    TransientError,
)
from .events import (
    Event,
    EventJournal,
    JournalReader,
    JournalRow,
    get_journal,
    install_journal,
    log_with_context,
    new_op_id,
    subscribe,
)
from .protocols import IEncryptedStore, IReasoningEngine, IRefreshCoordinator, ITokenProvider
from .retry import RetryEvent, RetryPolicy, parse_retry_after
from .sse import ChatStream
from .store import SQLiteEncryptedTokenStore
from .types import (
    AIProvider,
    AIResult,
    AITask,
    ChatMessage,
    TokenInfo,
    TokenStatus,
    TokenUsage,
)

__all__ = [
    "AIProvider",
    "AIResult",
    "AITask",
    "ArcSagaException",
    "AuthenticationError",
    "ChatMessage",
    "ChatStream",
    "ConfigurationError",
    "CopilotReasoningEngine",
    "DeviceCodeLogin",
    "EntraIDAuthManager",
    "Event",
    "EventJournal",
    "IEncryptedStore",
    "IReasoningEngine",
    "IRefreshCoordinator",
    "ITokenProvider",
    "InputValidationError",
    "JournalReader",
    "JournalRow",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RetryEvent",
    "RetryPolicy",
    "SQLiteEncryptedTokenStore",
    "Settings",
    "TokenInfo",
    "TokenPersistenceError",
    "TokenStatus",
    "TokenStorageError",
    "TokenUsage",
    "TransientError",
    "get_journal",
    "install_journal",
    "log_with_context",
    "new_op_id",
    "parse_retry_after",
    "subscribe",
]

# A library stays quiet unless the application configures logging.
logging.getLogger("saga").addHandler(logging.NullHandler())
