"""Issue 6 item 5: hostile files -> a clear TokenStorageError, and nothing overwritten.

Simulated here (tests run as root, so ``chmod``-based read-only folders do not bite):

* wrong key; random bytes instead of a database; a real database with random pages; one
  corrupt encrypted row; a database truncated at several lengths; loose file modes (store and
  key file); a store path that is a folder, or under a file;
* refused writes: an SQLite trigger that aborts every write to ``tokens``;
* a full disk: ``RLIMIT_FSIZE`` in a subprocess (with SIGXFSZ ignored), which binds root too;
  the same process also tries a refresh against the sandbox; and a refresh whose new token
  cannot be saved (a trigger refuses updates of the token row only);
* where the kernel allows it (skipped otherwise): a read-only folder through the immutable
  attribute (``chattr +i``), a read-only bind mount and a full tmpfs in a private mount
  namespace (``unshare -m``).

"Nothing overwritten": after every failure the database file is byte-for-byte what it was (or,
for write refusals inside a working database, every row still decrypts to what was saved).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from torture_helpers import WORKER, Report, Worker, sandbox_args, seed

from saga_magic.core.auth import EntraIDAuthManager
from saga_magic.core.errors import ArcSagaException, TokenStorageError
from saga_magic.core.store import SQLiteEncryptedTokenStore
from saga_magic.sandbox import Sandbox

pytestmark = pytest.mark.torture

USERS = ("hostile-a@contoso.com", "hostile-b@contoso.com")
NEW_TOKEN = {"access_token": "new-access-token-0123456789", "expires_in": 3600}
_OUTCOMES: dict[str, dict[str, Any]] = {}


async def attempt(call: Awaitable[Any]) -> str:
    """``ok``, or the exception's class name (anything but an ArcSagaException re-raises)."""
    try:
        await call
    except ArcSagaException as caught:
        error = caught
    else:
        return "ok"
    assert str(error), f"{type(error).__name__} without a message"
    assert error.hint, f"{type(error).__name__} without a hint"
    return type(error).__name__


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def key() -> str:
    return SQLiteEncryptedTokenStore.generate_key()


@pytest.fixture
async def db(tmp_path: Path, key: str) -> Path:
    """A checkpointed store with two users (closed: no WAL left beside it)."""
    path = tmp_path / "store" / "tokens.db"
    with SQLiteEncryptedTokenStore(path, encryption_key=key) as store:
        for user in USERS:
            await store.save_token(user, {"access_token": f"at-{user}", "refresh_token": "rt"})
    return path


async def rows(db: Path, key: str) -> dict[str, Any]:
    with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
        return {user: await store.get_token(user) for user in USERS}


async def every_operation(db: Path, key: str) -> dict[str, str]:
    """Run each store operation on ``db``; return the outcome of each."""
    with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
        outcomes = {
            "get_token": await attempt(store.get_token(USERS[0])),
            "save_token": await attempt(store.save_token(USERS[0], NEW_TOKEN)),
            "list_tokens": await attempt(store.list_tokens()),
            "rotate_key": await attempt(store.rotate_key(store.generate_key())),
        }
    try:
        SQLiteEncryptedTokenStore.read_token_infos(db)
        outcomes["read_token_infos"] = "ok"
    except TokenStorageError:
        outcomes["read_token_infos"] = "TokenStorageError"
    return outcomes


def record(case: str, **figures: Any) -> None:
    _OUTCOMES[case] = figures


@pytest.fixture(scope="module", autouse=True)
def _report_outcomes(report: Report) -> Iterator[None]:
    yield
    report("hostile_files", {"cases": len(_OUTCOMES), "outcomes": _OUTCOMES})


# -- keys and permissions -------------------------------------------------------------------------


async def test_wrong_key_reads_and_writes_nothing(db: Path, key: str) -> None:
    before = digest(db)
    outcomes = await every_operation(db, SQLiteEncryptedTokenStore.generate_key())
    record("wrong key", **outcomes, unchanged=digest(db) == before)
    assert outcomes == {
        "get_token": "TokenStorageError",
        "save_token": "TokenStorageError",
        "list_tokens": "ok",  # metadata is not encrypted (the TUI reads it without the key)
        "rotate_key": "TokenStorageError",
        "read_token_infos": "ok",
    }
    assert digest(db) == before
    assert (await rows(db, key))[USERS[0]]["access_token"] == f"at-{USERS[0]}"


