"""A private repository over smart HTTP with a token; the token never reaches a log."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.git.credentials import GitCredentials, ssh_command
from tests.support.githttp import GitHttpServer
from tests.support.gitrepo import ConfigRepo
from tests.support.mounted_secret import MountedSecret
from tests.support.servers import ServerFactory

TOKEN = "ghp_planted0token0value0123456789"
NEW_TOKEN = "ghs_rotated0token0value9876543210"


@pytest.fixture
async def private_remote(tmp_path: Path) -> AsyncIterator[tuple[GitHttpServer, str]]:
    source = ConfigRepo(tmp_path / "source")
    source.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 7}\n"})
    subprocess.run(
        [
            "git",
            "clone",
            "--quiet",
            "--bare",
            str(source.path),
            str(tmp_path / "served" / "cfg.git"),
        ],
        check=True,
    )
    server = GitHttpServer(tmp_path / "served", "deploy", TOKEN)
    await server.start()
    yield server, source.head()
    await server.stop()


async def test_token_file_opens_a_private_repo(
    tmp_path: Path,
    private_remote: tuple[GitHttpServer, str],
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    remote, head = private_remote
    token_file = tmp_path / "git-token"
    token_file.write_text(TOKEN + "\n")
    server = await start_server(
        remote.url("cfg.git"), git_token_file=str(token_file), git_username="deploy"
    )
    assert server.served_sha == head
    status = await server.status()
    assert status["git_credentials"] == "https token for user 'deploy'"
    assert TOKEN not in str(status)
    assert TOKEN not in caplog.text


async def test_a_rotated_token_file_is_used_without_a_restart(
    tmp_path: Path,
    private_remote: tuple[GitHttpServer, str],
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A GitHub App token lasts an hour: the file's next token is used, and a sync follows."""
    caplog.set_level(logging.DEBUG)
    remote, head = private_remote
    mount = MountedSecret(tmp_path / "git-secret", {"token": TOKEN + "\n"})
    server = await start_server(
        remote.url("cfg.git"),
        git_token_file=mount.file("token"),
        git_username="deploy",
        poll_interval=3600,  # only the token's change may start the sync below
    )
    assert server.served_sha == head

    # The host rotates: the old token is refused from now on, and a new commit waits.
    remote.rotate(NEW_TOKEN)
    source = ConfigRepo(tmp_path / "source")
    newer = source.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 8}\n"})
    source.git("push", "--quiet", str(tmp_path / "served" / "cfg.git"), "HEAD:main")
    refused_before = remote.refused

    mount.update({"token": NEW_TOKEN + "\n"})
    deadline = time.monotonic() + 15
    while server.served_sha != newer:
        assert time.monotonic() < deadline, "the new token's sync never served the new commit"
        await asyncio.sleep(0.05)
    status = await server.status()
    newest = status["recent_syncs"][0]
    assert (newest["trigger"], newest["result"]) == ("credentials", "updated")
    assert remote.refused == refused_before  # the sync went with the new token only
    for token in (TOKEN, NEW_TOKEN):
        assert token not in str(status)
        assert token not in caplog.text


async def test_without_a_token_the_sync_fails_clearly(
    private_remote: tuple[GitHttpServer, str], start_server: ServerFactory
) -> None:
    remote, _ = private_remote
    server = await start_server(remote.url("cfg.git"))
    status = await server.status()
    assert status["ready"] is False
    assert status["last_sync"]["result"] == "failed"
    assert "fetch from http://127.0.0.1" in status["last_sync"]["error"]
    assert remote.refused >= 1


async def test_credentials_in_the_url_are_redacted(
    private_remote: tuple[GitHttpServer, str],
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    remote, head = private_remote
    server = await start_server(remote.url("cfg.git", userinfo=f"deploy:{TOKEN}"))
    assert server.served_sha == head
    status = await server.status()
    assert status["repo"].startswith("http://***@127.0.0.1")
    assert TOKEN not in str(status)
    assert TOKEN not in caplog.text


def test_token_is_scoped_to_the_remote_host_and_kept_off_command_lines() -> None:
    credentials = GitCredentials(https_username="deploy", https_token=TOKEN)
    env = credentials.environment("https://git.example.com:8443/org/cfg.git")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com:8443/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    assert TOKEN not in repr(credentials)
    assert "GIT_CONFIG_COUNT" not in credentials.environment("ssh://git@example.com/cfg.git")
    assert ssh_command("/keys/id ed25519", "/etc/kh") == (
        "ssh -o BatchMode=yes -i '/keys/id ed25519' -o IdentitiesOnly=yes "
        "-o UserKnownHostsFile=/etc/kh -o StrictHostKeyChecking=yes"
    )
