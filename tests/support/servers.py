"""The real app on a real loopback port, and the repository content most tests start from."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.settings import Settings
from server.web.keys import SNAPSHOTS, SYNC

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


def values(answer: dict[str, Any]) -> dict[str, Any]:
    """key -> value of a /config answer."""
    return {item["key"]: item["value"] for item in answer["configs"]}


def secret_scopes(directory: Path, scopes: dict[str, list[str]]) -> str:
    """A --secret-scopes file: secret name (or "*") to the app ids (globs) it may reach."""
    path = directory / "secret-scopes.yaml"
    path.write_text(json.dumps(scopes))  # JSON is YAML
    return str(path)


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


# What the start_server fixture (conftest.py) gives a test: start(repo, **settings).
ServerFactory = Callable[..., Awaitable[RunningServer]]
