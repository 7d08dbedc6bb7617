"""Fernet keys of the token store, and the private files that hold keys and tokens.

Where the key comes from, first match wins (:func:`resolve_key`):

1. the ``encryption_key`` argument of the store;
2. ``ARC_SAGA_TOKEN_ENCRYPTION_KEY`` (read by :mod:`.config`, passed in as ``env_key``);
3. the key file (``$ARC_SAGA_HOME/.token_key`` unless a ``key_path`` is given), created on first
   use with mode 0600 in a 0700 folder.

Every error names that source ("encryption_key argument", "ARC_SAGA_TOKEN_ENCRYPTION_KEY",
"key file /path") and never contains the key itself.

Files are checked the way ssh checks its keys: a key file or database that group or others may
read or write is refused with a :class:`TokenStorageError` whose hint is the ``chmod`` to run
(the private-file helpers live in :mod:`._files` and are re-exported here). A key file is opened
non-blocking, so a FIFO or device in its place is refused instead of hanging the caller.

**Key file creation is race-free.** The key is written and fsynced to a private temp file
(``O_CREAT | O_EXCL``, 0600), then hard-linked to the final name; ``link`` fails if the name
exists, so two processes starting at once never both win, and the loser reads the winner's key.
Nobody ever sees a half-written key file.

**Key rotation and crashes** (the store's ``rotate_key`` drives this; the database commit is the
point of no return):

1. the new key is staged in ``<key file>.next`` (temp file + fsync + ``os.replace``);
2. the database re-encrypts every row and the key-check row in one transaction and commits;
3. ``.next`` is renamed over the key file (:func:`commit_pending_key`).

A crash before 2 leaves the database on the old key, which the key file still holds (``.next`` is
then ignored and overwritten by the next rotation). A crash between 2 and 3 leaves the database
on the new key and the key file on the old one: the next store that finds its key refused tries
``.next``, and if that key opens the database it finishes step 3 itself
(:func:`read_pending_key` + :func:`write_key_file`). No crash point loses the key.

**Other processes.** A store that finds its key refused first reads its key file again: when
another process rotated the key (and moved it into the key file), the store adopts the new key
instead of failing until restarted. Only a key from a key file can follow a rotation; a key from
the argument or ``ARC_SAGA_TOKEN_ENCRYPTION_KEY`` has to be updated by whoever rotated it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ._files import check_private_file, create_private_file, ensure_private_dir
from .errors import TokenStorageError

__all__ = [
    "ARGUMENT_SOURCE",
    "ENV_SOURCE",
    "KEY_CHECK",
    "KEY_FILE_NAME",
    "KeyRing",
    "ResolvedKey",
    "check_private_file",
    "commit_pending_key",
    "create_private_file",
    "ensure_private_dir",
    "load_or_create_key_file",
    "parse_key",
    "pending_key_path",
    "read_pending_key",
    "resolve_key",
    "stage_pending_key",
    "write_key_file",
]

KEY_FILE_NAME = ".token_key"
"""Name of the key file inside ``ARC_SAGA_HOME``."""
ARGUMENT_SOURCE = "encryption_key argument"
"""Source label of a key passed to the store's constructor."""
ENV_SOURCE = "ARC_SAGA_TOKEN_ENCRYPTION_KEY"
"""Source label of a key from the environment."""

KEY_CHECK = b"arc-saga token store key check v1"
"""Known plaintext whose encryption, stored in the database, proves a key matches it."""

