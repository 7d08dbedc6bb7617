"""The promised public surface of ``saga_magic.core`` (an API: names are kept exactly)."""

from __future__ import annotations

import inspect

import saga_magic.core as core

PROMISED = {
    # issue 2, "What must exist"
    "ArcSagaException",
    "AuthenticationError",
    "PermissionDeniedError",
    "ConfigurationError",
    "InputValidationError",
    "TokenStorageError",
    "TokenPersistenceError",
    "TransientError",
    "RateLimitError",
    "RequestTimeoutError",
    "AIProvider",
    "AITask",
    "AIResult",
    "TokenInfo",
    "IReasoningEngine",
    "IEncryptedStore",
    "log_with_context",
    "subscribe",
    "SQLiteEncryptedTokenStore",
    "EntraIDAuthManager",
    "CopilotReasoningEngine",
    "Settings",
}


def test_all_is_sorted_and_complete() -> None:
    assert core.__all__ == sorted(core.__all__)
    assert set(core.__all__) >= PROMISED
    for name in core.__all__:
        assert getattr(core, name) is not None


def test_public_names_are_documented() -> None:
    for name in core.__all__:
        obj = getattr(core, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_constructor_signatures_match_the_issue() -> None:
    store = inspect.signature(core.SQLiteEncryptedTokenStore)
    assert list(store.parameters)[:2] == ["db_path", "encryption_key"]
    assert store.parameters["encryption_key"].kind is inspect.Parameter.KEYWORD_ONLY
    auth = inspect.signature(core.EntraIDAuthManager)
    expected_auth = {
        "tenant_id": None,
        "client_id": None,
        "client_secret": None,
        "scopes": None,
        "authority_host": None,
        "http_client": None,
        "max_retries": 5,
        "backoff_base": 1.0,
        "buffer_seconds": 300,
        "refresh_deadline": 120.0,
    }
    for name, default in expected_auth.items():
        parameter = auth.parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        if default is not None:
            assert parameter.default == default, name
    engine = inspect.signature(core.CopilotReasoningEngine)
    expected_engine = {
        "endpoint": inspect.Parameter.empty,
        "user_id": "default",
        "model": None,
        "http_client": None,
        "timeout": 60.0,
        "deadline": 120.0,
        "max_retries": 5,
        "backoff_base": 1.0,
    }
    for name, default in expected_engine.items():
        assert engine.parameters[name].default == default, name


def test_protocols_are_runtime_checkable() -> None:
    assert isinstance(object(), core.IReasoningEngine) is False
    assert isinstance(object(), core.IEncryptedStore) is False
