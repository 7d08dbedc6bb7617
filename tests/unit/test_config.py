"""Settings.from_env: every variable of the configuration table, defaults and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_magic.core.config import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_SCOPES,
    Settings,
    is_loopback_host,
    require_secure_url,
)
from saga_magic.core.errors import ConfigurationError

ENDPOINT = "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def test_defaults_follow_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.token_store_path == tmp_path / "tokens.db"
    assert settings.journal_path == tmp_path / "journal.db"
    assert settings.authority_host == DEFAULT_AUTHORITY_HOST
    assert settings.scopes == DEFAULT_SCOPES
    assert settings.user == "default"
    assert settings.encryption_key is None
    assert settings.client_secret is None
    assert settings.journal_content is False


def test_home_defaults_to_user_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_env({}).home == tmp_path / ".arc_saga"


def test_reads_os_environ_when_no_mapping(isolated_env: Path) -> None:
    assert Settings.from_env().home == isolated_env


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = {
        "ARC_SAGA_HOME": str(tmp_path / "home"),
        "ARC_SAGA_TOKEN_STORE_PATH": str(tmp_path / "t.db"),
        "ARC_SAGA_JOURNAL_PATH": str(tmp_path / "j.db"),
        "ARC_SAGA_TOKEN_ENCRYPTION_KEY": "k" * 44,
        "AZURE_TENANT_ID": "tenant",
        "AZURE_CLIENT_ID": "client",
        "AZURE_CLIENT_SECRET": "s3cret-value-123",
        "AZURE_AUTHORITY_HOST": "http://127.0.0.1:8080/",
        "ARC_SAGA_SCOPES": "scope-a  scope-b",
        "ARC_SAGA_COPILOT_ENDPOINT": ENDPOINT,
        "ARC_SAGA_COPILOT_MODEL": "gpt-4o",
        "ARC_SAGA_USER": "ada",
        "ARC_SAGA_JOURNAL_CONTENT": "yes",
    }
    settings = Settings.from_env(env)
    assert settings.token_store_path == tmp_path / "t.db"
    assert settings.journal_path == tmp_path / "j.db"
    assert settings.encryption_key == "k" * 44
    assert (settings.tenant_id, settings.client_id) == ("tenant", "client")
    assert settings.client_secret == "s3cret-value-123"
    assert settings.authority_host == "http://127.0.0.1:8080"
    assert settings.scopes == ("scope-a", "scope-b")
    assert settings.copilot_endpoint == ENDPOINT
    assert settings.copilot_model == "gpt-4o"
    assert settings.user == "ada"
    assert settings.journal_content is True


def test_blank_values_count_as_unset(tmp_path: Path) -> None:
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path), "AZURE_TENANT_ID": "  "})
    assert settings.tenant_id is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("off", False), ("0", False)]
)
def test_flags(raw: str, expected: bool, tmp_path: Path) -> None:
    env = {"ARC_SAGA_HOME": str(tmp_path), "ARC_SAGA_JOURNAL_CONTENT": raw}
    assert Settings.from_env(env).journal_content is expected


def test_bad_flag_names_the_variable(tmp_path: Path) -> None:
    env = {"ARC_SAGA_HOME": str(tmp_path), "ARC_SAGA_JOURNAL_CONTENT": "maybe"}
    with pytest.raises(ConfigurationError, match="ARC_SAGA_JOURNAL_CONTENT"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_AUTHORITY_HOST", "http://login.example.com"),
        ("ARC_SAGA_COPILOT_ENDPOINT", "http://contoso.openai.azure.com/x"),
        ("ARC_SAGA_COPILOT_ENDPOINT", "ftp://127.0.0.1/x"),
        ("ARC_SAGA_COPILOT_ENDPOINT", "not a url"),
    ],
)
def test_insecure_or_malformed_urls_are_refused(name: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"ARC_SAGA_HOME": str(tmp_path), name: value})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_secure_url_accepts_https_and_loopback_http() -> None:
    assert require_secure_url(ENDPOINT, setting="X") == ENDPOINT
    assert require_secure_url("http://[::1]:9/x", setting="X") == "http://[::1]:9/x"


def test_require_names_the_missing_variable(tmp_path: Path) -> None:
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path), "AZURE_TENANT_ID": "t"})
    settings.require("tenant_id")
    with pytest.raises(ConfigurationError, match="AZURE_CLIENT_ID") as caught:
        settings.require("tenant_id", "client_id")
    assert "%copilot sandbox" in str(caught.value)
    with pytest.raises(ConfigurationError, match="ARC_SAGA_COPILOT_ENDPOINT"):
        settings.require("copilot_endpoint")
    with pytest.raises(ConfigurationError, match="copilot_model"):
        settings.require("copilot_model")


def test_describe_shows_only_whether_secrets_are_set_and_repr_hides_them(
    tmp_path: Path,
) -> None:
    secret, key = "Q7-a-very-long-client-secret-Z9", "K3" + "x" * 40 + "W4"
    env = {
        "ARC_SAGA_HOME": str(tmp_path),
        "AZURE_CLIENT_SECRET": secret,
        "ARC_SAGA_TOKEN_ENCRYPTION_KEY": key,
    }
    settings = Settings.from_env(env)
    shown = settings.describe()
    assert shown["client_secret"] == "set"
    assert shown["encryption_key"] == "set"
    text = " ".join(str(value) for value in shown.values())
    for fragment in ("Q7", "Z9", "K3", "W4", "****"):  # not even the first or last characters
        assert fragment not in text
    assert shown["scopes"] == " ".join(DEFAULT_SCOPES)
    assert shown["tenant_id"] is None
    assert shown["home"] == str(tmp_path)
    assert secret not in repr(settings)
    assert key not in repr(settings)
    unset = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path)}).describe()
    assert (unset["client_secret"], unset["encryption_key"]) == (None, None)


def test_relative_paths_are_made_absolute_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {
            "ARC_SAGA_HOME": "home",
            "ARC_SAGA_TOKEN_STORE_PATH": "store/t.db",
            "ARC_SAGA_JOURNAL_PATH": "./j.db",
        }
    )
    monkeypatch.chdir(tmp_path.parent)  # %cd elsewhere: nothing moves
    assert settings.home == tmp_path / "home"
    assert settings.token_store_path == tmp_path / "store" / "t.db"
    assert settings.journal_path == tmp_path / "j.db"
    defaults = Settings.from_env({"ARC_SAGA_HOME": "rel"})
    assert defaults.token_store_path == tmp_path.parent / "rel" / "tokens.db"
    assert defaults.journal_path.is_absolute()


def test_home_with_a_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.from_env({"ARC_SAGA_HOME": "~/saga", "ARC_SAGA_JOURNAL_PATH": "~/j.db"})
    assert (settings.home, settings.journal_path) == (tmp_path / "saga", tmp_path / "j.db")


def test_with_overrides_returns_a_copy(tmp_path: Path) -> None:
    settings = Settings.from_env({"ARC_SAGA_HOME": str(tmp_path)})
    changed = settings.with_overrides(user="grace", tenant_id="t")
    assert (changed.user, changed.tenant_id) == ("grace", "t")
    assert settings.user == "default"
