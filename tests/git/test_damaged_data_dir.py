"""A damaged data dir is repaired, and the last good commit it still holds is never given up.

Each test serves a commit, stops the server, damages the data dir the way a
crash, a full disk or a careless operator does, and starts a new server on the
same data dir: with the remote up it syncs again, and with the remote down it
serves the commit it had. Restarting with the repository spelled another way
(a path for a file:// URL, a rotated token) keeps the mirror too.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from server.sync.state import SyncTrigger
from tests.support.githttp import GitHttpServer
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, ServerFactory, values


def _garbage(text: bytes) -> Callable[[Path], None]:
    def damage(data_dir: Path) -> None:
        ref = data_dir / "mirror.git" / "refs" / "remotes" / "origin" / "main"
        ref.write_bytes(text)

    return damage


def _packed_refs(data_dir: Path) -> None:
    (data_dir / "mirror.git" / "packed-refs").write_bytes(b"garbage garbage\n\x00\x01\n")


def _config(data_dir: Path) -> None:
    (data_dir / "mirror.git" / "config").write_bytes(b"[[[not a git config\n")


def _state(text: bytes) -> Callable[[Path], None]:
    def damage(data_dir: Path) -> None:
        (data_dir / "state.json").write_bytes(text)

    return damage


DAMAGE = {
    "garbage loose ref": _garbage(b"garbage\n"),
    "empty loose ref": _garbage(b""),
    "NUL-filled loose ref": _garbage(b"\x00" * 41),
    "garbage packed-refs": _packed_refs,
    "garbage git config": _config,
    "garbage state file": _state(b"{not json"),
    "empty state file": _state(b""),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
@pytest.mark.parametrize("remote", ["up", "down"])
async def test_a_damaged_data_dir_is_repaired_and_keeps_the_last_good_commit(
    damage: Callable[[Path], None],
    remote: str,
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = await start_server(config_repo.path, data_dir=data_dir)
    good = first.served_sha
    await first.client.close()  # stops the app: the data dir lock is released
    damage(data_dir)
    upstream = config_repo.path
    if remote == "down":
        upstream = config_repo.path.rename(config_repo.path.with_name("away"))
    second = await start_server(config_repo.path, data_dir=data_dir)
    assert second.served_sha == good
    assert values((await second.config())[1])["chunk_size"] == 512
    if remote == "up":
        assert (await second.status())["consecutive_failures"] == 0
        change = ConfigRepo(upstream).commit_files(
            {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 2048")}
        )
        record = await second.syncer.sync(SyncTrigger.MANUAL)
        assert (record.result, record.new_commit) == ("updated", change)
    else:
        assert upstream != config_repo.path


async def test_the_same_repository_spelled_another_way_keeps_the_mirror(
    config_repo: ConfigRepo, start_server: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = await start_server(config_repo.path, data_dir=data_dir)
    good = first.served_sha
    await first.client.close()
    url = f"file://{config_repo.path}"
    shutil.move(config_repo.path, tmp_path / "away")  # and the remote is down
    second = await start_server(url, data_dir=data_dir)
    assert second.served_sha == good


async def test_a_rotated_token_in_the_url_keeps_the_mirror(
    config_repo: ConfigRepo, start_server: ServerFactory, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(config_repo.path), "cfg.git"], cwd=served, check=True
    )
    http = GitHttpServer(served, "deploy", "old-token")
    await http.start()
    data_dir = tmp_path / "data"
    try:
        first = await start_server(
            http.url("cfg.git", userinfo="deploy:old-token"), data_dir=data_dir
        )
        good = first.served_sha
        assert good == config_repo.head()
        await first.client.close()
    finally:
        await http.stop()  # the remote is down for the restart
    second = await start_server(http.url("cfg.git", userinfo="deploy:new-token"), data_dir=data_dir)
    assert second.served_sha == good
    assert (await second.config())[0] == 200


@pytest.mark.parametrize(
    "damage",
    [DAMAGE["garbage loose ref"], DAMAGE["NUL-filled loose ref"], DAMAGE["garbage packed-refs"]],
    ids=["garbage loose ref", "NUL-filled loose ref", "garbage packed-refs"],
)
async def test_refs_damaged_while_running_are_repaired_by_the_next_sync(
    damage: Callable[[Path], None],
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    server = await start_server(config_repo.path, data_dir=data_dir)
    damage(data_dir)
    change = config_repo.commit_files(
        {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 4096")}
    )
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, record.new_commit) == ("updated", change)