@pytest.mark.parametrize("target", ["store", "key file"])
async def test_loose_permissions_are_refused(
    db: Path, key: str, tmp_path: Path, target: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(key)
    loose = db if target == "store" else key_file
    os.chmod(key_file, 0o600)
    os.chmod(loose, 0o644)
    before = digest(db)
    message = outcome = ""
    try:
        with SQLiteEncryptedTokenStore(db, key_path=key_file, settings=_settings(tmp_path)) as s:
            await s.get_token(USERS[0])
    except TokenStorageError as error:
        outcome, message = type(error).__name__, str(error)
    assert "chmod 600" in message
    record(f"loose mode 0644 on the {target}", get_token=outcome, unchanged=digest(db) == before)
    assert outcome == "TokenStorageError"
    assert digest(db) == before
    assert os.stat(loose).st_mode & 0o777 == 0o644  # reported, not silently "fixed"


def _settings(tmp_path: Path) -> Any:
    from saga_magic.core.config import Settings

    return Settings.from_env({"ARC_SAGA_HOME": str(tmp_path / "home")})


@pytest.mark.parametrize("shape", ["is a folder", "is under a file"])
async def test_a_path_that_cannot_be_a_store(tmp_path: Path, key: str, shape: str) -> None:
    if shape == "is a folder":
        path = tmp_path / "tokens.db"
        path.mkdir()
    else:
        (tmp_path / "plain").write_text("not a folder")
        path = tmp_path / "plain" / "tokens.db"
    outcomes = await every_operation(path, key)
    record(f"store path {shape}", **outcomes)
    # The key-free reader treats a path that cannot exist as "no store yet" (it returns []).
    reader = "TokenStorageError" if shape == "is a folder" else "ok"
    assert outcomes.pop("read_token_infos") == reader
    assert set(outcomes.values()) == {"TokenStorageError"}, outcomes


# -- corruption -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [512, 4096, 65536])
async def test_random_bytes_instead_of_a_database(tmp_path: Path, key: str, size: int) -> None:
    path = tmp_path / "tokens.db"
    path.write_bytes(random.Random(size).randbytes(size))
    os.chmod(path, 0o600)
    before = digest(path)
    outcomes = await every_operation(path, key)
    record(f"random bytes ({size} B)", **outcomes, unchanged=digest(path) == before)
    assert set(outcomes.values()) == {"TokenStorageError"}, outcomes
    assert digest(path) == before


async def test_random_pages_in_a_real_database(db: Path, key: str) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    rng = random.Random(7)
    for start in range(page, len(data), page):  # keep the header page, garble every other
        data[start : start + page] = rng.randbytes(page)
    db.write_bytes(bytes(data))
    before = digest(db)
    outcomes = await every_operation(db, key)
    record("random pages after the header", **outcomes, unchanged=digest(db) == before)
    assert set(outcomes.values()) == {"TokenStorageError"}, outcomes
    assert digest(db) == before


async def test_one_corrupt_row_spares_the_others(db: Path, key: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE tokens SET encrypted_data = ? WHERE user_id = ?", (b"gAAAAA-garbage", USERS[0])
        )
    conn.close()
    with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
        corrupt = await attempt(store.get_token(USERS[0]))
        other = await store.get_token(USERS[1])
        rotate = await attempt(store.rotate_key(store.generate_key()))
    record("one corrupt row", get_token=corrupt, other_user="ok", rotate_key=rotate)
    assert corrupt == rotate == "TokenStorageError"
    assert other is not None
    assert other["access_token"] == f"at-{USERS[1]}"


@pytest.mark.parametrize("keep", ["100 B", "1 page", "half", "all but 1 page"])
async def test_truncated_database(db: Path, key: str, keep: str) -> None:
    data = db.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    length = {"100 B": 100, "1 page": page, "half": len(data) // 2, "all but 1 page": -page}
    db.write_bytes(data[: length[keep]])
    before = digest(db)
    outcomes = await every_operation(db, key)
    record(f"truncated to {keep}", **outcomes, unchanged=digest(db) == before)
    assert set(outcomes.values()) == {"TokenStorageError"}, outcomes
    assert digest(db) == before


# -- refused writes -------------------------------------------------------------------------------


async def test_writes_refused_by_the_database(db: Path, key: str) -> None:
    saved = await rows(db, key)
    with sqlite3.connect(db) as conn:
        for action in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(
                f"CREATE TRIGGER refuse_{action.lower()} BEFORE {action} ON tokens "
                "BEGIN SELECT RAISE(ABORT, 'read-only store'); END"
            )
    conn.close()
    with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
        outcomes = {
            "save_token": await attempt(store.save_token(USERS[0], NEW_TOKEN)),
            "save_token_new_user": await attempt(store.save_token("new@contoso.com", NEW_TOKEN)),
            "delete_token": await attempt(store.delete_token(USERS[0])),
            "rotate_key": await attempt(store.rotate_key(store.generate_key())),
        }
    record("writes refused (SQLite trigger)", **outcomes)
    assert set(outcomes.values()) == {"TokenStorageError"}, outcomes
    assert await rows(db, key) == saved


async def test_full_disk(tmp_path: Path, key: str) -> None:
    """RLIMIT_FSIZE: the WAL cannot grow, so no write commits; reads keep working.

    A refresh fails at its first write (taking the refresh lease), before any POST: no refresh
    token is spent on an answer that could not be kept.
    """
    db = tmp_path / "store" / "tokens.db"
    user = USERS[0]
    with Sandbox(token_lifetime=3600) as sb:
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            saved = await seed(sb, store, user)
        posts = sb.post_count("token")
        args = {**sandbox_args(sb), "db": str(db), "key": key, "user": user}
        worker = Worker("store_ops", {**args, "new_token": NEW_TOKEN, "fsize_limit": 1024})
        try:
            outcomes = worker.receive(timeout=60)
        finally:
            worker.close()
        refreshed = sb.post_count("token") - posts
        after = (await rows(db, key))[user]
    record("full disk (RLIMIT_FSIZE)", **_summary(outcomes), token_posts=refreshed)
    assert outcomes["save"]["error"] == "TokenStorageError", outcomes
    assert outcomes["force_refresh"]["error"] == "TokenStorageError", outcomes
    assert outcomes["refresh_returned_token"] is False
    assert outcomes["read_after"] == {"ok": True}
    assert outcomes["row_unchanged"] is True
    assert refreshed == 0
    assert after is not None
    assert (after["access_token"], after["refresh_token"]) == (
        saved["access_token"],
        saved["refresh_token"],
    )


async def test_refreshed_token_that_cannot_be_saved(tmp_path: Path, key: str) -> None:
    """The lease works, the token row refuses writes: TokenPersistenceError, old row intact."""
    db = tmp_path / "store" / "tokens.db"
    user = USERS[0]
    with Sandbox(token_lifetime=3600) as sb:
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            saved = await seed(sb, store, user, expired=True)
        with sqlite3.connect(db) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON tokens "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        conn.close()
        posts = sb.post_count("token")
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            manager = EntraIDAuthManager(
                store,
                tenant_id=sb.tenant_id,
                client_id=sb.client_id,
                authority_host=sb.authority_host,
                max_retries=0,
            )
            try:
                first = await attempt(manager.get_valid_token(user))
                second = await attempt(manager.get_valid_token(user))
            finally:
                await manager.close()
            after = await store.get_token(user)
        refreshed = sb.post_count("token") - posts
    record(
        "refreshed, then the save failed",
        first_call=first,
        second_call=second,
        token_posts=refreshed,
        unchanged=after == saved | {"expires_at": after["expires_at"]} if after else False,
    )
    assert first == second == "TokenPersistenceError"
    # Nothing unsaved was kept in memory; the second call fails fast (PERSIST_COOLDOWN) instead
    # of minting, and discarding, another token.
    assert refreshed == 1
    assert after is not None
    assert (after["access_token"], after["refresh_token"]) == (
        saved["access_token"],
        saved["refresh_token"],
    )


def _summary(outcomes: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.get("error", "ok") if isinstance(value, dict) else value
        for name, value in outcomes.items()
    }


# -- where the kernel allows it: immutable files, read-only and full file systems -----------------


def _can(command: str) -> bool:
    try:
        done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def can_chattr(tmp_path_factory: pytest.TempPathFactory) -> bool:
    probe = tmp_path_factory.mktemp("chattr") / "probe"
    probe.write_text("x")
    quoted = shlex.quote(str(probe))
    return bool(shutil.which("chattr")) and _can(f"chattr +i {quoted} && chattr -i {quoted}")


@pytest.fixture(scope="module")
def can_mount() -> bool:
    return bool(shutil.which("unshare")) and _can(
        "unshare -m --propagation private sh -c 'mount -t tmpfs -o size=64k tmpfs /mnt'"
    )


async def test_read_only_folder_via_immutable_attribute(
    db: Path, key: str, can_chattr: bool
) -> None:
    if not can_chattr:
        pytest.skip("chattr +i is not permitted here")
    saved = await rows(db, key)
    before = digest(db)
    targets = [str(db.parent), str(db)]
    subprocess.run(["chattr", "+i", *targets], check=True)
    try:
        with SQLiteEncryptedTokenStore(db, encryption_key=key) as store:
            outcomes = {
                "get_token": await attempt(store.get_token(USERS[0])),
                "save_token": await attempt(store.save_token(USERS[0], NEW_TOKEN)),
            }
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True)
    record("read-only folder (chattr +i)", **outcomes, unchanged=digest(db) == before)
    assert outcomes["save_token"] == "TokenStorageError", outcomes
    assert outcomes["get_token"] in ("ok", "TokenStorageError")
    assert digest(db) == before
    assert await rows(db, key) == saved


def _in_namespace(setup: str, args: dict[str, Any]) -> dict[str, Any]:
    command = (
        f"{setup} && exec {shlex.quote(sys.executable)} {shlex.quote(str(WORKER))} store_ops "
        + shlex.quote(json.dumps(args))
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def test_read_only_bind_mount(db: Path, key: str, can_mount: bool) -> None:
    if not can_mount:
        pytest.skip("mount namespaces are not permitted here")
    saved = await rows(db, key)
    before = digest(db)
    folder = shlex.quote(str(db.parent))
    outcomes = _in_namespace(
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} {folder}",
        {"db": str(db), "key": key, "user": USERS[0], "new_token": NEW_TOKEN},
    )
    record("read-only file system (bind mount)", **_summary(outcomes))
    assert outcomes["save"]["error"] == "TokenStorageError", outcomes
    assert all(v.get("bad") is None for v in outcomes.values() if isinstance(v, dict))
    assert digest(db) == before
    assert await rows(db, key) == saved


async def test_full_tmpfs(tmp_path: Path, key: str, can_mount: bool) -> None:
    if not can_mount:
        pytest.skip("mount namespaces are not permitted here")
    folder = tmp_path / "small"
    folder.mkdir()
    quoted = shlex.quote(str(folder))
    first = {"access_token": "first-access-token-0123456789", "refresh_token": "first-rt-0123"}
    outcomes = _in_namespace(
        f"mount -t tmpfs -o size=256k,mode=0700 tmpfs {quoted}",
        {
            "db": str(folder / "store" / "tokens.db"),
            "key": key,
            "user": USERS[0],
            "create": first,
            "fill": str(folder / "filler"),
            "new_token": {**NEW_TOKEN, "padding": "x" * 20000},
        },
    )
    record("full file system (tmpfs)", **_summary(outcomes))
    assert outcomes["create"] == {"ok": True}
    assert outcomes["save"]["error"] == "TokenStorageError", outcomes
    assert outcomes["read_after"] == {"ok": True}
    assert outcomes["row_unchanged"] is True
