"""The encrypted SQLite token store (saga_magic.core.store)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.fernet import Fernet

from saga_magic.core import keys
from saga_magic.core.config import Settings
from saga_magic.core.errors import InputValidationError, TokenStorageError
from saga_magic.core.protocols import (
    CooldownKind,
    IEncryptedStore,
    IRefreshCoordinator,
    RefreshCooldown,
)
from saga_magic.core.store import MIGRATIONS, SQLiteEncryptedTokenStore
from saga_magic.core.types import TokenInfo, TokenStatus

Factory = Callable[..., SQLiteEncryptedTokenStore]

ACCESS = "eyJ0eXAiOiJKV1QifQ.eyJleHAiOjF9.sig-access-SECRET"
REFRESH = "0.AAAA-refresh-SECRET-token"


def _token(**extra: Any) -> dict[str, Any]:
    return {
        "token_type": "Bearer",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_in": 3600,
        "scope": "https://cognitiveservices.azure.com/.default offline_access",
        **extra,
    }


@contextlib.contextmanager
def _raw(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with _raw(path) as conn:
        return conn.execute("SELECT * FROM tokens ORDER BY user_id").fetchall()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key() -> str:
    return SQLiteEncryptedTokenStore.generate_key()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.db"


@pytest.fixture
def make_store(db_path: Path, key: str, fake_clock: Any) -> Iterator[Factory]:
    stores: list[SQLiteEncryptedTokenStore] = []

    def make(path: Path | None = None, **kwargs: Any) -> SQLiteEncryptedTokenStore:
        kwargs.setdefault("encryption_key", key)
        kwargs.setdefault("clock", fake_clock)
        store = SQLiteEncryptedTokenStore(path or db_path, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: Factory) -> SQLiteEncryptedTokenStore:
    return make_store()


# ---------------------------------------------------------------------------- basics


def test_implements_the_store_and_coordinator_protocols(store: SQLiteEncryptedTokenStore) -> None:
    assert isinstance(store, IEncryptedStore)
    assert isinstance(store, IRefreshCoordinator)


async def test_roundtrip_keeps_every_field_and_fills_expires_at(
    store: SQLiteEncryptedTokenStore, fake_clock: Any
) -> None:
    token = _token(id_token="id.tok.en", ext_expires_in=7200, nested={"a": [1, 2.5, None]})
    await store.save_token("alice", token)
    got = await store.get_token("alice")
    assert got == {**token, "expires_at": fake_clock() + 3600}


async def test_data_is_encrypted_at_rest(
    store: SQLiteEncryptedTokenStore, db_path: Path, key: str
) -> None:
    await store.save_token("alice", _token())
    store.close()
    for path in db_path.parent.iterdir():
        data = path.read_bytes()
        assert ACCESS.encode() not in data
        assert REFRESH.encode() not in data
    (row,) = _rows(db_path)
    assert json.loads(Fernet(key).decrypt(row[1]))["access_token"] == ACCESS


async def test_missing_user_returns_none(store: SQLiteEncryptedTokenStore) -> None:
    assert await store.get_token("nobody") is None
    assert await store.token_version("nobody") is None


async def test_update_replaces_the_token_and_bumps_the_version(
    store: SQLiteEncryptedTokenStore, fake_clock: Any
) -> None:
    first = fake_clock()
    await store.save_token("alice", _token(access_token="old"))
    v1 = await store.token_version("alice")
    fake_clock.advance(60)
    await store.save_token("alice", {"access_token": "new", "expires_at": first + 999})
    v2 = await store.token_version("alice")
    assert await store.get_token("alice") == {"access_token": "new", "expires_at": first + 999}
    assert v1 is not None
    assert v2 is not None
    assert v2 > v1
    (info,) = await store.list_tokens()
    assert (info.created_at, info.updated_at, info.expires_at) == (first, first + 60, first + 999)
    assert info.scopes == ()


async def test_versions_never_repeat_after_delete(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("alice", _token())
    before = await store.token_version("alice")
    assert await store.delete_token("alice") is True
    await store.save_token("alice", _token())
    after = await store.token_version("alice")
    assert before is not None
    assert after is not None
    assert after > before


async def test_delete_token(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("alice", _token())
    assert await store.delete_token("alice") is True
    assert await store.delete_token("alice") is False
    assert await store.get_token("alice") is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"expires_at": 1_800_000_000.5, "expires_in": 10}, 1_800_000_000.5),
        ({"expires_at": 1_800_000_000}, 1_800_000_000.0),
        ({"expires_in": "3599"}, 1_700_000_000.0 + 3599),
        ({"expires_in": 0}, 1_700_000_000.0),
        ({}, None),
        ({"expires_at": None, "expires_in": None}, None),
    ],
)
async def test_expiry_from_expires_at_or_expires_in(
    store: SQLiteEncryptedTokenStore, fields: dict[str, Any], expected: float | None
) -> None:
    await store.save_token("u", {"access_token": "a", **fields})
    got = await store.get_token("u")
    assert got is not None
    assert got["expires_at"] == expected
    (info,) = await store.list_tokens()
    assert info.expires_at == expected


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "user_id",
    ["", "   ", "x" * 257, "nul\x00byte", None, 42],
    ids=["empty", "blank", "too-long", "nul", "none", "int"],
)
async def test_bad_user_ids_are_refused_everywhere(
    store: SQLiteEncryptedTokenStore, db_path: Path, user_id: Any
) -> None:
    calls = [
        store.save_token(user_id, _token()),
        store.get_token(user_id),
        store.delete_token(user_id),
        store.token_version(user_id),
        store.try_acquire_lease(user_id, owner="o", ttl=1, now=0),
        store.release_lease(user_id, owner="o"),
        store.get_cooldown(user_id, now=0),
        store.set_cooldown(user_id, None),
        store.set_relogin_required(user_id, True),
    ]
    for call in calls:
        with pytest.raises(InputValidationError, match="user_id"):
            await call
    assert not db_path.exists()


async def test_user_id_of_256_characters_is_fine(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("u" * 256, _token())
    assert await store.get_token("u" * 256) is not None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (["access_token", "x"], "mapping"),
        ({}, "access_token"),
        ({"access_token": ""}, "access_token"),
        ({"access_token": 5}, "access_token"),
        ({"access_token": "a", "refresh_token": ""}, "refresh_token"),
        ({"access_token": "a", "refresh_token": 7}, "refresh_token"),
        ({"access_token": "a", "scope": ["x"]}, "scope"),
        ({"access_token": "a", "expires_in": "soon"}, "expires_in"),
        ({"access_token": "a", "expires_in": True}, "expires_in"),
        ({"access_token": "a", "expires_in": float("inf")}, "expires_in"),
        ({"access_token": "a", "expires_in": 10**400}, "expires_in"),
        ({"access_token": "a", "expires_at": float("nan")}, "expires_at"),
        ({"access_token": "a", "expires_at": [1]}, "expires_at"),
        ({"access_token": "a", "blob": b"bytes"}, "JSON"),
        ({"access_token": "a", "f": float("nan")}, "JSON"),
        ({"access_token": "a", "s": "\ud800"}, "JSON"),
    ],
)
async def test_bad_tokens_are_refused_and_nothing_is_written(
    store: SQLiteEncryptedTokenStore, db_path: Path, token: Any, message: str
) -> None:
    await store.save_token("alice", _token())
    before = _rows(db_path)
    with pytest.raises(InputValidationError, match=message) as caught:
        await store.save_token("alice", token)
    assert "SECRET" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert _rows(db_path) == before


def test_negative_busy_timeout_is_refused(db_path: Path, key: str) -> None:
    with pytest.raises(InputValidationError, match="busy_timeout"):
        SQLiteEncryptedTokenStore(db_path, encryption_key=key, busy_timeout=-1)


# ---------------------------------------------------------------------------- unicode, size


async def test_special_characters_in_user_ids_and_tokens(store: SQLiteEncryptedTokenStore) -> None:
    users = ["jürgen@contoso.com", "x'; DROP TABLE tokens; --", "名前", 'a"b\\c\n', "🙂"]
    for index, user in enumerate(users):
        token = _token(access_token=f"tök€n-{index}-🙂\u0000\t\"'", note="Ω≈ç√∫\u2028")
        await store.save_token(user, token)
        got = await store.get_token(user)
        assert got is not None
        assert got["access_token"] == token["access_token"]
        assert got["note"] == token["note"]
    assert [info.user_id for info in await store.list_tokens()] == sorted(users)


async def test_large_token_of_one_megabyte(store: SQLiteEncryptedTokenStore) -> None:
    big = "A" * (1024 * 1024)
    await store.save_token("alice", _token(access_token=big))
    got = await store.get_token("alice")
    assert got is not None
    assert got["access_token"] == big


# ---------------------------------------------------------------------------- key sources


async def test_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path, db_path: Path, key: str
) -> None:
    monkeypatch.setenv("ARC_SAGA_TOKEN_ENCRYPTION_KEY", key)
    with SQLiteEncryptedTokenStore(db_path) as store:
        assert store.key_source == "ARC_SAGA_TOKEN_ENCRYPTION_KEY"
        await store.save_token("alice", _token())
    assert not (isolated_env / ".token_key").exists()
    with SQLiteEncryptedTokenStore(db_path, encryption_key=key.encode()) as same_key:
        assert (await same_key.get_token("alice") or {})["access_token"] == ACCESS


async def test_key_from_an_existing_key_file(tmp_path: Path, db_path: Path, key: str) -> None:
    key_file = tmp_path / "keys" / "mine"
    key_file.parent.mkdir()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    with SQLiteEncryptedTokenStore(db_path, key_path=key_file) as store:
        assert store.key_source == f"key file {key_file}"
        await store.save_token("alice", _token())
    with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as same_key:
        assert await same_key.get_token("alice") is not None


async def test_defaults_come_from_settings_and_the_key_file_is_generated(
    isolated_env: Path,
) -> None:
    assert not isolated_env.exists()
    with SQLiteEncryptedTokenStore() as store:
        assert store.db_path == isolated_env / "tokens.db"
        await store.save_token("alice", _token())
    key_file = isolated_env / ".token_key"
    assert store.key_source == f"key file {key_file}"
    assert _mode(isolated_env) == 0o700
    assert _mode(key_file) == 0o600
    assert _mode(isolated_env / "tokens.db") == 0o600
    Fernet(key_file.read_bytes().strip())
    with SQLiteEncryptedTokenStore() as again:  # reuses the same key file
        assert (await again.get_token("alice") or {})["access_token"] == ACCESS


async def test_explicit_settings_are_used_without_reading_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://not-loopback.example")  # from_env would fail
    settings = Settings(
        home=tmp_path / "h", token_store_path=tmp_path / "h" / "t.db", journal_path=tmp_path / "j"
    ).with_overrides(encryption_key=key)
    with SQLiteEncryptedTokenStore(settings=settings) as store:
        assert store.db_path == tmp_path / "h" / "t.db"
        assert store.key_source == "ARC_SAGA_TOKEN_ENCRYPTION_KEY"
        await store.save_token("alice", _token())


def test_explicit_path_and_key_need_no_settings(
    monkeypatch: pytest.MonkeyPatch, db_path: Path, key: str
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://not-loopback.example")
    SQLiteEncryptedTokenStore(db_path, encryption_key=key).close()


def test_generate_key_is_a_fresh_fernet_key() -> None:
    first, second = (
        SQLiteEncryptedTokenStore.generate_key(),
        SQLiteEncryptedTokenStore.generate_key(),
    )
    assert first != second
    Fernet(first)


@pytest.mark.parametrize("bad", ["not-a-key", "", b"\x00" * 44])
def test_malformed_argument_key_is_refused_at_construction(db_path: Path, bad: Any) -> None:
    with pytest.raises(TokenStorageError, match="from encryption_key argument is malformed"):
        SQLiteEncryptedTokenStore(db_path, encryption_key=bad)
    assert not db_path.exists()


def test_malformed_env_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    monkeypatch.setenv("ARC_SAGA_TOKEN_ENCRYPTION_KEY", "hunter2-not-fernet")
    with pytest.raises(TokenStorageError) as caught:
        SQLiteEncryptedTokenStore(db_path)
    assert "from ARC_SAGA_TOKEN_ENCRYPTION_KEY is malformed" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_malformed_key_file_names_the_file(isolated_env: Path, db_path: Path) -> None:
    isolated_env.mkdir(mode=0o700)
    key_file = isolated_env / ".token_key"
    key_file.write_text("oops")
    key_file.chmod(0o600)
    with pytest.raises(TokenStorageError, match=f"from key file {key_file} is malformed"):
        SQLiteEncryptedTokenStore(db_path)
    assert key_file.read_text() == "oops"


def test_key_file_with_loose_permissions_is_refused_with_a_chmod_hint(
    isolated_env: Path, db_path: Path, key: str
) -> None:
    isolated_env.mkdir()
    key_file = isolated_env / ".token_key"
    key_file.write_text(key)
    key_file.chmod(0o644)
    with pytest.raises(TokenStorageError) as caught:
        SQLiteEncryptedTokenStore(db_path)
    assert f"chmod 600 {key_file}" in str(caught.value)
    assert key not in str(caught.value)


# ---------------------------------------------------------------------------- wrong key


async def _seed(make_store: Factory, users: tuple[str, ...] = ("alice", "bob")) -> None:
    seeded = make_store()
    for user in users:
        await seeded.save_token(user, _token(access_token=f"at-{user}"))
    seeded.close()


def _snapshot(db_path: Path) -> bytes:
    return db_path.read_bytes()


async def test_wrong_key_is_refused_and_never_touches_rows(
    make_store: Factory, db_path: Path
) -> None:
    await _seed(make_store)
    before_bytes, before_rows = _snapshot(db_path), _rows(db_path)
    wrong = make_store(encryption_key=SQLiteEncryptedTokenStore.generate_key())
    for call in (
        wrong.get_token("alice"),
        wrong.get_token("nobody"),
        wrong.save_token("carol", _token()),
        wrong.save_token("alice", _token()),
        wrong.rotate_key(SQLiteEncryptedTokenStore.generate_key()),
    ):
        with pytest.raises(TokenStorageError, match="from encryption_key argument does not match"):
            await call
    wrong.close()
    assert _rows(db_path) == before_rows
    assert _snapshot(db_path) == before_bytes


async def test_wrong_key_can_still_list_and_delete(make_store: Factory) -> None:
    await _seed(make_store)
    wrong = make_store(encryption_key=SQLiteEncryptedTokenStore.generate_key())
    assert [info.user_id for info in await wrong.list_tokens()] == ["alice", "bob"]
    assert await wrong.delete_token("alice") is True


async def test_wrong_key_from_env_names_the_variable(
    make_store: Factory, monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    await _seed(make_store)
    monkeypatch.setenv("ARC_SAGA_TOKEN_ENCRYPTION_KEY", SQLiteEncryptedTokenStore.generate_key())
    with (
        SQLiteEncryptedTokenStore(db_path) as store,
        pytest.raises(TokenStorageError, match="from ARC_SAGA_TOKEN_ENCRYPTION_KEY does not"),
    ):
        await store.get_token("alice")


async def test_wrong_key_from_key_file_names_the_file(
    make_store: Factory, isolated_env: Path, db_path: Path
) -> None:
    await _seed(make_store)
    with (
        SQLiteEncryptedTokenStore(db_path) as store,  # generates a new, unrelated key file
        pytest.raises(TokenStorageError) as caught,
    ):
        await store.get_token("alice")
    assert f"from key file {isolated_env / '.token_key'} does not match" in str(caught.value)
    assert str(db_path) in str(caught.value)


async def test_missing_key_check_row_is_refused(
    make_store: Factory, store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token())
    store.close()
    with _raw(db_path) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'key_check'")
    reopened = make_store()  # tokens exist: the migration must not invent a new key check
    with pytest.raises(TokenStorageError, match="no key-check row"):
        await reopened.get_token("alice")
    with _raw(db_path) as conn:
        assert conn.execute("SELECT 1 FROM meta WHERE key = 'key_check'").fetchone() is None


# ---------------------------------------------------------------------------- corruption


async def test_corrupt_row_fails_for_that_user_only(
    store: SQLiteEncryptedTokenStore, db_path: Path, key: str
) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        await store.save_token(user, _token(access_token=f"at-{user}"))
    with _raw(db_path) as conn:
        conn.execute("UPDATE tokens SET encrypted_data = ? WHERE user_id = 'alice'", (b"junk",))
        conn.execute("UPDATE tokens SET encrypted_data = 42 WHERE user_id = 'bob'")
        not_json = Fernet(key).encrypt(b"\xff not json")
        conn.execute("UPDATE tokens SET encrypted_data = ? WHERE user_id = 'carol'", (not_json,))
        a_list = Fernet(key).encrypt(b"[1, 2]")
        conn.execute("UPDATE tokens SET encrypted_data = ? WHERE user_id = 'dave'", (a_list,))
    await store.save_token("erin", _token(access_token="at-erin"))
    for user in ("alice", "bob", "carol", "dave"):
        with pytest.raises(TokenStorageError, match=f"user '{user}'.*corrupt"):
            await store.get_token(user)
    assert (await store.get_token("erin") or {})["access_token"] == "at-erin"


# ---------------------------------------------------------------------------- file and DB failures


async def test_db_is_created_0600_in_a_0700_folder(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token())
    assert _mode(db_path) == 0o600
    assert _mode(db_path.parent) == 0o700
    for sidecar in db_path.parent.glob("tokens.db-*"):
        assert _mode(sidecar) & 0o077 == 0


async def test_db_with_loose_permissions_is_refused_until_fixed(
    make_store: Factory, db_path: Path
) -> None:
    await _seed(make_store)
    db_path.chmod(0o644)
    store = make_store()
    with pytest.raises(TokenStorageError) as caught:
        await store.list_tokens()
    assert f"chmod 600 {db_path}" in str(caught.value)
    db_path.chmod(0o600)
    assert len(await store.list_tokens()) == 2  # the next call opens it


async def test_db_path_that_is_a_directory(make_store: Factory, tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(TokenStorageError, match="not a regular file"):
        await make_store(folder).save_token("alice", _token())


async def test_db_folder_that_is_a_file(make_store: Factory, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    path = blocker / "tokens.db"
    with pytest.raises(TokenStorageError) as caught:
        await make_store(path).save_token("alice", _token())
    assert str(path) in str(caught.value)
    assert "save token failed" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


async def test_file_that_is_not_sqlite(make_store: Factory, db_path: Path) -> None:
    db_path.parent.mkdir(mode=0o700)
    db_path.write_bytes(b"this is not a database, " * 100)
    db_path.chmod(0o600)
    with pytest.raises(TokenStorageError, match="DatabaseError") as caught:
        await make_store().get_token("alice")
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


async def test_failed_write_leaves_the_old_row_intact(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token(access_token="old"))
    version = await store.token_version("alice")
    with _raw(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER fail BEFORE UPDATE OF encrypted_data ON tokens "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with pytest.raises(TokenStorageError, match=r"save token failed.*injected failure") as caught:
        await store.save_token("alice", _token(access_token="new-SECRET"))
    assert "new-SECRET" not in str(caught.value)
    assert (await store.get_token("alice") or {})["access_token"] == "old"
    assert await store.token_version("alice") == version
    with _raw(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'version_seq'").fetchone() == (
            version,
        )


async def test_busy_database_waits_then_times_out_cleanly(
    make_store: Factory, store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token())
    impatient = make_store(busy_timeout=0.05)
    await impatient.list_tokens()
    with _raw(db_path) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(TokenStorageError, match="database is locked"):
            await impatient.save_token("alice", _token())
        blocker.execute("ROLLBACK")
    await impatient.save_token("alice", _token(access_token="later"))
    assert (await store.get_token("alice") or {})["access_token"] == "later"


# ---------------------------------------------------------------------------- concurrency


async def test_concurrent_saves_and_reads_in_one_process(
    store: SQLiteEncryptedTokenStore,
) -> None:
    async def save(i: int) -> None:
        await store.save_token(f"user{i % 5}", _token(access_token=f"at-{i}"))

    async def read(i: int) -> dict[str, Any] | None:
        return await store.get_token(f"user{i % 5}")

    results = await asyncio.gather(*(save(i) for i in range(50)), *(read(i) for i in range(50)))
    reads = [r for r in results if r is not None]
    assert all(r["access_token"].startswith("at-") for r in reads)
    assert len(await store.list_tokens()) == 5
    versions = [await store.token_version(f"user{i}") for i in range(5)]
    assert max(v or 0 for v in versions) == 50


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from saga_magic.core.store import SQLiteEncryptedTokenStore

    async def main(db, worker):
        with SQLiteEncryptedTokenStore(db, busy_timeout=30) as store:
            for i in range(25):
                token = {"access_token": f"at-{worker}-{i}", "expires_in": 3600}
                await store.save_token(f"user-{worker}-{i}", token)
                await store.save_token("shared", token)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def _check_all_rows(db_path: Path, key: str) -> None:
    with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as store:
        infos = await store.list_tokens()
        assert len(infos) == 4 * 25 + 1
        for info in infos:
            token = await store.get_token(info.user_id)
            assert token is not None
            assert token["access_token"].startswith("at-")


@pytest.mark.slow
def test_concurrent_saves_from_four_processes(db_path: Path, key: str) -> None:
    env = {**os.environ, "ARC_SAGA_TOKEN_ENCRYPTION_KEY": key}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(db_path), str(worker)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for worker in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err
    asyncio.run(_check_all_rows(db_path, key))
    with _raw(db_path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'version_seq'").fetchone() == (200,)
        assert conn.execute("SELECT COUNT(*) FROM _migrations").fetchone() == (len(MIGRATIONS),)


# ---------------------------------------------------------------------------- rotation


async def test_rotate_key_roundtrip_and_old_key_refused(
    make_store: Factory, store: SQLiteEncryptedTokenStore, db_path: Path, key: str
) -> None:
    for user in ("alice", "bob"):
        await store.save_token(user, _token(access_token=f"at-{user}"))
    infos, versions = await store.list_tokens(), [await store.token_version("alice")]
    new_key = SQLiteEncryptedTokenStore.generate_key()
    await store.rotate_key(new_key)
    assert (await store.get_token("bob") or {})["access_token"] == "at-bob"
    assert await store.list_tokens() == infos
    assert [await store.token_version("alice")] == versions
    await store.save_token("carol", _token())
    store.close()
    for row in _rows(db_path):
        json.loads(Fernet(new_key).decrypt(row[1]))
    with pytest.raises(TokenStorageError, match="does not match"):
        await make_store(encryption_key=key).get_token("alice")
    assert (await make_store(encryption_key=new_key).get_token("alice") or {})["access_token"] == (
        "at-alice"
    )


async def test_rotate_key_on_an_empty_store(make_store: Factory) -> None:
    store = make_store()
    new_key = SQLiteEncryptedTokenStore.generate_key()
    await store.rotate_key(new_key)
    await store.save_token("alice", _token())
    assert await make_store(encryption_key=new_key).get_token("alice") is not None


async def test_rotate_key_refuses_a_malformed_new_key(store: SQLiteEncryptedTokenStore) -> None:
    with pytest.raises(TokenStorageError, match="from new_key argument is malformed"):
        await store.rotate_key("nope")


async def test_rotation_with_a_corrupt_row_changes_nothing(
    make_store: Factory, store: SQLiteEncryptedTokenStore, db_path: Path, key: str
) -> None:
    for user in ("alice", "bob", "carol"):
        await store.save_token(user, _token(access_token=f"at-{user}"))
    with _raw(db_path) as conn:
        conn.execute("UPDATE tokens SET encrypted_data = ? WHERE user_id = 'bob'", (b"junk",))
    before = _rows(db_path)
    with pytest.raises(TokenStorageError, match="user 'bob' is corrupt; nothing was changed"):
        await store.rotate_key(SQLiteEncryptedTokenStore.generate_key())
    assert _rows(db_path) == before
    assert (await make_store(encryption_key=key).get_token("carol") or {})["access_token"] == (
        "at-carol"
    )


async def test_rotation_that_fails_in_sqlite_changes_nothing(
    isolated_env: Path, db_path: Path
) -> None:
    with SQLiteEncryptedTokenStore(db_path) as store:
        await store.save_token("alice", _token())
    key_file = isolated_env / ".token_key"
    old_key = key_file.read_bytes()
    before = _rows(db_path)
    with _raw(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER fail BEFORE UPDATE ON meta WHEN OLD.key = 'key_check' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with SQLiteEncryptedTokenStore(db_path) as store:
        with pytest.raises(TokenStorageError, match="rotate key failed"):
            await store.rotate_key(SQLiteEncryptedTokenStore.generate_key())
        assert (await store.get_token("alice") or {})["access_token"] == ACCESS
    assert _rows(db_path) == before
    assert key_file.read_bytes() == old_key


async def test_rotation_rewrites_the_key_file(isolated_env: Path) -> None:
    with SQLiteEncryptedTokenStore() as store:
        await store.save_token("alice", _token())
        new_key = SQLiteEncryptedTokenStore.generate_key()
        await store.rotate_key(new_key)
    key_file = isolated_env / ".token_key"
    assert key_file.read_text().strip() == new_key
    assert _mode(key_file) == 0o600
    assert not keys.pending_key_path(key_file).exists()
    with SQLiteEncryptedTokenStore() as again:
        assert (await again.get_token("alice") or {})["access_token"] == ACCESS


async def test_crash_between_commit_and_key_file_update_is_recovered(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.environ["ARC_SAGA_HOME"] == str(isolated_env)
    key_file = isolated_env / ".token_key"
    with SQLiteEncryptedTokenStore() as store:
        await store.save_token("alice", _token())
        old_key = key_file.read_bytes()
        new_key = SQLiteEncryptedTokenStore.generate_key()

        def crash(path: Path) -> None:
            raise OSError(5, "Input/output error")

        with monkeypatch.context() as patch:  # not monkeypatch.undo(): that drops ARC_SAGA_HOME
            patch.setattr(keys, "commit_pending_key", crash)
            with pytest.raises(TokenStorageError, match=r"now uses the new key.*\.next") as caught:
                await store.rotate_key(new_key)
        assert new_key not in str(caught.value)
        assert (await store.get_token("alice") or {})["access_token"] == ACCESS
    assert key_file.read_bytes() == old_key  # the "crash" left the old key in place
    with SQLiteEncryptedTokenStore() as recovering:
        assert (await recovering.get_token("alice") or {})["access_token"] == ACCESS
    assert key_file.read_text().strip() == new_key


async def test_stale_pending_key_from_a_crash_before_commit_is_ignored(
    isolated_env: Path,
) -> None:
    with SQLiteEncryptedTokenStore() as store:
        await store.save_token("alice", _token())
    key_file = isolated_env / ".token_key"
    keys.stage_pending_key(key_file, Fernet.generate_key())
    with SQLiteEncryptedTokenStore() as store:
        assert await store.get_token("alice") is not None


async def test_a_key_rotated_by_another_process_is_followed(isolated_env: Path) -> None:
    # /tmp/r6.py: every other long-running store broke once the key file was rotated
    with SQLiteEncryptedTokenStore() as rotating, SQLiteEncryptedTokenStore() as other:
        await rotating.save_token("alice", _token())
        assert await other.get_token("alice") is not None
        new_key = SQLiteEncryptedTokenStore.generate_key()
        await rotating.rotate_key(new_key)
        assert (await other.get_token("alice") or {})["access_token"] == ACCESS
        await other.save_token("bob", _token(access_token="at-bob"))
        assert (await rotating.get_token("bob") or {})["access_token"] == "at-bob"
    assert (isolated_env / ".token_key").read_text().strip() == new_key
    with SQLiteEncryptedTokenStore() as fresh:
        assert await fresh.get_token("bob") is not None


def _ciphertexts(db_path: Path) -> list[bytes]:
    with _raw(db_path) as conn:
        blobs = [row[0] for row in conn.execute("SELECT encrypted_data FROM tokens")]
        blobs.append(conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()[0])
    return blobs


def _on_disk(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def _leftovers_of(blobs: list[bytes], data: bytes, chunk: int = 48) -> list[bytes]:
    # Ciphertext is random: any 48-byte run of an old blob found on disk is a leftover of it,
    # whether the blob sat in one page or was split over overflow pages.
    return [
        blob[i : i + chunk]
        for blob in blobs
        for i in range(0, len(blob) - chunk, chunk)
        if blob[i : i + chunk] in data
    ]


async def test_rotation_leaves_no_old_ciphertext_on_disk(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    for user in ("alice", "bob"):
        await store.save_token(user, _token(access_token=f"at-{user}"))
    await store.save_token("big", _token(access_token="x" * 20_000))  # overflow pages
    await store.save_token("alice", _token(access_token="at-alice-2"))  # an older version too
    old = _ciphertexts(db_path)
    assert _leftovers_of(old, _on_disk(db_path))  # the check can see them
    await store.rotate_key(SQLiteEncryptedTokenStore.generate_key())
    assert _leftovers_of(old, _on_disk(db_path)) == []
    assert (await store.get_token("alice") or {})["access_token"] == "at-alice-2"
    assert await store.get_token("big") is not None


async def test_store_connections_zero_freed_content(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token(access_token="y" * 20_000))
    old = _ciphertexts(db_path)[:1]
    assert await store.delete_token("alice") is True
    store.close()  # the last connection checkpoints the WAL into the file
    assert _leftovers_of(old, _on_disk(db_path)) == []


async def test_rotation_reports_pages_it_could_not_purge_and_a_second_one_does(
    make_store: Factory, db_path: Path
) -> None:
    store = make_store(busy_timeout=0)
    await store.save_token("alice", _token())
    old = _ciphertexts(db_path)
    new_key = SQLiteEncryptedTokenStore.generate_key()
    with _raw(db_path) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM tokens").fetchone()  # holds an old snapshot
        with pytest.raises(TokenStorageError, match="now uses the new key") as caught:
            await store.rotate_key(new_key)
        reader.execute("COMMIT")
    assert "rotate again" in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert new_key not in str(caught.value)
    assert (await store.get_token("alice") or {})["access_token"] == ACCESS  # on the new key
    await store.rotate_key(new_key)
    assert _leftovers_of(old, _on_disk(db_path)) == []
    assert (await make_store(encryption_key=new_key).get_token("alice")) is not None


# ---------------------------------------------------------------------------- leases


async def test_lease_acquire_contend_renew_expire_takeover_release(
    store: SQLiteEncryptedTokenStore,
) -> None:
    assert await store.try_acquire_lease("alice", owner="A", ttl=30, now=1000) is True
    assert await store.try_acquire_lease("alice", owner="B", ttl=30, now=1010) is False
    assert await store.try_acquire_lease("alice", owner="A", ttl=30, now=1020) is True  # renew
    assert await store.try_acquire_lease("alice", owner="B", ttl=30, now=1049.9) is False
    assert await store.try_acquire_lease("alice", owner="B", ttl=30, now=1050) is True  # expired
    await store.release_lease("alice", owner="A")  # not A's any more: ignored
    assert await store.try_acquire_lease("alice", owner="C", ttl=30, now=1051) is False
    await store.release_lease("alice", owner="B")
    assert await store.try_acquire_lease("alice", owner="C", ttl=30, now=1052) is True
    assert await store.try_acquire_lease("bob", owner="B", ttl=30, now=1052) is True  # per user


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
async def test_lease_ttl_must_be_positive(store: SQLiteEncryptedTokenStore, ttl: float) -> None:
    with pytest.raises(InputValidationError, match="ttl"):
        await store.try_acquire_lease("alice", owner="A", ttl=ttl, now=0)


async def test_leases_work_without_a_token_row_and_with_a_wrong_key(
    make_store: Factory,
) -> None:
    await _seed(make_store)
    wrong = make_store(encryption_key=SQLiteEncryptedTokenStore.generate_key())
    assert await wrong.try_acquire_lease("nobody", owner="A", ttl=5, now=0) is True


async def test_lease_holder_is_the_owner_of_a_live_lease(store: SQLiteEncryptedTokenStore) -> None:
    assert await store.lease_holder("alice", now=1000) is None
    assert await store.try_acquire_lease("alice", owner="A", ttl=30, now=1000) is True
    assert await store.lease_holder("alice", now=1029.9) == "A"
    assert await store.lease_holder("alice", now=1030) is None  # expired at or before now
    assert await store.lease_holder("bob", now=1000) is None
    await store.release_lease("alice", owner="A")
    assert await store.lease_holder("alice", now=1000) is None
    with pytest.raises(InputValidationError):
        await store.lease_holder("", now=0)


async def test_lease_holder_is_a_plain_read_that_never_waits_for_writers(
    make_store: Factory, db_path: Path
) -> None:
    store = make_store(busy_timeout=0)
    assert await store.try_acquire_lease("alice", owner="A", ttl=30, now=1000) is True
    with _raw(db_path) as writer:
        writer.execute("BEGIN IMMEDIATE")  # another process is writing
        assert await store.lease_holder("alice", now=1001) == "A"
        with pytest.raises(TokenStorageError, match="locked"):
            await store.try_acquire_lease("alice", owner="B", ttl=30, now=1001)
        writer.execute("ROLLBACK")


async def test_leases_and_cooldowns_need_no_key(make_store: Factory) -> None:
    await _seed(make_store)
    wrong = make_store(encryption_key=SQLiteEncryptedTokenStore.generate_key())
    assert await wrong.try_acquire_lease("alice", owner="A", ttl=5, now=0) is True
    assert await wrong.lease_holder("alice", now=1) == "A"
    await wrong.release_lease("alice", owner="A")
    await wrong.set_cooldown(
        "alice", RefreshCooldown(until=9.0, error_kind="transient", message="")
    )
    await wrong.set_relogin_required("alice", True)
    assert await wrong.get_cooldown("alice", now=0) is not None


# ---------------------------------------------------------------------------- cool-down, re-login


async def test_cooldown_set_get_expire_clear(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("alice", _token())
    assert await store.get_cooldown("alice", now=0) is None
    cooldown = RefreshCooldown(
        until=2000.0, error_kind="rate_limit", message="throttled", retry_after=60.0
    )
    await store.set_cooldown("alice", cooldown)
    assert await store.get_cooldown("alice", now=1999) == cooldown
    assert await store.get_cooldown("alice", now=2000) is None
    assert [info.cooldown_until for info in await store.list_tokens()] == [2000.0]
    await store.set_cooldown("alice", None)
    assert await store.get_cooldown("alice", now=0) is None
    assert [info.cooldown_until for info in await store.list_tokens()] == [None]


@pytest.mark.parametrize("kind", get_args(CooldownKind))
async def test_cooldown_accepts_every_kind_of_the_protocol(
    store: SQLiteEncryptedTokenStore, kind: CooldownKind
) -> None:
    await store.save_token("alice", _token())
    cooldown = RefreshCooldown(until=50.0, error_kind=kind, message=f"{kind} failure")
    await store.set_cooldown("alice", cooldown)
    assert await store.get_cooldown("alice", now=0) == cooldown


async def test_cooldown_keeps_the_status_and_code_of_the_failure(
    store: SQLiteEncryptedTokenStore,
) -> None:
    await store.save_token("alice", _token())
    cooldown = RefreshCooldown(
        until=50.0,
        error_kind="timeout",
        message="the token endpoint timed out",
        status=504,
        code="timeout",
    )
    await store.set_cooldown("alice", cooldown)
    assert await store.get_cooldown("alice", now=0) == cooldown
    permission = RefreshCooldown(
        until=60.0, error_kind="permission", message="m", status=403, code="c" * 300
    )
    await store.set_cooldown("alice", permission)
    got = await store.get_cooldown("alice", now=0)
    assert got is not None
    assert (got.status, got.code, got.error_kind) == (403, "c" * 200, "permission")
    await store.save_token("alice", _token())
    assert await store.get_cooldown("alice", now=0) is None
    await store.set_cooldown("alice", permission)
    await store.set_cooldown("alice", None)
    with _raw(store.db_path) as conn:
        row = conn.execute("SELECT cooldown_status, cooldown_code FROM tokens").fetchone()
    assert row == (None, None)


async def test_cooldown_is_cleared_by_a_save_and_truncated(
    store: SQLiteEncryptedTokenStore,
) -> None:
    await store.save_token("alice", _token())
    await store.set_cooldown(
        "alice", RefreshCooldown(until=10.0, error_kind="authentication", message="m" * 900)
    )
    got = await store.get_cooldown("alice", now=0)
    assert got is not None
    assert (len(got.message), got.retry_after, got.error_kind) == (500, None, "authentication")
    await store.save_token("alice", _token())
    assert await store.get_cooldown("alice", now=0) is None


async def test_cooldown_for_a_user_without_a_row_is_a_no_op(
    store: SQLiteEncryptedTokenStore,
) -> None:
    await store.set_cooldown(
        "ghost", RefreshCooldown(until=10.0, error_kind="transient", message="")
    )
    assert await store.get_cooldown("ghost", now=0) is None


async def test_cooldown_with_an_unknown_kind_in_the_db_reads_as_transient(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token())
    with _raw(db_path) as conn:
        conn.execute("UPDATE tokens SET cooldown_until = 10, cooldown_kind = 'weird'")
    got = await store.get_cooldown("alice", now=0)
    assert got == RefreshCooldown(until=10.0, error_kind="transient", message="")


@pytest.mark.parametrize(
    ("cooldown", "message"),
    [
        (RefreshCooldown(until=1.0, error_kind="bogus", message=""), "kind"),  # type: ignore[arg-type]
        (RefreshCooldown(until=float("nan"), error_kind="transient", message=""), "until"),
        (RefreshCooldown(until=1.0, error_kind="transient", message="", status=True), "status"),
        (
            RefreshCooldown(until=1.0, error_kind="transient", message="", status="429"),  # type: ignore[arg-type]
            "status",
        ),
        (
            RefreshCooldown(
                until=1.0, error_kind="transient", message="", retry_after=float("inf")
            ),
            "retry_after",
        ),
    ],
)
async def test_bad_cooldowns_are_refused(
    store: SQLiteEncryptedTokenStore, cooldown: RefreshCooldown, message: str
) -> None:
    with pytest.raises(InputValidationError, match=message):
        await store.set_cooldown("alice", cooldown)


async def test_relogin_flag_keeps_the_row_and_shows_in_list_tokens(
    store: SQLiteEncryptedTokenStore, db_path: Path, fake_clock: Any
) -> None:
    await store.save_token("alice", _token())
    await store.save_token("bob", _token())
    version = await store.token_version("alice")
    await store.set_relogin_required("alice", True)
    infos = {info.user_id: info for info in await store.list_tokens()}
    assert infos["alice"].relogin_required is True
    assert infos["alice"].status(now=fake_clock()) is TokenStatus.RELOGIN
    assert infos["bob"].status(now=fake_clock()) is TokenStatus.VALID
    assert (await store.get_token("alice") or {})["refresh_token"] == REFRESH
    assert await store.token_version("alice") == version
    assert SQLiteEncryptedTokenStore.read_token_infos(db_path) == list(infos.values())
    await store.set_relogin_required("alice", False)
    assert not (await store.list_tokens())[0].relogin_required
    await store.set_relogin_required("alice", True)
    await store.save_token("alice", _token())
    assert not (await store.list_tokens())[0].relogin_required
    await store.set_relogin_required("ghost", True)  # no row: nothing happens
    assert len(await store.list_tokens()) == 2


# ---------------------------------------------------------------------------- list / read infos


async def test_list_tokens_is_sorted_metadata(
    store: SQLiteEncryptedTokenStore, fake_clock: Any
) -> None:
    for user in ("carol", "alice", "bob"):
        await store.save_token(user, _token())
    infos = await store.list_tokens()
    assert [info.user_id for info in infos] == ["alice", "bob", "carol"]
    assert infos[0] == TokenInfo(
        user_id="alice",
        expires_at=fake_clock() + 3600,
        created_at=fake_clock(),
        updated_at=fake_clock(),
        scopes=("https://cognitiveservices.azure.com/.default", "offline_access"),
    )


def test_read_token_infos_of_a_missing_file(tmp_path: Path) -> None:
    assert SQLiteEncryptedTokenStore.read_token_infos(tmp_path / "nope.db") == []


def test_read_token_infos_of_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with _raw(path) as conn:
        conn.execute("CREATE TABLE other (x)")
    assert SQLiteEncryptedTokenStore.read_token_infos(path) == []


async def test_read_token_infos_is_read_only_and_key_free(
    store: SQLiteEncryptedTokenStore, db_path: Path
) -> None:
    await store.save_token("alice", _token())
    await store.try_acquire_lease("alice", owner="A", ttl=1, now=0)  # writer connection is open
    infos = SQLiteEncryptedTokenStore.read_token_infos(str(db_path))
    assert infos == await store.list_tokens()
    store.close()
    before = _rows(db_path)
    assert SQLiteEncryptedTokenStore.read_token_infos(db_path) == infos
    assert _rows(db_path) == before


def test_read_token_infos_errors_are_token_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenStorageError, match="cannot read the token store"):
        SQLiteEncryptedTokenStore.read_token_infos(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(TokenStorageError, match="DatabaseError"):
        SQLiteEncryptedTokenStore.read_token_infos(junk)


# ---------------------------------------------------------------------------- schema, lifecycle


async def test_migrations_are_recorded_once_and_wal_is_on(
    make_store: Factory, db_path: Path
) -> None:
    for _ in range(3):
        store = make_store()
        await store.list_tokens()
        store.close()
    with _raw(db_path) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM _migrations ORDER BY name")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert names == [name for name, _ in MIGRATIONS]
    assert {"tokens", "leases", "meta", "_migrations"} <= tables


_LEGACY_SCHEMA = (  # the schema 0001-0003 created before they were declared with sqlite-utils
    "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)",
    """CREATE TABLE tokens (
        user_id TEXT PRIMARY KEY, encrypted_data BLOB NOT NULL, expires_at REAL, scopes TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, version INTEGER NOT NULL,
        relogin_required INTEGER NOT NULL DEFAULT 0, cooldown_until REAL, cooldown_kind TEXT,
        cooldown_message TEXT, cooldown_retry_after REAL)""",
    "CREATE TABLE leases (user_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    "INSERT INTO meta (key, value) VALUES ('version_seq', 0)",
    "INSERT INTO _migrations VALUES ('0001_tokens', 1), ('0002_leases', 1), ('0003_meta', 1)",
)


def _columns(path: Path, table: str) -> list[tuple[Any, ...]]:
    with _raw(path) as conn:
        # (name, declared type affinity, not null, default, pk)
        return [
            (name, kind.upper().replace("FLOAT", "REAL") or "BLOB", notnull, default, pk)
            for _, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
        ]


async def test_a_database_from_the_previous_schema_is_upgraded_in_place(
    make_store: Factory, tmp_path: Path, key: str
) -> None:
    legacy = tmp_path / "legacy" / "tokens.db"
    legacy.parent.mkdir(mode=0o700)
    fernet = Fernet(key)
    with _raw(legacy) as conn:
        for statement in _LEGACY_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('key_check', ?)",
            (fernet.encrypt(keys.KEY_CHECK),),
        )
        conn.execute(
            "INSERT INTO tokens (user_id, encrypted_data, created_at, updated_at, version,"
            " cooldown_until, cooldown_kind, cooldown_message) VALUES (?, ?, 1, 1, 1, 9, ?, ?)",
            (
                "alice",
                fernet.encrypt(json.dumps({"access_token": ACCESS}).encode()),
                "transient",
                "m",
            ),
        )
    os.chmod(legacy, 0o600)
    store = make_store(legacy)
    assert await store.get_token("alice") == {"access_token": ACCESS}
    assert await store.get_cooldown("alice", now=0) == RefreshCooldown(
        until=9.0, error_kind="transient", message="m"
    )
    cooldown = RefreshCooldown(until=9.0, error_kind="rate_limit", message="m", status=429)
    await store.set_cooldown("alice", cooldown)
    assert await store.get_cooldown("alice", now=0) == cooldown
    store.close()
    fresh = make_store()
    await fresh.list_tokens()
    fresh.close()
    for table in ("tokens", "leases", "meta"):
        assert _columns(legacy, table) == _columns(fresh.db_path, table)
    with _raw(legacy) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [migration.name for migration in MIGRATIONS]


def test_the_store_imports_sqlite_utils_only_to_migrate(db_path: Path, key: str) -> None:
    with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as store:
        asyncio.run(store.list_tokens())  # creates and migrates the database
    probe = textwrap.dedent(
        """
        import asyncio, sys
        import saga_magic.core
        from saga_magic.core.store import SQLiteEncryptedTokenStore
        assert "sqlite_utils" not in sys.modules, "imported by the core"
        with SQLiteEncryptedTokenStore(sys.argv[1], encryption_key=sys.argv[2]) as store:
            asyncio.run(store.list_tokens())
        assert "sqlite_utils" not in sys.modules, "imported to open an up-to-date store"
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(db_path), key], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()


