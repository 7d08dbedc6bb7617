"""Private files and folders: the key file, the token store and the event journal.

One set of helpers for every file the core creates in ``ARC_SAGA_HOME``: a folder created here
gets mode 0700, a file 0600 (created with ``O_CREAT | O_EXCL``, so an existing file is never
truncated or re-permissioned), and a file that group or others may access is refused the way
ssh refuses such keys. Re-exported by :mod:`.keys`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import TokenStorageError

__all__ = ["check_private_file", "create_private_file", "ensure_private_dir"]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) if needed; a folder created here gets mode 0700.

    An existing folder is left as it is.

    Args:
        path: The folder.

    Raises:
        OSError: it cannot be created.
    """
    if path.is_dir():
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def check_private_file(path: Path, info: os.stat_result, *, what: str) -> None:
    """Refuse a file that is not a regular file or that group or others can access.

    Args:
        path: The file, for the message.
        info: Its ``stat`` result.
        what: What it is ("key file", "token store"), for the message.

    Raises:
        TokenStorageError: with a hint saying how to fix it.
    """
    if not stat.S_ISREG(info.st_mode):
        raise TokenStorageError(
            f"the {what} {path} is not a regular file", hint=f"remove or rename {path}"
        )
    if info.st_mode & 0o077:
        raise TokenStorageError(
            f"the {what} {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )


def create_private_file(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (in a 0700 folder if missing).

    An existing file is left untouched (its mode is checked by :func:`check_private_file`).

    Args:
        path: The file.

    Raises:
        OSError: it cannot be created.
    """
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed owner bits
    finally:
        os.close(fd)
