"""A commit that removes app files workers still ask for; fleet rows that expire."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.ops.fleet import FleetTable
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory

FILES = {
    "global.yaml": "defaults: {chunk_size: 256}\n",
    "apps/prod.yaml": "overrides: {chunk_size: 1024}\n",
    "apps/staging.yaml": "overrides: {chunk_size: 512}\n",
    "apps/idle.yaml": "overrides: {chunk_size: 128}\n",
}


async def test_removing_an_app_that_workers_ask_for_needs_the_commit_to_say_so(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(FILES)
    server = await start_server(repo.path)
    for worker in range(3):
        body = {"current_config": {"lmcache_instance_id": f"p{worker}"}, "env_variables": {}}
        assert (await server.config("prod", body=body))[0] == 200
    assert (await server.config("staging", body={"env_variables": {}}))[0] == 200
    served = server.served_sha

    # apps/ renamed to app/: every app's workers would silently get the global layer only.
    repo.git("mv", "apps", "app")
    repo.commit("move the apps")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert record.result == "rejected"
    assert server.served_sha == served
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors[:2] == [
        "apps/prod.yaml:1:1: error: the commit removes app 'prod', which 3 worker(s) asked for "
        "within --fleet-ttl: they would get the global layer only. If that is intended, add "
        "the trailer 'Removes-Apps: prod' to the commit message",
        "apps/staging.yaml:1:1: error: the commit removes app 'staging', which 1 worker(s) "
        "asked for within --fleet-ttl: they would get the global layer only. If that is "
        "intended, add the trailer 'Removes-Apps: staging' to the commit message",
    ]
    assert not any("'idle'" in error for error in errors)  # nobody asked for it

    # Put back, then remove one app on purpose: the trailer says so, and it is served.
    repo.git("mv", "app", "apps")
    repo.commit("put the apps back")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    repo.remove("apps/staging.yaml")
    repo.remove("apps/idle.yaml")
    removed = repo.commit("Retire staging\n\nThe staging fleet is gone.\n\nRemoves-Apps: staging")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert server.served_sha == removed


def test_fleet_rows_expire_after_the_ttl() -> None:
    fleet = FleetTable(capacity=10, env_allow_list=(), ttl=60.0)
    now = time.time()
    for index, ago in enumerate((95.0, 50.0, 5.0)):
        fleet.record(
            app_id="a", env={}, instance_id=f"w{index}", peer=None, commit="c", now=now - ago
        )
    assert [s.instance_id for s in fleet.sightings()] == ["w2", "w1"]  # w0: 95 s ago
    assert (fleet.expired, len(fleet)) == (1, 2)
    assert fleet.apps_in_use() == {"a": 2}
    fleet.expire(now=now + 60)
    assert fleet.sightings() == []


async def test_the_fleet_forgets_workers_after_fleet_ttl(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(FILES)
    server = await start_server(repo.path, fleet_ttl=1.0)
    body = {"current_config": {"lmcache_instance_id": "gone-pod"}, "env_variables": {}}
    assert (await server.config("prod", body=body))[0] == 200
    fleet = await (await server.client.get("/fleet")).json()
    assert fleet["apps"]["prod"]["instances"] == 1
    await asyncio.sleep(1.2)  # real time passing is what is tested
    fleet = await (await server.client.get("/fleet")).json()
    assert fleet["apps"] == {}
    assert (fleet["expired"], fleet["ttl_seconds"]) == (1, 1.0)
    # Nobody asks for prod within the TTL any more: removing it needs no trailer.
    repo.remove("apps/prod.yaml")
    repo.commit("drop prod")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
