"""/metrics after real requests and real syncs, read back with prometheus_client's parser."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import Samples, scrape, value
from tests.support.servers import BASIC_APP, ServerFactory


def names_with(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples if sample == name]


def worker(instance: str) -> dict[str, object]:
    return {"current_config": {"lmcache_instance_id": instance}, "env_variables": {}}


async def test_request_and_sync_metrics(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    first = config_repo.head()

    for instance in ("w1", "w2"):
        assert (await server.config("test-app", worker(instance)))[0] == 200
    for unknown in ("other-1", "other-2", "other-3"):  # three ids, one label
        assert (await server.config(unknown, worker(f"u-{unknown}")))[0] == 200
    assert (await server.config(None, worker("anon")))[0] == 200
    assert (await server.config("bad id!"))[0] == 400
    bad_body = await server.client.get("/config", params={"appId": "test-app"}, data=b"{nope")
    assert bad_body.status == 400

    samples = await scrape(server)
    requests = "lmcache_config_requests_total"
    assert value(samples, requests, app="test-app", status="200") == 2
    assert value(samples, requests, app="test-app", status="400") == 1
    assert value(samples, requests, app="_unknown", status="200") == 3
    assert value(samples, requests, app="_none", status="200") == 1
    assert value(samples, requests, app="_invalid", status="400") == 1
    assert {labels["app"] for labels in names_with(samples, requests)} == {
        "test-app",
        "_unknown",
        "_none",
        "_invalid",
    }
    assert value(samples, "lmcache_config_request_duration_seconds_count") == 8
    assert value(samples, "lmcache_config_request_duration_seconds_bucket", le="+Inf") == 8
    assert value(samples, "lmcache_config_ready") == 1
    assert value(samples, "lmcache_config_served_commit_info", commit=first, ref="main") == 1
    assert value(samples, "lmcache_config_apps") == 1
    assert value(samples, "lmcache_config_snapshot_age_seconds") >= 0
    assert value(samples, "lmcache_config_stale") == 0
    assert value(samples, "lmcache_config_sync_attempts_total", trigger="startup") == 1
    assert value(samples, "lmcache_config_sync_failures_total", trigger="startup") == 0
    assert value(samples, "lmcache_config_rejected_commits_total") == 0
    fleet = "lmcache_config_fleet_instances"
    assert value(samples, fleet, app="test-app", commit=first) == 2
    assert value(samples, fleet, app="_unknown", commit=first) == 3
    assert value(samples, fleet, app="_none", commit=first) == 1

    # A new commit, then a bad one (seen on two syncs, counted once).
    second = config_repo.commit_files(
        {
            "apps/test-app.yaml": BASIC_APP.replace("512", "1024"),
            "apps/new-app.yaml": "overrides: {chunk_size: 8}\n",
        },
        "bigger chunks",
    )
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    config_repo.commit_files({"global.yaml": "defaults: {chunk_sise: 1}\n"}, "typo")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "rejected"
    assert (await server.config("test-app", worker("w1")))[0] == 200
    assert (await server.config("new-app", worker("n1")))[0] == 200

    samples = await scrape(server)
    assert value(samples, "lmcache_config_served_commit_info", commit=second, ref="main") == 1
    assert len(names_with(samples, "lmcache_config_served_commit_info")) == 1
    assert value(samples, "lmcache_config_apps") == 2
    assert value(samples, "lmcache_config_sync_attempts_total", trigger="manual") == 2
    assert value(samples, "lmcache_config_sync_attempts_total", trigger="poll") == 1
    assert value(samples, "lmcache_config_rejected_commits_total") == 1
    assert value(samples, requests, app="new-app", status="200") == 1
    # w1 moved to the new commit, w2 has not asked again.
    assert value(samples, fleet, app="test-app", commit=second) == 1
    assert value(samples, fleet, app="test-app", commit=first) == 1
    assert value(samples, fleet, app="new-app", commit=second) == 1


async def test_each_app_has_its_own_registry(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    one = await start_server(config_repo.path)
    two = await start_server(config_repo.path)
    for _ in range(3):
        await one.config("test-app")
    await two.config("test-app")
    requests = "lmcache_config_requests_total"
    assert value(await scrape(one), requests, app="test-app", status="200") == 3
    assert value(await scrape(two), requests, app="test-app", status="200") == 1


async def test_openmetrics_when_asked(config_repo: ConfigRepo, start_server: ServerFactory) -> None:
    server = await start_server(config_repo.path)
    await server.config("test-app")
    response = await server.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    # prometheus_client leaves its OpenMetrics parser unannotated.
    families = {family.name: family for family in openmetrics_families(text)}  # type: ignore[no-untyped-call]
    assert families["lmcache_config_requests"].samples[0].value == 1
    assert families["lmcache_config_served_commit"].samples[0].labels["commit"] == (
        config_repo.head()
    )


async def test_not_ready_requests_are_counted(tmp_path: Path, start_server: ServerFactory) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"global.yaml": "defaults: {chunk_size: 'x'}\n"})  # rejected: never ready
    server = await start_server(repo.path)
    assert (await server.config("anything"))[0] == 503
    samples = await scrape(server)
    assert value(samples, "lmcache_config_ready") == 0
    assert value(samples, "lmcache_config_requests_total", app="_unknown", status="503") == 1
    assert value(samples, "lmcache_config_rejected_commits_total") == 1
    assert names_with(samples, "lmcache_config_served_commit_info") == []
