"""``--workers 2``: real server processes sharing one port, one mirror and one sync.

Each request below opens a new connection (urllib), so the kernel's
SO_REUSEPORT hash sends it to either process; tests repeat a request until
both processes have answered, and tell them apart by ``/status``'s ``process``
or by the ``[worker 1]`` tag of the request id's log line.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess, status_of_each
from tests.support.waiting import wait_until
from tests.support.webhooks import github_headers, push_body

SECRET = "workers-webhook-secret"
ATTEMPTS = 200  # requests tried until the kernel has sent one to each process


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    config = ConfigRepo(tmp_path / "config")
    config.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"}, "initial")
    return config


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(repo: ConfigRepo, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(
            tmp_path, f"workers-{len(started)}", "--repo", str(repo.path), "--workers", "2",
            *args, env=env,
        )  # fmt: skip
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def wait_both_serve(server: ServerProcess, sha: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = {w: s["served"]["sha"] for w, s in status_of_each(server).items() if s["served"]}
        if served == {0: sha, 1: sha}:
            return
        time.sleep(0.05)
    raise AssertionError(f"not both serving {sha[:12]}: {server.log()}")


def handled_by(server: ServerProcess, request_id: str) -> int:
    """Which process logged the request with this id."""
    for line in server.log().splitlines():
        if f"id={request_id} " in line:
            return 1 if "[worker 1]" in line else 0
    raise AssertionError(f"no log line for request {request_id}")


def follower_pid(server: ServerProcess) -> int:
    leader = status_of_each(server)[0]["process"]
    (follower,) = leader["followers"]
    return int(follower["pid"])


def test_both_processes_answer_every_commit_and_only_the_leader_syncs(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    server = start(repo, "--poll-interval", "3600")  # the watch alone brings commits in
    first = server.wait_ready()
    wait_both_serve(server, first)
    statuses = status_of_each(server)
    leader, follower = statuses[0]["process"], statuses[1]["process"]
    assert leader["role"] == "leader"
    assert follower["role"] == "follower"
    assert leader["followers"][0]["pid"] == follower["pid"] != leader["pid"]
    assert leader["followers"][0]["serving"] == first
    assert leader["followers"][0]["behind"] is False
    # The follower shows the leader's sync state, not a state of its own.
    assert statuses[1]["last_sync"] == statuses[0]["last_sync"]
    # Pages that read git (history, the dashboard's app page) work on either process.
    answered_by: set[int] = set()
    for _ in range(ATTEMPTS):
        request_id = uuid.uuid4().hex
        code, _, page = server.request(
            "/dashboard/apps/test-app", headers={"X-Request-Id": request_id}
        )
        assert code == 200, page[:300]
        assert first[:12].encode() in page
        code, history = server.json("/history?app=test-app")
        assert code == 200, history
        assert history["commits"][0]["sha"] == first
        answered_by.add(handled_by(server, request_id))
        if answered_by == {0, 1}:
            break
    assert answered_by == {0, 1}

    second = repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 1024}\n"})
    answers: list[tuple[int, str, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, answer = server.json("/config?appId=test-app")
        chunk = {c["key"]: c["value"] for c in answer.get("configs", [])}.get("chunk_size")
        answers.append((code, answer.get("version", ""), chunk))
        if len(answers) > 40 and all(v == second for _, v, _ in answers[-40:]):
            break
    # Every answer meanwhile is whole and from one of the two commits.
    assert set(answers) <= {(200, first, 256), (200, second, 1024)}, set(answers)
    assert answers[-1] == (200, second, 1024)
    wait_both_serve(server, second)

    # One sync loop: only the leader fetched (the follower logs no sync lines of its own).
    log = server.log()
    assert "[worker 1] server.sync" not in log
    assert log.count("result=updated") == 2


def test_a_refresh_or_webhook_reaching_the_follower_syncs_through_the_leader(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    server = start(
        repo,
        "--no-watch",
        "--poll-interval",
        "3600",
        env={"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": SECRET},
    )
    wait_both_serve(server, server.wait_ready())

    # /admin/refresh: a refresh answered by the follower already serves the new commit there.
    by_follower = 0
    for size in range(300, 300 + ATTEMPTS):
        new = repo.commit_files({"apps/test-app.yaml": f"overrides: {{chunk_size: {size}}}\n"})
        request_id = uuid.uuid4().hex
        code, answer = server.json(
            "/admin/refresh", method="POST", headers={"X-Request-Id": request_id}
        )
        assert code == 200, answer
        assert answer["served"] == new
        assert answer["sync"]["new_commit"] == new
        if handled_by(server, request_id) == 1:
            by_follower += 1
            break
    assert by_follower == 1

    # A push webhook that reaches the follower queues the leader's sync.
    for size in range(600, 600 + ATTEMPTS):
        new = repo.commit_files({"apps/test-app.yaml": f"overrides: {{chunk_size: {size}}}\n"})
        request_id = uuid.uuid4().hex
        body = push_body()
        code, _, _ = server.request(
            "/webhook",
            method="POST",
            body=body,
            headers={**github_headers(body, secret=SECRET), "X-Request-Id": request_id},
        )
        assert code == 202
        wait_both_serve(server, new)
        if handled_by(server, request_id) == 1:
            break
    else:
        raise AssertionError("no webhook reached the follower")
    assert "trigger=webhook" in server.log()


def test_metrics_and_fleet_cover_both_processes(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    server = start(repo, "--poll-interval", "3600")
    wait_both_serve(server, server.wait_ready())
    requests = 40
    for index in range(requests):
        body = json.dumps(
            {"current_config": {"lmcache_instance_id": f"w{index}"}, "env_variables": {}}
        ).encode()
        code, _, _ = server.request("/config?appId=test-app", body=body)
        assert code == 200
    # The processes exchange fleet sightings twice a second: wait until both hold them all.
    wait_until(
        lambda: all(
            status["fleet_instances_tracked"] == requests
            for status in status_of_each(server).values()
        ),
        "both processes to track every worker",
    )

    for status in status_of_each(server).values():
        assert status["fleet_instances_tracked"] == requests
    started: set[str] = set()
    for _ in range(10):  # scrapes land on either process; each counts both
        _, _, metrics = server.request("/metrics")
        text = metrics.decode()
        # process_* are the leader's from either process; GC counts cannot be read across.
        started |= {line for line in text.splitlines() if line.startswith("process_start_time")}
        assert "python_gc_" not in text
        assert (
            'lmcache_config_sync_duration_seconds_count{result="updated",trigger="startup"}' in text
        )
        assert f'lmcache_config_requests_total{{app="test-app",status="200"}} {requests}.0' in text
        assert f"lmcache_config_request_duration_seconds_count {requests}.0" in text
        fleet_lines = [
            line for line in text.splitlines() if line.startswith("lmcache_config_fleet")
        ]
        assert fleet_lines, text
        assert fleet_lines[0].endswith(f" {requests}.0"), fleet_lines
    assert len(started) == 1, started
    _, fleet = server.json("/fleet?app=test-app")
    assert {w["instance_id"] for w in fleet["apps"]["test-app"]["workers"]} == {
        f"w{index}" for index in range(requests)
    }
    # The unknown-app counter (its label is the app id) sums over both processes too.
    for _ in range(requests):
        assert server.request("/config?appId=tset-app")[0] == 200
    for _ in range(10):
        text = server.request("/metrics")[2].decode()
        assert f'lmcache_config_unknown_app_requests_total{{app="tset-app"}} {requests}.0' in text


def test_a_dead_follower_is_restarted_and_a_dead_leader_stops_the_follower(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    server = start(repo, "--poll-interval", "3600")
    sha = server.wait_ready()
    wait_both_serve(server, sha)
    for index in range(10):
        body = json.dumps({"current_config": {"lmcache_instance_id": f"w{index}"}}).encode()
        assert server.request("/config?appId=test-app", body=body)[0] == 200
    # Sightings are shared with both processes twice a second: wait until both hold all ten.
    wait_until(
        lambda: all(
            status["fleet_instances_tracked"] == 10 for status in status_of_each(server).values()
        ),
        "both processes to track the ten workers",
    )
    killed = follower_pid(server)
    os.kill(killed, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            code, leader = server.json("/status")
        except ConnectionResetError:
            # A connection the kernel had queued for the killed process, before its
            # socket closed (see docs/operations.md on tcp_migrate_req).
            continue
        assert code == 200  # the leader answers throughout
        followers = leader["process"].get("followers", [])
        if followers and followers[0]["pid"] != killed and followers[0]["alive"]:
            assert followers[0]["restarts"] == 1
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"follower not restarted: {server.log()}")
    wait_both_serve(server, sha)
    assert "exited with code -9" in server.log()
    # The new follower got the whole fleet table from the leader when it joined.
    assert {s["fleet_instances_tracked"] for s in status_of_each(server).values()} == {10}

    # Without its leader a follower could only serve a commit that no longer advances.
    follower = follower_pid(server)
    server.process.kill()
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(follower, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the follower outlived its leader")
    assert "the leader process is gone; this worker stops" in server.log()


def test_sigterm_drains_both_processes(
    repo: ConfigRepo, start: Callable[..., ServerProcess]
) -> None:
    server = start(repo, "--poll-interval", "3600")
    wait_both_serve(server, server.wait_ready())
    follower = follower_pid(server)
    assert server.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(follower, 0)
    log = server.log()
    assert "[worker 1] server: shutting down" in log
    assert "workers stopped" in log
    assert "stopped cleanly" in log
    assert not list((server.data_dir / "metrics").glob("run-*"))  # its metrics files are gone


def test_a_second_server_cannot_join_a_port_in_use(
    repo: ConfigRepo, start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    first = start(repo, "--poll-interval", "3600")
    first.wait_ready()
    # Another server (its own data dir) on the same port: SO_REUSEPORT must not let it
    # take a share of the first one's workers.
    intruder = ServerProcess(
        tmp_path, "intruder", "--repo", str(repo.path), "--workers", "2", "--port", str(first.port)
    )
    try:
        assert intruder.process.wait(timeout=30) == 2
    finally:
        intruder.kill()
    assert f"cannot listen on 127.0.0.1:{first.port}: the port is already in use" in intruder.log()
    assert "--port N, LMCACHE_CONFIG_SERVER_PORT=N, or make run PORT=N" in intruder.log()