async def test_close_is_idempotent_and_later_calls_fail(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("alice", _token())
    store.close()
    store.close()
    with pytest.raises(TokenStorageError, match="is closed"):
        await store.get_token("alice")


def test_close_without_any_call(db_path: Path, key: str) -> None:
    SQLiteEncryptedTokenStore(db_path, encryption_key=key).close()
    assert not db_path.exists()


async def test_context_managers_close_the_store(db_path: Path, key: str) -> None:
    async with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as store:
        await store.save_token("alice", _token())
    with pytest.raises(TokenStorageError, match="is closed"):
        await store.list_tokens()
    with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as sync_store:
        pass
    with pytest.raises(TokenStorageError, match="is closed"):
        await sync_store.list_tokens()


async def test_aclose_waits_in_a_thread_while_the_event_loop_keeps_running(
    db_path: Path, key: str
) -> None:
    entered, release = threading.Event(), threading.Event()
    blocking = False

    def clock() -> float:
        in_worker = threading.current_thread().name.startswith("saga-token-store")
        if blocking and in_worker:  # the worker is stuck in a write, as if on a busy lock
            entered.set()
            release.wait(5)
        return 1_700_000_000.0

    store = SQLiteEncryptedTokenStore(db_path, encryption_key=key, clock=clock)
    await store.list_tokens()
    blocking = True
    save = asyncio.create_task(store.save_token("alice", _token()))
    assert await asyncio.to_thread(entered.wait, 5)
    closers = [asyncio.create_task(store.aclose()) for _ in range(2)]
    for _ in range(20):
        await asyncio.sleep(0)  # the loop runs: close() waits in another thread
    assert not any(closer.done() for closer in closers)
    release.set()
    await asyncio.gather(save, *closers)
    assert not any(t.name.startswith("saga-token-store") for t in threading.enumerate())
    with pytest.raises(TokenStorageError, match="is closed"):
        await store.get_token("alice")
    assert SQLiteEncryptedTokenStore.read_token_infos(db_path)[0].user_id == "alice"


async def test_async_context_manager_closes_with_aclose(
    db_path: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    async with SQLiteEncryptedTokenStore(db_path, encryption_key=key) as store:
        real = store.aclose

        async def spy() -> None:
            calls.append("aclose")
            await real()

        monkeypatch.setattr(store, "aclose", spy)
    assert calls == ["aclose"]
    await store.aclose()  # idempotent


async def test_one_store_serves_several_event_loops(store: SQLiteEncryptedTokenStore) -> None:
    await store.save_token("alice", _token())

    def in_another_loop() -> dict[str, Any] | None:
        return asyncio.run(store.get_token("alice"))

    got = await asyncio.to_thread(in_another_loop)
    assert got is not None


async def test_close_stops_the_worker_thread(db_path: Path, key: str) -> None:
    store = SQLiteEncryptedTokenStore(db_path, encryption_key=key)
    await store.save_token("alice", _token())
    assert any(t.name.startswith("saga-token-store") for t in threading.enumerate())
    store.close()
    assert not any(t.name.startswith("saga-token-store") for t in threading.enumerate())


async def test_paths_with_uri_characters(make_store: Factory, tmp_path: Path) -> None:
    path = tmp_path / "odd ?#% dïr" / "t?o#k.db"
    store = make_store(path)
    await store.save_token("alice", _token())
    assert store.db_path == path
    assert [i.user_id for i in SQLiteEncryptedTokenStore.read_token_infos(path)] == ["alice"]
