"""Shared fixtures: real git repositories, the real app on a real loopback port."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.run.app import create_app
from server.settings import Settings
from server.web.keys import SNAPSHOTS, SYNC
from tests.gitdaemon import GitDaemon
from tests.gitrepo import ConfigRepo

# Tests commit with their own identity and never read the machine's git config.
GIT_TEST_ENV = {
    "GIT_AUTHOR_NAME": "Config Author",
    "GIT_AUTHOR_EMAIL": "author@example.test",
    "GIT_COMMITTER_NAME": "Config Author",
    "GIT_COMMITTER_EMAIL": "author@example.test",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

BASIC_GLOBAL = """
defaults:
  chunk_size: 256
  local_cpu: true
overrides:
  pre_caching_hash_algorithm: builtin
"""

BASIC_APP = """
defaults:
  max_local_cpu_size: 10.0
overrides:
  chunk_size: 512
  extra_config:
    tier: test
"""


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GIT_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def values(answer: dict[str, Any]) -> dict[str, object]:
    """key -> value of a /config answer."""
    return {item["key"]: item["value"] for item in answer["configs"]}


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


def make_settings(repo: str | Path, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repo": str(repo),
        "data_dir": str(data_dir),
        "poll_interval": 3600.0,  # tests trigger syncs themselves...
        "watch": False,  # ...unless a test turns watching on
        "git_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


class RunningServer:
    """The real app on a real 127.0.0.1 port, with a client and handles for the test."""

    def __init__(self, app: web.Application, client: TestClient[Any, Any]) -> None:
        self.app = app
        self.client = client

    @property
    def url(self) -> str:
        return str(self.client.make_url("/config"))

    @property
    def syncer(self) -> Any:
        return self.app[SYNC]

    @property
    def served_sha(self) -> str | None:
        snapshot = self.app[SNAPSHOTS].current
        return snapshot.commit.sha if snapshot else None

    async def config(
        self, app_id: str | None = "test-app", body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        params = {"appId": app_id} if app_id is not None else {}
        response = await self.client.get("/config", params=params, json=body, **kwargs)
        return response.status, await response.json()

    async def status(self) -> Any:
        response = await self.client.get("/status")
        return await response.json()


ServerFactory = Callable[..., Awaitable[RunningServer]]


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
