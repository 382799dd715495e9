"""Commits reach the server; bad ones never do; git trouble never reaches a worker."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from server.sync.state import SyncTrigger
from tests.support.gitdaemon import GitDaemon, SilentRemote
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, ServerFactory, values
from tests.support.waiting import wait_until_async


async def test_change_then_revert(config_repo: ConfigRepo, start_server: ServerFactory) -> None:
    server = await start_server(config_repo.path)
    first = config_repo.head()
    assert values((await server.config())[1])["chunk_size"] == 512

    change = config_repo.commit_files(
        {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 1024")}, "bigger"
    )
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, record.old_commit, record.new_commit) == ("updated", first, change)
    _, answer = await server.config()
    assert answer["version"] == change
    assert values(answer)["chunk_size"] == 1024

    revert = config_repo.revert(change)
    await server.syncer.sync(SyncTrigger.MANUAL)
    _, answer = await server.config()
    assert answer["version"] == revert != first
    assert values(answer)["chunk_size"] == 512

    # Nothing new: the sync says so and the snapshot stays.
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "unchanged"


BAD_COMMITS = {
    "unknown key": (
        {"apps/test-app.yaml": "overrides:\n  chunk_sise: 1\n"},
        "apps/test-app.yaml:2:3:",
    ),
    "wrong type": ({"global.yaml": "defaults:\n  local_cpu: 'yes'\n"}, "global.yaml:2:14:"),
    "syntax": ({"apps/test-app.yaml": "overrides: [\n"}, "apps/test-app.yaml:2:1:"),
    "duplicate key": (
        {"apps/test-app.yaml": "overrides:\n  chunk_size: 1\n  chunk_size: 2\n"},
        "apps/test-app.yaml:3:3:",
    ),
    "unknown section": ({"global.yaml": "defualts: {}\n"}, "global.yaml:1:1:"),
    "bad app file name": ({"apps/Bad App.yaml": "defaults: {}\n"}, "apps/Bad App.yaml:1:1:"),
}


@pytest.mark.parametrize("kind", sorted(BAD_COMMITS))
async def test_bad_commit_is_rejected_and_old_snapshot_serves(
    kind: str, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    files, location = BAD_COMMITS[kind]
    server = await start_server(config_repo.path)
    good = config_repo.head()
    _, before = await server.config()

    bad = config_repo.commit_files(files, f"bad: {kind}")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert record.result == "rejected"
    assert record.new_commit == good

    status, after = await server.config()
    assert status == 200
    assert after == before
    report = (await server.status())["last_rejected"]
    assert report["commit"]["sha"] == bad
    assert report["commit"]["subject"] == f"bad: {kind}"
    assert any(error.startswith(location) for error in report["errors"]), report["errors"]
    assert (await server.status())["served"]["sha"] == good

    # The same bad commit is not rebuilt on every poll; a fix is picked up.
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "rejected"
    config_repo.revert(bad)
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "updated"


async def test_all_errors_of_a_commit_are_reported(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    config_repo.commit_files(
        {
            "global.yaml": "defaults:\n  chunk_sise: 1\n",
            "apps/test-app.yaml": "overrides:\n  local_cpu: 'no'\n  remote_url: 5\n",
        }
    )
    await server.syncer.sync(SyncTrigger.MANUAL)
    errors = (await server.status())["last_rejected"]["errors"]
    assert [error.split(": error")[0] for error in errors] == [
        "apps/test-app.yaml:2:14",
        "apps/test-app.yaml:3:15",
        "global.yaml:2:3",
    ]


async def test_first_commit_bad_means_not_ready(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"global.yaml": "defaults: {chunk_size: 'x'}\n"})
    server = await start_server(repo.path)
    status, answer = await server.config()
    assert status == 503
    assert answer["error"]["code"] == "not_ready"
    assert (await server.client.get("/readyz")).status == 503
    repo.commit_files({"global.yaml": "defaults: {chunk_size: 8}\n"})
    await server.syncer.sync(SyncTrigger.MANUAL)
    assert (await server.config())[0] == 200


async def test_path_option_serves_a_subdirectory(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"lmcache/apps/a.yaml": "overrides: {chunk_size: 64}\n", "README.md": "x"})
    server = await start_server(repo.path, path="lmcache")
    assert values((await server.config("a"))[1]) == {"chunk_size": 64}
    repo.commit_files({"lmcache/apps/a.yaml": "overrides: {chunk_sise: 64}\n"})
    await server.syncer.sync(SyncTrigger.MANUAL)
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors[0].startswith("lmcache/apps/a.yaml:1:13: error: unknown LMCache config key")


async def test_tag_ref(config_repo: ConfigRepo, start_server: ServerFactory) -> None:
    tagged = config_repo.head()
    config_repo.git("tag", "v1")
    config_repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 1}\n"})
    server = await start_server(config_repo.path, ref="v1")
    assert server.served_sha == tagged


async def test_remote_down_never_reaches_workers_and_restart_serves_from_mirror(
    tmp_path: Path, git_daemon: GitDaemon, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "upstream")
    first = repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 16}\n"})
    data_dir = tmp_path / "data"
    server = await start_server(git_daemon.url("upstream"), data_dir=data_dir)
    assert server.served_sha == first

    git_daemon.stop()
    second = repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 32}\n"})
    record = await server.syncer.sync(SyncTrigger.POLL)
    assert record.result == "failed"
    assert "git://127.0.0.1" in (record.error or "")
    status, answer = await server.config()
    assert (status, answer["version"], values(answer)["chunk_size"]) == (200, first, 16)
    report = await server.status()
    assert report["consecutive_failures"] == 1
    assert report["last_sync"]["result"] == "failed"
    await server.client.close()

    # Restart with the remote still down: serve the last good commit from the mirror.
    restarted = await start_server(git_daemon.url("upstream"), data_dir=data_dir)
    status, answer = await restarted.config()
    assert (status, answer["version"]) == (200, first)
    report = await restarted.status()
    assert [r["result"] for r in report["recent_syncs"]] == ["failed", "restored"]

    # The remote comes back: the next sync catches up.
    git_daemon.start()
    assert (await restarted.syncer.sync(SyncTrigger.POLL)).result == "updated"
    _, answer = await restarted.config()
    assert (answer["version"], values(answer)["chunk_size"]) == (second, 32)


async def test_hung_remote_does_not_delay_answers(
    config_repo: ConfigRepo, tmp_path: Path, start_server: ServerFactory
) -> None:
    # Serve from a working remote first, then point a second server's mirror at a
    # remote that accepts connections and never answers.
    data_dir = tmp_path / "data"
    server = await start_server(config_repo.path, data_dir=data_dir)
    good = server.served_sha
    await server.client.close()

    silent = SilentRemote()
    try:
        mirror = data_dir / "mirror.git"
        subprocess.run(
            ["git", "--git-dir", str(mirror), "remote", "set-url", "origin", silent.url("x")],
            check=True,
        )
        hung = await start_server(silent.url("x"), data_dir=data_dir, git_timeout=3.0)
        assert hung.served_sha == good  # restored from the mirror at once
        connected = silent.accepted  # the startup sync hung here too, until its timeout
        fetch = asyncio.create_task(hung.syncer.sync(SyncTrigger.MANUAL))
        await wait_until_async(lambda: silent.accepted > connected, "the fetch to reach the remote")
        for _ in range(20):
            status, answer = await hung.config()
            assert (status, answer["version"]) == (200, good)
        assert not fetch.done(), "the fetch should still be hanging while answers flow"
        record = await fetch
        assert record.result == "failed"
        assert (await hung.config())[1]["version"] == good
    finally:
        silent.close()
