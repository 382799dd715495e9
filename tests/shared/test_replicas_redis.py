"""Three real replicas behind one git daemon, sharing one real ``redis-server``.

The poll interval is an hour, so whatever reaches a replica that was not sent
the webhook came through Redis. Requests are real HTTP to real processes.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until
from tests.support.webhooks import SECRET, github_headers, push_body

REPLICAS = 3
INTERVAL = "0.3"  # --redis-interval: heartbeats and fleet exchanges
PASSWORD = "redis-pass-for-tests-7f3a"
# Well under the hour-long poll interval: only the fan-out can explain it.
FAN_OUT_WITHIN = 10.0
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _replica(tmp: Path, index: int, args: list[str]) -> ServerProcess:
    # The same name each time: a restarted replica keeps its data dir.
    return ServerProcess(
        tmp, f"replica-{index}", *args, env={"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": SECRET}
    )


@dataclass
class Fleet:
    work: ConfigRepo
    redis: RedisServer
    servers: list[ServerProcess] = field(default_factory=list)
    args: list[list[str]] = field(default_factory=list)
    tmp: Path = Path()
    daemon: GitDaemon | None = None

    def restart(self, index: int) -> None:
        assert self.servers[index].stop() == 0
        self.servers[index] = _replica(self.tmp, index, self.args[index])
        self.servers[index].wait_ready()

    def push(self, chunk: int) -> str:
        sha = self.work.commit_files(
            {"apps/test-app.yaml": f"overrides: {{chunk_size: {chunk}}}\n"}
        )
        self.work.git("push", "--quiet", "origin", "main")
        return sha

    def status(self, index: int) -> dict[str, Any]:
        code, status = self.servers[index].json("/status")
        assert code == 200, status
        return dict(status)

    def all_ready_together(self) -> None:
        def ready() -> bool:
            for i in range(REPLICAS):
                status = self.status(i)
                live = [r for r in status["replicas"] if not r["stale"] and not r["behind"]]
                shared = status["shared"]
                if len(live) != REPLICAS or not shared["available"] or not shared["subscribed"]:
                    return False
            return True

        wait_until(ready, "three live replicas on one commit, each subscribed", timeout=30)

    def serving(self, index: int) -> str:
        _, answer = self.servers[index].json("/config?appId=test-app")
        return str(answer.get("version", ""))


def webhook(server: ServerProcess, delivery: str | None = None) -> tuple[int, Any]:
    body = push_body()
    headers = github_headers(body, secret=SECRET)
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return server.json("/webhook/github", body=body, headers=headers, method="POST")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    upstream = tmp_path / "upstream.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(upstream)], check=True)
    work = ConfigRepo(tmp_path / "work")
    work.git("remote", "add", "origin", str(upstream))
    work.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"}, "initial")
    work.git("push", "--quiet", "origin", "main")
    daemon = GitDaemon(tmp_path)
    daemon.start()
    redis = RedisServer(tmp_path, password=PASSWORD)
    redis.start()
    shared = Fleet(work=work, redis=redis)
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    for i in range(REPLICAS):
        # One replica reads the password from a file, the others from the URL.
        redis_args = (
            [
                "--redis",
                f"redis://127.0.0.1:{redis.port}/0",
                "--redis-password-file",
                str(password_file),
            ]
            if i == 0
            else ["--redis", redis.url]
        )
        args = [
            "--repo", daemon.url("upstream.git"), "--poll-interval", "3600",
            "--replica-name", f"replica-{i}", "--redis-interval", INTERVAL, *redis_args,
        ]  # fmt: skip
        shared.args.append(args)
        shared.servers.append(_replica(tmp_path, i, args))
    shared.tmp = tmp_path
    shared.daemon = daemon
    try:
        for server in shared.servers:
            server.wait_ready()
        yield shared
    finally:
        codes = []
        for server in shared.servers:
            try:
                codes.append(server.stop())
            finally:
                server.kill()
        logs = [server.log() for server in shared.servers]
        redis.kill()
        daemon.stop()
    assert codes == [0] * REPLICAS, logs
    assert all(PASSWORD not in log for log in logs), "the Redis password reached a log"


def test_one_system_fleet_fan_out_and_status(fleet: Fleet) -> None:
    fleet.all_ready_together()
    status = fleet.status(1)
    assert status["replica"] == "replica-1"
    assert [r["name"] for r in status["replicas"]] == ["replica-0", "replica-1", "replica-2"]
    assert [r["self"] for r in status["replicas"]] == [False, True, False]
    assert not any(r["behind"] for r in status["replicas"])
    assert PASSWORD not in json.dumps(status)

    # Workers answered by different replicas: every replica's /fleet shows all three.
    for i, server in enumerate(fleet.servers):
        body = {
            "current_config": {"lmcache_instance_id": f"worker-{i}"},
            "env_variables": {"HOSTNAME": f"gpu-{i}", "API_KEY": "planted-worker-secret"},
        }
        code, _, _ = server.request(
            "/config?appId=test-app", body=json.dumps(body).encode(), method="POST"
        )
        assert code == 200

    def whole_fleet(index: int) -> dict[str, str] | None:
        _, report = fleet.servers[index].json("/fleet")
        workers = report["apps"].get("test-app", {}).get("workers", [])
        seen = {w["instance_id"]: w["replica"] for w in workers}
        return seen if len(seen) == REPLICAS else None

    expected = {f"worker-{i}": f"replica-{i}" for i in range(REPLICAS)}

    def has_fleet(index: int) -> bool:
        return whole_fleet(index) == expected

    for i in range(REPLICAS):
        wait_until(partial(has_fleet, i), f"the whole fleet at replica-{i}")
        _, _, raw = fleet.servers[i].request("/fleet")
        assert b"planted-worker-secret" not in raw
        assert b'"HOSTNAME": "gpu-' in raw
        _, _, metrics = fleet.servers[i].request("/metrics")
        assert b"lmcache_config_shared_dropped_total 0.0" in metrics
        assert b"lmcache_config_shared_up 1.0" in metrics
    # Nor is a worker's env value other than the allow-listed ones kept in Redis.
    dump = subprocess.run(
        ["redis-cli", "-p", str(fleet.redis.port), "-a", PASSWORD, "--no-auth-warning",
         "--scan", "--pattern", "*fleet:rows"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(dump) == 1
    rows = subprocess.run(
        ["redis-cli", "-p", str(fleet.redis.port), "-a", PASSWORD, "--no-auth-warning",
         "hgetall", dump[0]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "gpu-0" in rows
    assert "planted-worker-secret" not in rows

    # A webhook to one replica: all three serve the push, long before any poll.
    new = fleet.push(512)
    delivery = str(uuid.uuid4())
    sent = time.monotonic()
    code, answer = webhook(fleet.servers[0], delivery)
    assert code == 202, answer
    wait_until(
        lambda: all(fleet.serving(i) == new for i in range(REPLICAS)),
        "all three replicas serving the push",
        timeout=FAN_OUT_WITHIN,
    )
    elapsed = time.monotonic() - sent
    assert elapsed < FAN_OUT_WITHIN
    for i in (1, 2):
        triggers = [r["trigger"] for r in fleet.status(i)["recent_syncs"]]
        assert "webhook" in triggers  # relayed with the trigger it came with
    # The replica that published it did not sync again for its own message: no loop.
    time.sleep(1.0)
    own = [r["trigger"] for r in fleet.status(0)["recent_syncs"]]
    assert own.count("webhook") == 1, own
    for i in range(REPLICAS):
        status = fleet.status(i)
        assert status["shared"]["fan_out_published"] == (1 if i == 0 else 0)

    # The same delivery at another replica is a replay, refused fleet-wide.
    code, answer = webhook(fleet.servers[2], delivery)
    assert (code, answer["accepted"], answer["reason"]) == (200, False, "delivery already received")

    # /admin/refresh at one replica fans out too.
    newer = fleet.push(1024)
    code, answer = fleet.servers[2].json("/admin/refresh", method="POST")
    assert code == 200, answer
    wait_until(
        lambda: all(fleet.serving(i) == newer for i in range(REPLICAS)),
        "all three replicas serving the refreshed commit",
        timeout=FAN_OUT_WITHIN,
    )
    wait_until(
        lambda: not any(r["behind"] for r in fleet.status(0)["replicas"]),
        "no replica behind in /status",
    )


def test_redis_down_then_back(fleet: Fleet) -> None:
    fleet.all_ready_together()
    answers: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for server in fleet.servers:
                body = json.dumps({"current_config": {"lmcache_instance_id": "w"}}).encode()
                code, _, _ = server.request("/config?appId=test-app", body=body, method="POST")
                answers.append(code)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        fleet.redis.kill()

        def says_unavailable(index: int) -> bool:
            shared = fleet.status(index)["shared"]
            return not shared["available"] and shared["unavailable_since"] is not None

        for i in range(REPLICAS):
            wait_until(partial(says_unavailable, i), f"replica-{i} saying Redis is down")
        for i in range(REPLICAS):
            status = fleet.status(i)
            assert RFC3339.match(status["shared"]["unavailable_since"])
            assert status["shared"]["error"]
            assert PASSWORD not in json.dumps(status)
            # The dashboard says so too.
            _, _, page = fleet.servers[i].request("/dashboard")
            assert (
                b"shared state unavailable since " + status["shared"]["unavailable_since"].encode()
                in page
            )
        # A webhook while Redis is down is still taken (the local replay check answers).
        code, _ = webhook(fleet.servers[1])
        assert code == 202
        time.sleep(1.0)  # load goes on while Redis is away

        fleet.redis.start()  # the same port
        fleet.all_ready_together()
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert answers, "no load was sent"
    assert set(answers) == {200}, {code: answers.count(code) for code in set(answers)}

    # Back: fan-out works again.
    new = fleet.push(2048)
    code, _ = webhook(fleet.servers[2])
    assert code == 202
    wait_until(
        lambda: all(fleet.serving(i) == new for i in range(REPLICAS)),
        "all three replicas serving the push after Redis came back",
        timeout=FAN_OUT_WITHIN,
    )


def test_a_pin_at_one_replica_holds_on_all_and_survives_restarts(fleet: Fleet) -> None:
    fleet.all_ready_together()
    good = fleet.serving(0)
    bad = fleet.work.commit_files(
        {"apps/test-app.yaml": "overrides:\n  enable_controller: true\n"}, "crashes workers"
    )
    newer = fleet.push(1024)  # the tip: a later good commit on top of the bad one
    assert bad != newer
    code, _ = webhook(fleet.servers[0])
    assert code == 202
    for i in range(REPLICAS):
        wait_until(partial(lambda i: fleet.serving(i) == newer, i), f"replica-{i} on the tip")

    # The on-call pins the known-good commit at replica 1: every replica serves it.
    code, answer = fleet.servers[1].json(
        "/admin/pin",
        method="POST",
        body=json.dumps({"commit": good[:12], "reason": "incident 42"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert code == 200, answer
    assert answer["scope"] == "every replica (shared through Redis)"
    for i in range(REPLICAS):
        wait_until(partial(lambda i: fleet.serving(i) == good, i), f"replica-{i} pinned")
        pinned = fleet.status(i)["pinned"]
        assert (pinned["commit"], pinned["reason"]) == (good, "incident 42")

    # A push and its webhook change nothing while pinned; a restart of each keeps the pin.
    later = fleet.push(2048)
    webhook(fleet.servers[2])
    for i in range(REPLICAS):
        fleet.restart(i)
        assert fleet.serving(i) == good, f"replica-{i} lost the pin across a restart"
    fleet.all_ready_together()
    assert {fleet.serving(i) for i in range(REPLICAS)} == {good}

    # Unpinned at replica 2: every replica takes up the tip again.
    code, answer = fleet.servers[2].json(
        "/admin/unpin", method="POST", body=b"{}", headers={"Content-Type": "application/json"}
    )
    assert code == 200, answer
    for i in range(REPLICAS):
        wait_until(partial(lambda i: fleet.serving(i) == later, i), f"replica-{i} unpinned")
        assert fleet.status(i)["pinned"] is None
