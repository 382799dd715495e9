"""``--workers 2`` with ``--redis``: the follower's pages and webhooks see the whole system."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess, status_of_each
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until
from tests.support.webhooks import SECRET, github_headers, push_body


@pytest.fixture
def common(tmp_path: Path) -> Iterator[list[str]]:
    """The flags of a replica on a git daemon's upstream and a real redis-server, both
    started here and stopped after the test."""
    upstream = tmp_path / "upstream.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(upstream)], check=True)
    work = ConfigRepo(tmp_path / "work")
    work.git("remote", "add", "origin", str(upstream))
    work.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"})
    work.git("push", "--quiet", "origin", "main")
    daemon = GitDaemon(tmp_path)
    daemon.start()
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        yield ["--repo", daemon.url("upstream.git"), "--poll-interval", "3600",
               "--redis", redis.url, "--redis-interval", "0.3"]  # fmt: skip
    finally:
        redis.kill()
        daemon.stop()


def test_a_follower_shows_every_replica_and_refuses_a_replayed_delivery(
    tmp_path: Path, common: list[str]
) -> None:
    env = {"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": SECRET}
    two = ServerProcess(
        tmp_path, "two", *common, "--workers", "2", "--replica-name", "two", env=env
    )
    one = ServerProcess(tmp_path, "one", *common, "--replica-name", "one", env=env)
    try:
        two.wait_ready()
        one.wait_ready()

        def both_seen_by_each_process() -> bool:
            statuses = status_of_each(two)
            return all(
                sorted(r["name"] for r in status.get("replicas", [])) == ["one", "two"]
                and status["shared"]["available"]
                for status in statuses.values()
            )

        wait_until(both_seen_by_each_process, "the follower to list both replicas")
        assert status_of_each(two)[1]["replica"] == "two"

        # A delivery taken by replica "one" is a replay at either process of "two".
        body = push_body()
        headers = {**github_headers(body, secret=SECRET), "X-GitHub-Delivery": "delivery-1"}
        code, answer = one.json("/webhook/github", body=body, headers=headers, method="POST")
        assert code == 202, answer
        replays = set()
        for _ in range(40):  # new connections: the kernel sends some to the follower
            code, answer = two.json("/webhook/github", body=body, headers=headers, method="POST")
            replays.add((code, answer.get("accepted"), answer.get("reason")))
        assert replays == {(200, False, "delivery already received")}, replays
        follower_lines = [
            line for line in two.log().splitlines()
            if "[worker 1] server.access" in line and "/webhook/" in line
        ]  # fmt: skip
        assert follower_lines, "no webhook reached the follower"
    finally:
        assert two.stop() == 0
        assert one.stop() == 0


def test_a_replica_that_dies_shows_stale_then_leaves(tmp_path: Path, common: list[str]) -> None:
    alive = ServerProcess(tmp_path, "alive", *common, "--replica-name", "alive")
    doomed = ServerProcess(tmp_path, "doomed", *common, "--replica-name", "doomed")
    try:
        alive.wait_ready()
        doomed.wait_ready()

        def doomed_is(stale: bool | None) -> bool:
            _, status = alive.json("/status")
            found = [r for r in status["replicas"] if r["name"] == "doomed"]
            if stale is None:
                return not found
            return bool(found) and found[0]["stale"] is stale

        wait_until(lambda: doomed_is(False), "the doomed replica to be live")
        doomed.kill()  # SIGKILL: no goodbye, only its heartbeat stops
        wait_until(lambda: doomed_is(True), "the dead replica to show stale")
        wait_until(lambda: doomed_is(None), "the dead replica to drop out", timeout=20)
    finally:
        assert alive.stop() == 0
        doomed.kill()


def test_rediss_with_a_private_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "redis-cert.pem", tmp_path / "redis-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    redis = RedisServer(tmp_path, tls=(cert, key))
    redis.start()
    work = ConfigRepo(tmp_path / "work")
    work.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"})
    url = f"rediss://127.0.0.1:{redis.port}/0"
    trusting = ServerProcess(
        tmp_path, "trusting", "--repo", str(work.path), "--redis", url,
        "--redis-ca-file", str(cert), "--redis-interval", "0.3",
    )  # fmt: skip
    refusing = ServerProcess(
        tmp_path, "refusing", "--repo", str(work.path), "--redis", url, "--redis-interval", "0.3"
    )
    try:
        trusting.wait_ready()
        refusing.wait_ready()  # a Redis it cannot trust never keeps a replica from serving

        def shared(server: ServerProcess) -> dict[str, object]:
            _, status = server.json("/status")
            return dict(status["shared"])

        wait_until(lambda: shared(trusting)["available"] is True, "a TLS connection to Redis")
        wait_until(lambda: shared(refusing).get("error") is not None, "an untrusted Redis refused")
        assert shared(refusing)["available"] is False
        assert "certificate" in str(shared(refusing)["error"]).lower()
    finally:
        assert trusting.stop() == 0
        assert refusing.stop() == 0
        redis.kill()
