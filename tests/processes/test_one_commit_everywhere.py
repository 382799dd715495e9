"""``--workers 2``: a commit goes live in both processes at once, with one content.

Real server processes on one port; each request opens a new connection, so
the kernel sends it to either process. Times are the test's own monotonic
clock, taken around each request.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess, status_of_each
from tests.support.servers import secret_scopes
from tests.support.waiting import wait_until

CLIENTS = 4
COMMITS = 6


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(repo: ConfigRepo, *args: str) -> ServerProcess:
        server = ServerProcess(
            tmp_path, f"live-{len(started)}", "--repo", str(repo.path), "--workers", "2", *args
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def _answer(port: int) -> tuple[str, dict[str, object]]:
    """One /config on a new connection: (version, {key: value})."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/config?appId=test-app")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200, body
    return body["version"], {item["key"]: item["value"] for item in body["configs"]}


class Answers:
    """Clients asking in a loop; each answer kept with when its request started and ended."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._ask) for _ in range(CLIENTS)]

    def __enter__(self) -> Answers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _ask(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            version, _ = _answer(self.port)
            with self._lock:
                self.seen.append((started, time.monotonic(), version))

    def enough_of(self, version: str) -> bool:
        with self._lock:
            return sum(1 for _, _, seen in self.seen if seen == version) >= 200


def test_no_request_gets_the_old_commit_once_any_process_answered_the_new(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    repo = ConfigRepo(tmp_path / "config")
    versions = [repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"})]
    server = start(repo, "--poll-interval", "3600")  # the watch brings each commit in
    server.wait_ready()
    wait_until(
        lambda: {s["served"]["sha"] for s in status_of_each(server).values()} == {versions[0]},
        "both processes to serve the first commit",
    )
    with Answers(server.port) as answers:
        for size in range(COMMITS):
            new = repo.commit_files(
                {"apps/test-app.yaml": f"overrides: {{chunk_size: {512 + size}}}\n"}
            )
            versions.append(new)
            # Enough answers of the new commit that both processes have given it many times.
            wait_until(partial(answers.enough_of, new), f"answers of {new[:12]}")
    order = {version: index for index, version in enumerate(versions)}
    stale: list[tuple[float, str, str]] = []
    newest_end: dict[int, float] = {}  # per commit: when its first answer ended
    for _, ended, version in sorted(answers.seen, key=lambda seen: seen[1]):
        newest_end.setdefault(order[version], ended)
    for started, _, version in answers.seen:
        later = [i for i, ended in newest_end.items() if i > order[version] and ended < started]
        if later:
            newer = versions[max(later)]
            stale.append((started - newest_end[max(later)], version[:12], newer[:12]))
    assert len(answers.seen) > COMMITS * 200
    assert not stale, (
        f"{len(stale)} of {len(answers.seen)} requests got an older commit after a newer one "
        f"was answered; the worst {max(stale)[0] * 1000:.1f} ms after: {sorted(stale)[-5:]}"
    )


def test_one_commit_has_one_content_in_every_process_across_a_secret_rotation(
    tmp_path: Path, start: Callable[..., ServerProcess]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "cache-password").write_text("old-password\n")
    repo = ConfigRepo(tmp_path / "config")
    sha = repo.commit_files(
        {"apps/test-app.yaml": "overrides:\n  remote_url: lm://u:${secret:cache-password}@c:1\n"}
    )
    scopes = secret_scopes(tmp_path, {"cache-password": ["test-app"]})
    server = start(
        repo, "--poll-interval", "3600", "--no-watch", "--secrets-dir", str(secrets),
        "--secret-scopes", scopes,
    )  # fmt: skip
    server.wait_ready()
    wait_until(
        lambda: {s["served"]["sha"] for s in status_of_each(server).values()} == {sha},
        "both processes to serve the commit",
    )

    def follower_answers() -> int:
        return sum(
            1
            for line in server.log().splitlines()
            if "[worker 1] server.access" in line and "path=/config" in line
        )

    def contents() -> set[object]:
        """remote_url as 200 answers of both processes give it (all of the one commit)."""
        before = follower_answers()
        seen: set[object] = set()
        for _ in range(200):
            version, values = _answer(server.port)
            assert version == sha
            seen.add(values["remote_url"])
        assert 0 < follower_answers() - before < 200, "not both processes answered"
        return seen

    assert contents() == {"lm://u:old-password@c:1"}
    # The secret is rotated; the leader notices within a second (it watches --secrets-dir)
    # and publishes it to every process. Meanwhile a follower is restarted (it dies, or is
    # replaced): it must answer what the leader answers.
    (secrets / "cache-password").write_text("new-password\n")
    leader = status_of_each(server)[0]["process"]
    (follower,) = leader["followers"]
    os.kill(follower["pid"], signal.SIGKILL)

    def follower_back() -> bool:
        try:
            followers = status_of_each(server)[0]["process"]["followers"]
        except (ConnectionError, AssertionError):
            return False
        return bool(
            followers[0]["pid"] != follower["pid"]
            and followers[0]["alive"]
            and followers[0]["serving"] == sha
            and not followers[0]["behind"]
        )

    wait_until(follower_back, "the follower to be restarted and serve the commit")

    def rotation_published() -> bool:
        recent = status_of_each(server)[0]["recent_syncs"]
        return any(r["trigger"] == "secrets" and r["result"] == "updated" for r in recent)

    wait_until(rotation_published, "the leader to publish the rotated secret")
    assert contents() == {"lm://u:new-password@c:1"}, "one version answered with two contents"

    code, refreshed = server.json("/admin/refresh", method="POST")
    assert code == 200, refreshed
    assert contents() == {"lm://u:new-password@c:1"}
