"""A config repository over ssh: key and known_hosts from settings; no prompt, ever."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory
from tests.support.sshserver import SSHD, SshServer, keygen


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    assert Path(SSHD).exists(), "Debian's openssh-server is missing: run `make test-tools`"
    server = SshServer(tmp_path / "ssh")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bare_repo(tmp_path: Path) -> tuple[Path, str]:
    source = ConfigRepo(tmp_path / "source")
    head = source.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 9}\n"})
    bare = tmp_path / "cfg.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(source.path), str(bare)], check=True)
    return bare, head


async def test_ssh_key_and_known_hosts(
    ssh_server: SshServer,
    bare_repo: tuple[Path, str],
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bare, head = bare_repo
    server = await start_server(
        ssh_server.url(bare),
        ssh_key=str(ssh_server.client_key),
        ssh_known_hosts=str(ssh_server.known_hosts),
    )
    assert server.served_sha == head
    assert (await server.status())["git_credentials"] == "ssh key with known_hosts"
    private_key = ssh_server.client_key.read_text().splitlines()[1]
    assert private_key not in caplog.text


async def test_unknown_host_key_fails_without_a_prompt(
    tmp_path: Path, ssh_server: SshServer, bare_repo: tuple[Path, str], start_server: ServerFactory
) -> None:
    bare, _ = bare_repo
    other_hosts = tmp_path / "other_known_hosts"
    other_hosts.write_text(
        f"[127.0.0.1]:{ssh_server.port} "
        + " ".join(keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()[:2])
        + "\n"
    )
    server = await start_server(
        ssh_server.url(bare),
        ssh_key=str(ssh_server.client_key),
        ssh_known_hosts=str(other_hosts),
        git_timeout=20.0,
    )
    status = await server.status()
    assert status["ready"] is False
    assert status["last_sync"]["result"] == "failed"
    assert "Host key verification failed" in status["last_sync"]["error"]


async def test_wrong_key_fails_without_a_prompt(
    tmp_path: Path, ssh_server: SshServer, bare_repo: tuple[Path, str], start_server: ServerFactory
) -> None:
    bare, _ = bare_repo
    server = await start_server(
        ssh_server.url(bare),
        ssh_key=str(keygen(tmp_path / "not_authorized")),
        ssh_known_hosts=str(ssh_server.known_hosts),
        git_timeout=20.0,
    )
    status = await server.status()
    assert status["last_sync"]["result"] == "failed"
    assert "Permission denied" in status["last_sync"]["error"]
