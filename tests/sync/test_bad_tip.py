"""A new replica while the branch tip is a rejected commit still becomes ready.

It walks back the first-parent history to the newest commit that validates,
serves it, and says so: /status (tip and last rejection), /metrics and the
dashboard.
"""

from __future__ import annotations

from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import scrape, value
from tests.support.servers import BASIC_APP, ServerFactory, values

BAD = "overrides:\n  chunk_size: not-a-number\n"


async def test_a_new_replica_serves_the_newest_valid_commit_before_a_bad_tip(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    good = config_repo.commit_files(
        {"apps/test-app.yaml": BASIC_APP.replace("chunk_size: 512", "chunk_size: 640")}, "good"
    )
    bad = config_repo.commit_files({"apps/test-app.yaml": BAD}, "bad")
    bad_again = config_repo.commit_files({"apps/other.yaml": BAD}, "bad again")
    server = await start_server(config_repo.path)  # an empty data dir: nothing to restore
    assert server.served_sha == good
    assert values((await server.config())[1])["chunk_size"] == 640
    status = await server.status()
    assert status["tip"] == bad_again
    assert status["last_rejected"]["commit"]["sha"] == bad_again
    assert status["last_sync"]["result"] == "updated"
    assert status["last_sync"]["error"] == (
        f"tip {bad_again[:12]} rejected (2 error(s)); serving the newest valid commit "
        f"before it, {good[:12]}"
    )
    metrics = await scrape(server)
    assert value(metrics, "lmcache_config_tip_served") == 0
    page = await (await server.client.get("/dashboard")).text()
    assert f"{bad_again[:12]}</span> is not served (rejected)" in page
    assert bad != good

    fixed = config_repo.commit_files({"apps/test-app.yaml": BASIC_APP, "apps/other.yaml": ""})
    record = await server.syncer.refresh(SyncTrigger.MANUAL)
    assert (record.result, record.new_commit) == ("updated", fixed)
    assert (await server.status())["tip"] == fixed
    assert value(await scrape(server), "lmcache_config_tip_served") == 1