_MAX_KEY_FILE_BYTES = 4096
_MALFORMED_HINT = (
    "a Fernet key is 32 random bytes, url-safe base64-encoded (44 characters); "
    "generate one with SQLiteEncryptedTokenStore.generate_key()"
)


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A validated Fernet key and where it came from."""

    key: bytes = field(repr=False)
    """The url-safe base64 key, as Fernet takes it."""
    source: str
    """Human label of the source, used in every error message."""
    path: Path | None = None
    """The key file, when the key came from one (rotation then rewrites it)."""


def parse_key(raw: str | bytes, *, source: str) -> bytes:
    """Validate a Fernet key.

    Args:
        raw: The key, as text or bytes; surrounding whitespace is ignored.
        source: Where it came from, for the error message.

    Returns:
        The key as bytes.

    Raises:
        TokenStorageError: the key is not a valid Fernet key (the message names ``source``).
    """
    try:
        data = raw.strip().encode("ascii") if isinstance(raw, str) else raw.strip()
        Fernet(data)
    except (ValueError, TypeError, AttributeError):
        raise TokenStorageError(
            f"the encryption key from {source} is malformed", hint=_MALFORMED_HINT
        ) from None
    return data


def _read_key_file(path: Path, *, source: str) -> bytes:
    # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer before fstat refuses it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        check_private_file(path, os.fstat(fd), what="key file")
        raw = os.read(fd, _MAX_KEY_FILE_BYTES)
    finally:
        os.close(fd)
    return parse_key(raw, source=source)


def _read_optional_key(path: Path) -> bytes | None:
    try:
        return _read_key_file(path, source=f"key file {path}")
    except FileNotFoundError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, key: bytes) -> Path:
    """Write ``key`` to a new private temp file next to ``path``; returns the temp file."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key file, creating it with a fresh key if it does not exist.

    Args:
        path: The key file.

    Returns:
        The key.

    Raises:
        TokenStorageError: the file is malformed or has loose permissions.
        OSError: it cannot be read or created.
    """
    source = f"key file {path}"
    try:
        return _read_key_file(path, source=source)
    except FileNotFoundError:
        pass
    ensure_private_dir(path.parent)
    fresh = Fernet.generate_key()
    temp = _write_temp(path, fresh)
    try:
        os.link(temp, path)
    except FileExistsError:
        return _read_key_file(path, source=source)  # another process won the race: use theirs
    finally:
        os.unlink(temp)
    _fsync_dir(path.parent)
    return fresh


def write_key_file(path: Path, key: bytes) -> None:
    """Atomically replace the key file's content with ``key`` (temp file 0600 + ``os.replace``).

    Args:
        path: The key file.
        key: The new key.

    Raises:
        OSError: it cannot be written (the old file is then unchanged).
    """
    temp = _write_temp(path, key)
    try:
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def pending_key_path(path: Path) -> Path:
    """Return where a key being rotated in is staged (``<key file>.next``).

    Args:
        path: The key file.

    Returns:
        The staging file's path.
    """
    return path.with_name(path.name + ".next")


def stage_pending_key(path: Path, key: bytes) -> None:
    """Durably stage ``key`` as the next key of the key file ``path`` (rotation step 1).

    Args:
        path: The key file.
        key: The key being rotated in.

    Raises:
        OSError: it cannot be written.
    """
    write_key_file(pending_key_path(path), key)


def read_pending_key(path: Path) -> bytes | None:
    """Return the staged next key of the key file ``path``, if there is one.

    Args:
        path: The key file.

    Returns:
        The staged key, or ``None``.

    Raises:
        TokenStorageError: the staging file is malformed or has loose permissions.
        OSError: it exists but cannot be read.
    """
    return _read_optional_key(pending_key_path(path))


def commit_pending_key(path: Path) -> None:
    """Move the staged key over the key file (rotation step 3).

    Args:
        path: The key file.

    Raises:
        OSError: the rename failed; the staged key is still in ``<key file>.next``.
    """
    os.replace(pending_key_path(path), path)
    _fsync_dir(path.parent)


def resolve_key(
    encryption_key: str | bytes | None, *, env_key: str | None, key_file: Path | None
) -> ResolvedKey:
    """Find the store's key: the argument, else the environment's, else the key file.

    Args:
        encryption_key: Key passed to the store, if any.
        env_key: ``ARC_SAGA_TOKEN_ENCRYPTION_KEY`` as read by the settings, if set.
        key_file: Key file to read, or to create when it does not exist; required when
            neither key is given.

    Returns:
        The validated key and its source.

    Raises:
        TokenStorageError: the key is malformed, the key file has loose permissions, or the
            key file cannot be read or created (the message names the source).
    """
    if encryption_key is not None:
        return ResolvedKey(parse_key(encryption_key, source=ARGUMENT_SOURCE), ARGUMENT_SOURCE)
    if env_key is not None:
        return ResolvedKey(parse_key(env_key, source=ENV_SOURCE), ENV_SOURCE)
    if key_file is None:
        raise TokenStorageError("no encryption key and no key file given", hint=f"set {ENV_SOURCE}")
    source = f"key file {key_file}"
    try:
        key = load_or_create_key_file(key_file)
    except OSError as exc:
        raise TokenStorageError(
            f"cannot read or create the {source}: {exc.strerror or exc}",
            hint=f"check that {key_file.parent} exists and is yours, or set {ENV_SOURCE}",
        ) from exc
    return ResolvedKey(key, source, key_file)


def _matches(fernet: MultiFernet, check: bytes) -> bool:
    try:
        return fernet.decrypt(check) == KEY_CHECK
    except (InvalidToken, TypeError):
        return False


class KeyRing:
    """The store's current key: encrypts, decrypts, checks itself, and rotates.

    Not thread-safe: the store uses it from its one worker thread only.

    Args:
        resolved: The key and its source.
    """

    def __init__(self, resolved: ResolvedKey) -> None:
        self._resolved = resolved
        self._fernet = MultiFernet([Fernet(resolved.key)])
        self._verified: bytes | None = None

    @property
    def source(self) -> str:
        """Where the key came from, for messages."""
        return self._resolved.source

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt ``data`` with the current key.

        Args:
            data: Plaintext.

        Returns:
            The Fernet token.
        """
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """Decrypt a Fernet token made with the current key.

        Args:
            token: The Fernet token.

        Returns:
            The plaintext.

        Raises:
            cryptography.fernet.InvalidToken: wrong key or corrupt token.
            TypeError: ``token`` is not bytes or text.
        """
        return self._fernet.decrypt(token)

    def new_check(self) -> bytes:
        """Return a fresh key-check value for a new database.

        Returns:
            ``KEY_CHECK`` encrypted with the current key.
        """
        return self.encrypt(KEY_CHECK)

    def verify(self, check: bytes | None, *, store: Path) -> None:
        """Check the key against the database's key-check value.

        When the key came from a key file and does not match, another process may have rotated
        the key: the key file is read again, then the key staged by a rotation that crashed
        after its commit (``<key file>.next``); a key that matches is adopted (a staged one is
        also moved into the key file, finishing that rotation).

        Args:
            check: The key-check value read from the database (``None``: the row is missing).
            store: The database, for messages.

        Raises:
            TokenStorageError: the row is missing, or the key does not match the database (the
                hint says how to find the right key; nothing is deleted).
        """
        if check is None:
            raise TokenStorageError(
                f"the token store {store} has no key-check row (it was changed outside arc-saga)",
                hint=f"move {store} away and sign in again",
            )
        if (
            check != self._verified
            and not _matches(self._fernet, check)
            and not self._adopt_from_files(check)
        ):
            raise TokenStorageError(
                f"the encryption key from {self.source} does not match the token store {store}",
                hint=self._mismatch_hint(store),
            )
        self._verified = check

    def _mismatch_hint(self, store: Path) -> str:
        lost = (
            "if that key is lost, the saved tokens cannot be decrypted: `%copilot logout` "
            "deletes them (no key needed) and you sign in again"
        )
        if self._resolved.path is None:
            return f"use the key {store} was created with or last rotated to; {lost}"
        return (
            f"restore the key file {self._resolved.path} that belongs to {store} (or set "
            f"{ENV_SOURCE} to its key); {lost}"
        )

    def _adopt_from_files(self, check: bytes) -> bool:
        """Adopt the key file's current key, or its staged next key, if it opens the database."""
        path = self._resolved.path
        if path is None:
            return False
        on_disk = _read_optional_key(path)
        if on_disk is not None and self._opens(on_disk, check):
            self._use(on_disk)  # another process rotated the key and updated the key file
            return True
        staged = read_pending_key(path)
        if staged is None or not self._opens(staged, check):
            return False
        write_key_file(path, staged)  # finish the interrupted rotation's step 3
        self._use(staged)
        return True

    def _opens(self, key: bytes, check: bytes) -> bool:
        return key != self._resolved.key and _matches(MultiFernet([Fernet(key)]), check)

    def _use(self, key: bytes) -> None:
        self._resolved = ResolvedKey(key, self._resolved.source, self._resolved.path)
        self._fernet = MultiFernet([Fernet(key)])

    def rotator(self, fresh_key: bytes) -> MultiFernet:
        """Return a MultiFernet whose ``rotate()`` re-encrypts current tokens with ``fresh_key``.

        Args:
            fresh_key: The validated new key.

        Returns:
            ``MultiFernet([fresh, current])``.
        """
        return MultiFernet([Fernet(fresh_key), Fernet(self._resolved.key)])

    def stage(self, fresh_key: bytes) -> bytes:
        """Rotation step 1: stage ``fresh_key`` next to the key file (if any).

        Args:
            fresh_key: The validated new key.

        Returns:
            The key-check value for ``fresh_key``, to write in the rotating transaction.

        Raises:
            OSError: the staging file cannot be written.
        """
        if self._resolved.path is not None:
            stage_pending_key(self._resolved.path, fresh_key)
        return Fernet(fresh_key).encrypt(KEY_CHECK)

    def switch(self, fresh_key: bytes, check: bytes) -> None:
        """Rotation step 3, after the commit: use ``fresh_key`` and move it into the key file.

        Args:
            fresh_key: The new key, now the database's.
            check: Its key-check value, as committed.

        Raises:
            TokenStorageError: the key file could not be updated (the message says where the
                new key is); this ring already uses the new key.
        """
        path = self._resolved.path
        self._use(fresh_key)
        self._verified = check
        if path is None:
            return
        try:
            commit_pending_key(path)
        except OSError as exc:
            pending = pending_key_path(path)
            raise TokenStorageError(
                f"the token store now uses the new key, but the key file {path} could not be "
                f"updated ({exc.strerror or exc}); the new key is in {pending}",
                hint=f"mv {pending} {path}",
            ) from exc
