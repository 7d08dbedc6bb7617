"""Every setting in one place: the only module that reads the environment.

See the configuration table in README.md. ``Settings.from_env()`` reads it once; the rest of the
product receives a :class:`Settings` (or plain arguments) and never looks at ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "DEFAULT_SCOPES",
    "Settings",
    "is_loopback_host",
    "require_secure_url",
]

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_SCOPES: tuple[str, ...] = ("https://cognitiveservices.azure.com/.default", "offline_access")

_SECRET_FIELDS = frozenset({"encryption_key", "client_secret"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def is_loopback_host(host: str) -> bool:
    """Tell whether ``host`` names this machine's loopback interface.

    Args:
        host: A host name or IP literal (IPv6 with or without brackets).

    Returns:
        True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``.
    """
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, *, setting: str) -> str:
    """Check that ``url`` is https, or http on a loopback host.

    Args:
        url: The URL to check.
        setting: Name of the setting it came from, for the error message.

    Returns:
        ``url`` unchanged.

    Raises:
        ConfigurationError: not an absolute http(s) URL, or plain http to a non-loopback host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{setting} must be an absolute https:// URL, got {url[:80]!r}",
            hint=f"set {setting} to a URL such as https://<resource>.openai.azure.com/...",
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{setting} uses plain http:// to {parts.hostname}; only loopback hosts may",
            hint=f"use https:// in {setting}",
        )
    return url


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw[:20]!r}", hint=f"fix {name}")


def _path(raw: str) -> Path:
    """Expand ``~`` and make the path absolute (relative to the current folder, now)."""
    return Path(raw).expanduser().absolute()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The product's effective configuration."""

    home: Path
    """Folder for the key, the token store and the journal (``ARC_SAGA_HOME``)."""
    token_store_path: Path
    """Encrypted token store (``ARC_SAGA_TOKEN_STORE_PATH``)."""
    journal_path: Path
    """Event journal (``ARC_SAGA_JOURNAL_PATH``)."""
    encryption_key: str | None = field(default=None, repr=False)
    """Fernet key from ``ARC_SAGA_TOKEN_ENCRYPTION_KEY``; ``None`` means the key file."""
    tenant_id: str | None = None
    """Entra tenant (``AZURE_TENANT_ID``)."""
    client_id: str | None = None
    """App registration's client id (``AZURE_CLIENT_ID``)."""
    client_secret: str | None = field(default=None, repr=False)
    """Client secret for confidential apps (``AZURE_CLIENT_SECRET``); public client when unset."""
    authority_host: str = DEFAULT_AUTHORITY_HOST
    """Entra host (``AZURE_AUTHORITY_HOST``)."""
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    """Scopes requested (``ARC_SAGA_SCOPES``, space-separated)."""
    copilot_endpoint: str | None = None
    """Full chat-completions URL (``ARC_SAGA_COPILOT_ENDPOINT``)."""
    copilot_model: str | None = None
    """``model`` sent in the body when set (``ARC_SAGA_COPILOT_MODEL``)."""
    user: str = "default"
    """User id whose token the magic and TUI use (``ARC_SAGA_USER``)."""
    journal_content: bool = False
    """Also journal prompts and answers (``ARC_SAGA_JOURNAL_CONTENT``; off by default)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables.

        Args:
            env: Mapping to read instead of ``os.environ`` (tests).

        Returns:
            The settings; paths are expanded and made absolute (a relative path is taken from
            the current folder at this call, so a later ``os.chdir`` / ``%cd`` does not move the
            token store or the journal), URLs checked.

        Raises:
            ConfigurationError: a value is malformed (the message names the variable).
        """
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        home = _path(get("ARC_SAGA_HOME") or "~/.arc_saga")
        store = get("ARC_SAGA_TOKEN_STORE_PATH")
        journal = get("ARC_SAGA_JOURNAL_PATH")
        authority = (get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).rstrip("/")
        require_secure_url(authority, setting="AZURE_AUTHORITY_HOST")
        endpoint = get("ARC_SAGA_COPILOT_ENDPOINT")
        if endpoint is not None:
            require_secure_url(endpoint, setting="ARC_SAGA_COPILOT_ENDPOINT")
        scopes_raw = get("ARC_SAGA_SCOPES")
        scopes = tuple(scopes_raw.split()) if scopes_raw else DEFAULT_SCOPES
        return cls(
            home=home,
            token_store_path=_path(store) if store else home / "tokens.db",
            journal_path=_path(journal) if journal else home / "journal.db",
            encryption_key=get("ARC_SAGA_TOKEN_ENCRYPTION_KEY"),
            tenant_id=get("AZURE_TENANT_ID"),
            client_id=get("AZURE_CLIENT_ID"),
            client_secret=get("AZURE_CLIENT_SECRET"),
            authority_host=authority,
            scopes=scopes,
            copilot_endpoint=endpoint,
            copilot_model=get("ARC_SAGA_COPILOT_MODEL"),
            user=get("ARC_SAGA_USER") or "default",
            journal_content=_flag(source, "ARC_SAGA_JOURNAL_CONTENT", False),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some fields replaced (the sandbox and CLI flags use this).

        Args:
            **changes: Field names and their new values.

        Returns:
            The new settings.
        """
        return replace(self, **changes)  # type: ignore[arg-type]

    def require(self, *names: str) -> None:
        """Check that settings needed for an action are present.

        Args:
            *names: Field names, e.g. ``"tenant_id"``, ``"client_id"``, ``"copilot_endpoint"``.

        Raises:
            ConfigurationError: naming the first missing environment variable.
        """
        env_names = {
            "tenant_id": "AZURE_TENANT_ID",
            "client_id": "AZURE_CLIENT_ID",
            "copilot_endpoint": "ARC_SAGA_COPILOT_ENDPOINT",
        }
        for name in names:
            if getattr(self, name) is None:
                variable = env_names.get(name, name)
                raise ConfigurationError(
                    f"{variable} is not set",
                    hint=f"set {variable}, or run %copilot sandbox to try the local emulator",
                )

    def describe(self) -> dict[str, str | None]:
        """Return every setting as text, for ``%copilot config`` and the TUI.

        Secrets (``encryption_key``, ``client_secret``) show only whether they are set: ``"set"``
        or ``None``; no character of them is ever shown.

        Returns:
            Field name -> displayed value (``None`` for an unset setting).
        """
        shown: dict[str, str | None] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _SECRET_FIELDS:
                shown[item.name] = None if value is None else "set"
            elif isinstance(value, tuple):
                shown[item.name] = " ".join(value)
            elif value is None:
                shown[item.name] = None
            else:
                shown[item.name] = str(value)
        return shown
