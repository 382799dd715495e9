"""The emergency pin across real server processes: it survives a restart with the git host
down, and with ``--workers 2`` both processes serve the pinned commit, whichever of them
the pin reached."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess, status_of_each
from tests.support.waiting import wait_until

BAD = "overrides:\n  chunk_size: not-a-number\n"
ATTEMPTS = 200  # requests tried until the kernel has sent one to each process


def app(size: int) -> dict[str, str]:
    return {"apps/test-app.yaml": f"overrides: {{chunk_size: {size}}}\n"}


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    config = ConfigRepo(tmp_path / "config")
    config.commit_files(app(256), "initial")
    return config


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str, *args: str) -> ServerProcess:
        server = ServerProcess(tmp_path, name, "--poll-interval", "3600", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def post(server: ServerProcess, path: str, body: Any, request_id: str = "") -> tuple[int, Any]:
    headers = {
        "Content-Type": "application/json",
        **({"X-Request-Id": request_id} if request_id else {}),
    }
    return server.json(path, method="POST", body=json.dumps(body).encode(), headers=headers)


def refresh(server: ServerProcess) -> Any:
    return post(server, "/admin/refresh", {})[1]


def chunk_size(server: ServerProcess) -> int:
    _, answer = server.json("/config?appId=test-app")
    return int({item["key"]: item["value"] for item in answer["configs"]}["chunk_size"])


def test_a_pin_survives_a_restart_with_the_git_host_down(
    tmp_path: Path, repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    daemon = GitDaemon(tmp_path)
    daemon.start()
    try:
        server = start("pinned", "--repo", daemon.url("config"))
        server.wait_ready()
        good = repo.commit_files(app(640), "good")
        refresh(server)
        unwanted = repo.commit_files(app(999), "valid, but it breaks the fleet")
        assert refresh(server)["served"] == unwanted
        code, answer = post(server, "/admin/pin", {"commit": good[:12], "reason": "INC-1"})
        assert (code, answer["served"]) == (200, good), answer
        tip = repo.commit_files({"apps/test-app.yaml": BAD}, "bad")
        assert refresh(server)["served"] == good
        assert server.json("/status")[1]["tip"] == tip
    finally:
        daemon.stop()
    server.kill()  # no clean shutdown: the pin is on disk already

    again = start("pinned", "--repo", daemon.url("config"))
    assert again.wait_ready() == good
    assert chunk_size(again) == 640
    status = again.json("/status")[1]
    assert (status["pinned"]["commit"], status["pinned"]["reason"]) == (good, "INC-1")
    assert status["recent_syncs"][-1]["trigger"] == "restore"  # the oldest: before any fetch
    assert "restoring it, not the last good commit or the tip" in again.log()
    _, _, body = again.request("/metrics")
    assert "lmcache_config_pinned 1.0" in body.decode()
    assert unwanted != good


def handled_by(server: ServerProcess, request_id: str) -> int:
    for line in server.log().splitlines():
        if f"id={request_id} " in line:
            return 1 if "[worker 1]" in line else 0
    raise AssertionError(f"no log line for request {request_id}")


def pin_through(server: ServerProcess, worker: int, path: str, body: Any) -> dict[str, Any]:
    """Send the pin (or unpin) until the kernel hands it to ``worker``; its answer."""
    for _ in range(ATTEMPTS):
        request_id = uuid.uuid4().hex
        code, answer = post(server, path, body, request_id)
        assert code == 200, answer
        if handled_by(server, request_id) == worker:
            return dict(answer)
    raise AssertionError(f"worker {worker} never answered {path}")


def served_by_each(server: ServerProcess) -> dict[int, tuple[str, str | None]]:
    return {
        worker: (status["served"]["sha"], (status["pinned"] or {}).get("commit"))
        for worker, status in status_of_each(server).items()
    }


def test_with_two_workers_both_processes_serve_the_pinned_commit(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    good = repo.head()
    server = start("workers", "--repo", str(repo.path), "--workers", "2")
    server.wait_ready()
    repo.commit_files(app(999), "valid, but it breaks the fleet")
    wait_until(lambda: refresh(server)["served"] != good, "the new commit served")
    tip = repo.commit_files({"apps/test-app.yaml": BAD}, "bad")

    # Reaching the follower, the pin is relayed to the leader, which publishes it to both.
    answer = pin_through(server, 1, "/admin/pin", {"commit": good, "reason": "INC-2"})
    assert (answer["served"], answer["scope"]) == (good, "this replica")
    assert served_by_each(server) == {0: (good, good), 1: (good, good)}
    for _ in range(20):  # each request may reach either process
        assert chunk_size(server) == 256
    _, _, body = server.request("/metrics")
    assert f'lmcache_config_pinned_commit_info{{commit="{good}"}} 1.0' in body.decode()

    fixed = repo.commit_files(app(768), "fixed")
    answer = pin_through(server, 1, "/admin/unpin", {})
    assert answer["served"] == fixed
    deadline = time.monotonic() + 30
    while served_by_each(server) != {0: (fixed, None), 1: (fixed, None)}:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert tip != fixed
