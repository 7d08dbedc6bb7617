"""Key sources, key files and private files of the token store (saga_magic.core.keys)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from saga_magic.core import _files, keys
from saga_magic.core.errors import TokenStorageError
from saga_magic.core.keys import (
    ARGUMENT_SOURCE,
    ENV_SOURCE,
    KeyRing,
    ResolvedKey,
    check_private_file,
    create_private_file,
    ensure_private_dir,
    load_or_create_key_file,
    parse_key,
    pending_key_path,
    read_pending_key,
    resolve_key,
    stage_pending_key,
    write_key_file,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- parse_key


def test_parse_key_accepts_text_and_bytes_with_whitespace() -> None:
    key = Fernet.generate_key()
    assert parse_key(key.decode() + "\n", source="x") == key
    assert parse_key(b"  " + key + b"\r\n", source="x") == key


@pytest.mark.parametrize(
    "raw",
    ["", "short", "é" * 44, b"not base64 at all!!", "A" * 43, 12345],
    ids=["empty", "short", "non-ascii", "junk-bytes", "bad-padding", "wrong-type"],
)
def test_parse_key_names_the_source_and_never_echoes_the_key(raw: object) -> None:
    with pytest.raises(TokenStorageError) as caught:
        parse_key(raw, source="the moon")  # type: ignore[arg-type]
    text = str(caught.value)
    assert "the moon" in text
    assert "malformed" in text
    assert "generate_key" in text
    if isinstance(raw, str) and raw:
        assert raw not in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# ---------------------------------------------------------------------------- private files


def test_ensure_private_dir_creates_0700_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ensure_private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "b") == 0o700


def test_ensure_private_dir_leaves_an_existing_folder_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o755)
    ensure_private_dir(folder)
    assert _mode(folder) == 0o755


def test_create_private_file_is_0600_and_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / "tokens.db"
    create_private_file(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    path.write_bytes(b"data")
    create_private_file(path)
    assert path.read_bytes() == b"data"


def test_create_private_file_is_0600_even_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        create_private_file(tmp_path / "journal.db")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "journal.db") == 0o600


def test_keys_reexports_the_shared_private_file_helpers() -> None:
    assert keys.create_private_file is _files.create_private_file
    assert keys.check_private_file is _files.check_private_file
    assert keys.ensure_private_dir is _files.ensure_private_dir


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o666, 0o620])
def test_check_private_file_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    _write_private(path, b"x", mode)
    with pytest.raises(TokenStorageError) as caught:
        check_private_file(path, path.stat(), what="key file")
    assert f"chmod 600 {path}" in str(caught.value)
    assert f"{mode:04o}" in str(caught.value)


def test_check_private_file_accepts_owner_only_modes(tmp_path: Path) -> None:
    for mode in (0o600, 0o400):
        path = tmp_path / f"ok{mode:o}"
        _write_private(path, b"x", mode)
        check_private_file(path, path.stat(), what="key file")


def test_check_private_file_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TokenStorageError, match="not a regular file"):
        check_private_file(tmp_path, tmp_path.stat(), what="token store")


# ---------------------------------------------------------------------------- key files


def test_key_file_is_created_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".token_key"
    key = load_or_create_key_file(path)
    Fernet(key)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().strip() == key
    assert load_or_create_key_file(path) == key
    assert _leftovers(path.parent) == []


def test_key_file_race_loser_uses_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".token_key"
    theirs = Fernet.generate_key()
    real_link = os.link

    def other_process_wins(src: str, dst: str) -> None:
        _write_private(Path(dst), theirs + b"\n")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", other_process_wins)
    assert load_or_create_key_file(path) == theirs
    assert path.read_bytes().strip() == theirs
    assert _leftovers(tmp_path) == []


def test_existing_key_file_with_loose_mode_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    key = Fernet.generate_key()
    _write_private(path, key, 0o644)
    with pytest.raises(TokenStorageError, match=f"chmod 600 {path}"):
        load_or_create_key_file(path)
    assert path.read_bytes() == key


def test_malformed_key_file_names_the_file_and_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    _write_private(path, b"garbage\n")
    with pytest.raises(TokenStorageError, match=f"key file {path} is malformed"):
        load_or_create_key_file(path)
    assert path.read_bytes() == b"garbage\n"


def test_write_key_file_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    _write_private(path, Fernet.generate_key())
    fresh = Fernet.generate_key()
    write_key_file(path, fresh)
    assert path.read_bytes() == fresh + b"\n"
    assert _mode(path) == 0o600
    assert _leftovers(tmp_path) == []


def test_write_key_file_failure_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".token_key"
    old = Fernet.generate_key()
    _write_private(path, old)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_key_file(path, Fernet.generate_key())
    assert path.read_bytes() == old
    assert _leftovers(tmp_path) == []


def test_pending_key_stage_read_and_absent(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    assert pending_key_path(path) == tmp_path / ".token_key.next"
    assert read_pending_key(path) is None
    fresh = Fernet.generate_key()
    stage_pending_key(path, fresh)
    assert read_pending_key(path) == fresh
    assert _mode(pending_key_path(path)) == 0o600


# ---------------------------------------------------------------------------- resolve_key


def test_resolve_key_prefers_argument_then_env_then_file(tmp_path: Path) -> None:
    arg, env = Fernet.generate_key(), Fernet.generate_key().decode()
    key_file = tmp_path / ".token_key"
    by_arg = resolve_key(arg, env_key=env, key_file=key_file)
    assert (by_arg.key, by_arg.source, by_arg.path) == (arg, ARGUMENT_SOURCE, None)
    by_env = resolve_key(None, env_key=env, key_file=key_file)
    assert (by_env.key, by_env.source, by_env.path) == (env.encode(), ENV_SOURCE, None)
    assert not key_file.exists()
    by_file = resolve_key(None, env_key=None, key_file=key_file)
    assert by_file.source == f"key file {key_file}"
    assert by_file.path == key_file
    assert key_file.read_bytes().strip() == by_file.key


def test_resolved_key_repr_hides_the_key() -> None:
    key = Fernet.generate_key()
    assert key.decode() not in repr(ResolvedKey(key, ARGUMENT_SOURCE))


def test_resolve_key_without_any_source_is_an_error() -> None:
    with pytest.raises(TokenStorageError, match="no encryption key"):
        resolve_key(None, env_key=None, key_file=None)


def test_resolve_key_translates_os_errors_naming_the_key_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    key_file = blocker / ".token_key"
    with pytest.raises(TokenStorageError) as caught:
        resolve_key(None, env_key=None, key_file=key_file)
    assert f"key file {key_file}" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


def test_key_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    key_file = tmp_path / ".token_key"
    os.mkfifo(key_file, 0o600)
    outcome: list[BaseException | bytes] = []

    def load() -> None:
        try:
            outcome.append(load_or_create_key_file(key_file))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # blocked in open(): give it a writer so the thread can finish
        os.close(os.open(key_file, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("opening a FIFO key file blocked")
    (error,) = outcome
    assert isinstance(error, TokenStorageError)
    assert "not a regular file" in str(error)


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / ".token_key"
    key_file.mkdir()
    with pytest.raises(TokenStorageError, match="not a regular file"):
        resolve_key(None, env_key=None, key_file=key_file)


# ---------------------------------------------------------------------------- KeyRing


def _ring(key: bytes | None = None, path: Path | None = None) -> KeyRing:
    return KeyRing(ResolvedKey(key or Fernet.generate_key(), "test source", path))


def test_keyring_roundtrip_and_verify_caches(tmp_path: Path) -> None:
    ring = _ring()
    assert ring.decrypt(ring.encrypt(b"hello")) == b"hello"
    check = ring.new_check()
    ring.verify(check, store=tmp_path / "db")
    ring.verify(check, store=tmp_path / "db")  # cached: no decrypt needed the second time


def test_keyring_refuses_a_missing_check_and_a_foreign_key(tmp_path: Path) -> None:
    ring = _ring()
    with pytest.raises(TokenStorageError, match="no key-check row"):
        ring.verify(None, store=tmp_path / "db")
    with pytest.raises(TokenStorageError, match="from test source does not match"):
        ring.verify(_ring().new_check(), store=tmp_path / "db")
    with pytest.raises(TokenStorageError, match="does not match"):
        ring.verify(12345, store=tmp_path / "db")  # type: ignore[arg-type]


def test_keyring_adopts_a_matching_pending_key(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    old, new = Fernet.generate_key(), Fernet.generate_key()
    _write_private(path, old)
    stage_pending_key(path, new)
    ring = _ring(old, path)
    ring.verify(Fernet(new).encrypt(keys.KEY_CHECK), store=tmp_path / "db")
    assert path.read_bytes().strip() == new
    assert ring.decrypt(Fernet(new).encrypt(b"x")) == b"x"


def test_keyring_follows_a_key_rotated_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    old, new = Fernet.generate_key(), Fernet.generate_key()
    _write_private(path, old)
    ring = _ring(old, path)
    ring.verify(Fernet(old).encrypt(keys.KEY_CHECK), store=tmp_path / "db")
    write_key_file(path, new)  # the other process's rotation, finished (step 3 done)
    ring.verify(Fernet(new).encrypt(keys.KEY_CHECK), store=tmp_path / "db")
    assert ring.decrypt(Fernet(new).encrypt(b"x")) == b"x"
    assert Fernet(new).decrypt(ring.encrypt(b"y")) == b"y"
    assert path.read_bytes().strip() == new


def test_keyring_tries_the_pending_key_after_an_unrelated_key_file(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    old, staged = Fernet.generate_key(), Fernet.generate_key()
    _write_private(path, Fernet.generate_key())  # replaced by a key that opens nothing
    stage_pending_key(path, staged)
    ring = _ring(old, path)
    ring.verify(Fernet(staged).encrypt(keys.KEY_CHECK), store=tmp_path / "db")
    assert path.read_bytes().strip() == staged


def test_keyring_with_its_key_file_gone_reports_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    ring = _ring(Fernet.generate_key(), path)
    with pytest.raises(TokenStorageError, match="does not match"):
        ring.verify(_ring().new_check(), store=tmp_path / "db")
    assert not path.exists()


@pytest.mark.parametrize("from_file", [True, False])
def test_keyring_mismatch_hint_never_suggests_discarding_the_store(
    tmp_path: Path, from_file: bool
) -> None:
    path = tmp_path / ".token_key"
    key = Fernet.generate_key()
    if from_file:
        _write_private(path, key)
    ring = _ring(key, path if from_file else None)
    with pytest.raises(TokenStorageError) as caught:
        ring.verify(_ring().new_check(), store=tmp_path / "tokens.db")
    hint = caught.value.hint or ""
    assert "away" not in hint
    assert "logout" in hint
    assert "no key needed" in hint
    assert (str(path) in hint) is from_file
    assert key.decode() not in str(caught.value)


def test_keyring_ignores_a_pending_key_that_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    old = Fernet.generate_key()
    _write_private(path, old)
    stage_pending_key(path, Fernet.generate_key())
    ring = _ring(old, path)
    with pytest.raises(TokenStorageError, match="does not match"):
        ring.verify(_ring().new_check(), store=tmp_path / "db")
    assert path.read_bytes() == old


def test_keyring_switch_without_key_file_only_changes_memory(tmp_path: Path) -> None:
    ring = _ring()
    fresh = Fernet.generate_key()
    check = ring.stage(fresh)
    ring.switch(fresh, check)
    ring.verify(check, store=tmp_path / "db")
    assert ring.decrypt(Fernet(fresh).encrypt(b"y")) == b"y"
    assert list(tmp_path.iterdir()) == []


def test_keyring_switch_reports_where_the_new_key_is_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".token_key"
    old, fresh = Fernet.generate_key(), Fernet.generate_key()
    _write_private(path, old)
    ring = _ring(old, path)
    check = ring.stage(fresh)

    def broken(path: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(keys, "commit_pending_key", broken)
    with pytest.raises(TokenStorageError) as caught:
        ring.switch(fresh, check)
    pending = pending_key_path(path)
    assert f"the new key is in {pending}" in str(caught.value)
    assert f"mv {pending} {path}" in str(caught.value)
    assert fresh.decode() not in str(caught.value)
    ring.verify(check, store=tmp_path / "db")  # the ring already uses the new key


def test_keyring_rotation_with_a_key_file_ends_with_the_new_key_in_place(tmp_path: Path) -> None:
    path = tmp_path / ".token_key"
    old, fresh = Fernet.generate_key(), Fernet.generate_key()
    _write_private(path, old)
    ring = _ring(old, path)
    rotated = ring.rotator(fresh).rotate(ring.encrypt(b"token"))
    assert Fernet(fresh).decrypt(rotated) == b"token"
    check = ring.stage(fresh)
    assert read_pending_key(path) == fresh
    assert path.read_bytes() == old  # step 1 leaves the key file alone
    ring.switch(fresh, check)
    assert path.read_bytes().strip() == fresh
    assert not pending_key_path(path).exists()
    assert _mode(path) == 0o600
