"""Fixtures only, seen by every test directory: git identity, repositories, servers.

What they are built from lives in ``tests/support/`` (``servers.py``, ``gitrepo.py``...).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.run.app import create_app
from server.web.keys import SYNC
from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import (
    BASIC_APP,
    BASIC_GLOBAL,
    GIT_TEST_ENV,
    RunningServer,
    ServerFactory,
    make_settings,
)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GIT_TEST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    """A real git daemon serving every repository under tmp_path."""
    daemon = GitDaemon(tmp_path)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def config_repo(tmp_path: Path) -> ConfigRepo:
    """A repository with a global layer and one app, test-app, committed."""
    repo = ConfigRepo(tmp_path / "config-repo")
    repo.commit_files({"global.yaml": BASIC_GLOBAL, "apps/test-app.yaml": BASIC_APP}, "initial")
    return repo


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start servers on real ports; each waits for its first sync before returning."""
    clients: list[TestClient[Any, Any]] = []

    async def start(
        repo: str | Path, *, data_dir: Path | None = None, **overrides: Any
    ) -> RunningServer:
        settings = make_settings(repo, data_dir or tmp_path / f"data-{len(clients)}", **overrides)
        app = create_app(settings)
        # As in production (cli.py): aiohttp's own access log is off; it would log query strings.
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server(access_log=None)
        client = TestClient(test_server)
        await client.start_server()
        clients.append(client)
        await asyncio.wait_for(app[SYNC].first_attempt_done.wait(), timeout=30)
        return RunningServer(app, client)

    yield start
    for client in reversed(clients):
        await client.close()
