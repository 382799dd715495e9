"""/fleet: who holds which commit, only allow-listed identity kept, oldest forgotten first."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from server.ops.fleet import FleetTable, Sighting, sighting_key
from server.sync.state import SyncTrigger
from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, RunningServer, ServerFactory

SECRET = "fleet-secret-41d7"


def worker(instance: str | None, **env: str) -> dict[str, Any]:
    config: dict[str, object] = {"chunk_size": 256}
    if instance is not None:
        config["lmcache_instance_id"] = instance
    return {
        "current_config": config,
        "env_variables": {"AWS_SECRET_ACCESS_KEY": SECRET, "HF_TOKEN": SECRET, **env},
    }


async def fleet(server: RunningServer, **params: str) -> tuple[int, Any]:
    response = await server.client.get("/fleet", params=params)
    return response.status, await response.json()


async def test_fleet_shows_who_holds_which_commit(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    first = config_repo.head()
    await server.config("test-app", worker("w1", HOSTNAME="node-a", POD_NAME="pod-1"))
    await server.config("test-app", worker("w2", HOSTNAME="node-b"))
    await server.config("other-app", worker("o1", NODE_NAME="node-c"))

    second = config_repo.commit_files(
        {"apps/test-app.yaml": BASIC_APP.replace("512", "1024")}, "bigger"
    )
    await server.syncer.sync(SyncTrigger.MANUAL)
    await server.config("test-app", worker("w1", HOSTNAME="node-a", POD_NAME="pod-1"))

    status, report = await fleet(server)
    assert status == 200
    assert report["served_commit"] == second
    assert report["tracked"] == 3
    assert report["env_allow_list"] == ["HOSTNAME", "POD_NAME", "NODE_NAME"]
    test_app = report["apps"]["test-app"]
    assert test_app["instances"] == 2
    assert test_app["behind"] == 1
    assert test_app["commits"] == {first: 1, second: 1}
    newest, oldest = test_app["workers"]  # newest first
    assert newest["instance_id"] == "w1"
    assert newest["env"] == {"HOSTNAME": "node-a", "POD_NAME": "pod-1"}
    assert newest["peer"] == "127.0.0.1"
    assert (newest["commit"], newest["behind"]) == (second, False)
    assert (oldest["instance_id"], oldest["commit"], oldest["behind"]) == ("w2", first, True)
    assert report["apps"]["other-app"]["behind"] == 1
    assert SECRET not in str(report)

    status, only = await fleet(server, app="other-app")
    assert status == 200
    assert list(only["apps"]) == ["other-app"]
    assert only["apps"]["other-app"]["workers"][0]["env"] == {"NODE_NAME": "node-c"}
    assert (await fleet(server, app="nobody"))[1]["apps"] == {}
    status, error = await fleet(server, app="../x")
    assert (status, error["error"]["code"]) == (400, "invalid_app_id")


async def test_fleet_is_bounded_and_forgets_the_least_recently_seen(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, fleet_size=3)
    for name in ("w1", "w2", "w3"):
        await server.config("test-app", worker(name))
    await server.config("test-app", worker("w1"))  # w1 asks again: now the most recent
    await server.config("test-app", worker("w4"))  # evicts w2, the least recently seen
    await server.config("test-app", worker("w5"))  # evicts w3

    _, report = await fleet(server)
    assert (report["tracked"], report["capacity"], report["evicted"]) == (3, 3, 2)
    workers = report["apps"]["test-app"]["workers"]
    assert [w["instance_id"] for w in workers] == ["w5", "w4", "w1"]
    assert (await server.status())["fleet_instances_tracked"] == 3


async def test_fleet_allow_list_is_a_setting_and_ids_fall_back_to_peer_and_env(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, fleet_env=("RACK",))
    # No lmcache_instance_id: the allow-listed variables and the peer identify a worker.
    for _ in range(3):
        await server.config("test-app", worker(None, RACK="r1", HOSTNAME="h"))
    await server.config("test-app", worker(None, RACK="r2", HOSTNAME="h"))
    _, report = await fleet(server)
    workers = report["apps"]["test-app"]["workers"]
    assert [w["env"] for w in workers] == [{"RACK": "r2"}, {"RACK": "r1"}]
    assert all(w["instance_id"] is None for w in workers)
    assert "HOSTNAME" not in str(report["apps"])
    assert SECRET not in str(report)


async def test_only_answered_requests_are_recorded(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, strict_apps=True)
    assert (await server.config("no-such-app", worker("x")))[0] == 404
    bad = await server.client.get("/config", params={"appId": "test-app"}, data=b"[1]")
    assert bad.status == 400
    assert (await fleet(server))[1]["tracked"] == 0


async def test_with_auth_fleet_is_for_admins_and_logs_name_credentials_only(
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker_token, admin_token = "worker-token-5d1c0a9e7b", "admin-token-3f8e2b6c1d"
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        f"clients:\n  - name: fleet-a\n    token_sha256: {hash_token(worker_token)}\n"
        '    apps: ["*"]\n'
        f"admins:\n  - name: oncall\n    token_sha256: {hash_token(admin_token)}\n"
    )
    caplog.set_level(logging.INFO)
    server = await start_server(config_repo.path, auth_file=str(auth))
    response = await server.client.get(
        "/config", params={"appId": "test-app", "token": worker_token}, json=worker("w1")
    )
    assert response.status == 200
    assert (await server.client.get("/fleet")).status == 401
    response = await server.client.get("/fleet", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status == 200
    assert (await response.json())["apps"]["test-app"]["instances"] == 1
    summary = await (await server.client.get("/status")).json()
    assert summary["stale"] is False  # the summary for non-admins says it too
    assert "credential=fleet-a" in caplog.text
    assert "credential=oncall" in caplog.text
    assert worker_token not in caplog.text
    assert admin_token not in caplog.text


def _sighting(instance: str, seen_at: float, replica: str = "r2") -> Sighting:
    return Sighting("test-app", instance, (), None, "c" * 40, seen_at, replica)


def test_a_row_merged_from_another_replica_expires_at_its_own_time() -> None:
    table = FleetTable(capacity=10, env_allow_list=(), ttl=60.0)
    table.replica = "r1"
    now = time.time()
    table.record(app_id="test-app", env={}, instance_id="here", peer=None, commit="c", now=now)
    # Seen 50 s ago at r2, merged after this replica's own, newer row: 10 s are left.
    theirs = _sighting("there", now - 50)
    table.merge([(sighting_key(theirs), theirs)], pass_on=True)
    assert [s.instance_id for s in table.sightings()] == ["here", "there"]
    table.expire(now=now + 15)
    assert [s.instance_id for s in table.sightings()] == ["here"]
    assert (table.expired, len(table), table.apps_in_use()) == (1, 1, {"test-app": 1})
    assert table.report(served=None)["apps"]["test-app"]["instances"] == 1
    # One already past its TTL never shows, and is counted.
    stale = _sighting("late", now - 61)
    table.merge([(sighting_key(stale), stale)])
    assert [s.instance_id for s in table.sightings()] == ["here"]
    assert table.expired == 2


def test_reading_the_table_leaves_who_is_evicted_next() -> None:
    table = FleetTable(capacity=3, env_allow_list=(), ttl=None)
    now = time.time()
    for index, name in enumerate(("w1", "w2", "w3", "w1")):  # w1 again: w2 is the oldest
        table.record(
            app_id="test-app", env={}, instance_id=name, peer=None, commit="c", now=now + index
        )
    # Every view reads every row; and a stale copy of w3 from another process is not a use.
    table.report(served=None)
    table.all_rows()
    table.counts()
    stale = _sighting("w3", now - 100, replica="r1")
    table.merge([(sighting_key(stale), stale)])
    table.record(app_id="test-app", env={}, instance_id="w4", peer=None, commit="c", now=now + 9)
    assert [s.instance_id for s in table.sightings()] == ["w4", "w1", "w3"]
    table.record(app_id="test-app", env={}, instance_id="w5", peer=None, commit="c", now=now + 10)
    assert [s.instance_id for s in table.sightings()] == ["w5", "w4", "w1"]
    assert (table.evicted, table.expired) == (2, 0)
    assert [key for key, _ in table.all_rows()] == [
        ("test-app", "w1"),
        ("test-app", "w4"),
        ("test-app", "w5"),
    ]
