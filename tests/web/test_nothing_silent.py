"""Nothing silent (issue 14): an unknown app is logged, counted and shown with the app file
it probably meant; YAML files nothing reads are shown; a commit with no config is rejected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.ops.metrics import MAX_UNKNOWN_APP_LABELS, OTHER_APP
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import scrape, value
from tests.support.procs import ServerProcess
from tests.support.servers import BASIC_APP, BASIC_GLOBAL, ServerFactory

UNKNOWN = "lmcache_config_unknown_app_requests_total"


async def test_an_unknown_app_is_counted_and_listed_with_the_app_it_probably_meant(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    for _ in range(3):
        code, answer = await server.config("tset-app")
        assert (code, answer["app_known"]) == (200, False)
    assert (await server.config("zzz"))[0] == 200
    assert (await server.config("test-app"))[0] == 200
    assert (await server.config(None))[0] == 200  # no appId: the global layer, asked for

    samples = await scrape(server)
    assert value(samples, UNKNOWN, app="tset-app") == 3
    assert value(samples, UNKNOWN, app="zzz") == 1
    assert {dict(labels)["app"] for name, labels in samples if name == UNKNOWN} == {
        "tset-app",
        "zzz",
    }

    served = (await server.status())["served"]
    unknown = {app["app_id"]: app for app in served["unknown_apps"]}
    assert set(unknown) == {"tset-app", "zzz"}
    assert unknown["tset-app"]["did_you_mean"] == "apps/test-app.yaml"
    assert unknown["tset-app"]["workers"] == 1  # the fleet table: one worker, three asks
    assert unknown["zzz"]["did_you_mean"] is None

    page = await (await server.client.get("/dashboard")).text()
    row = re.search(r'<table id="unknown-apps">.*?</table>', page, re.S)
    assert row is not None, page
    assert "tset-app" in row.group()
    assert 'did you mean <a href="/dashboard/apps/test-app">apps/test-app.yaml</a>?' in row.group()

    # A new commit: what it does not know starts afresh (test-app is gone, tset-app is there).
    config_repo.commit_files({"apps/tset-app.yaml": BASIC_APP}, "the right name after all")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert (await server.config("tset-app"))[1]["app_known"] is True
    assert [app["app_id"] for app in (await server.status())["served"]["unknown_apps"]] == ["zzz"]


async def test_unknown_apps_refused_by_strict_apps_are_counted_too(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, strict_apps=True)
    code, answer = await server.config("tset-app")
    assert code == 404, answer
    assert value(await scrape(server), UNKNOWN, app="tset-app") == 1
    served = (await server.status())["served"]
    assert served["unknown_apps"] == [
        {"app_id": "tset-app", "workers": 0, "did_you_mean": "apps/test-app.yaml"}
    ]


async def test_unknown_app_labels_are_capped(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    extra = 5
    for index in range(MAX_UNKNOWN_APP_LABELS + extra):
        assert (await server.config(f"ghost-{index}"))[0] == 200
    assert (await server.config("ghost-0"))[0] == 200  # a named one keeps its own label
    samples = await scrape(server)
    labels = {dict(labels)["app"] for name, labels in samples if name == UNKNOWN}
    assert len(labels) == MAX_UNKNOWN_APP_LABELS + 1
    assert value(samples, UNKNOWN, app=OTHER_APP) == extra
    assert value(samples, UNKNOWN, app="ghost-0") == 2


async def test_yaml_nothing_reads_is_shown_in_status_and_on_the_dashboard(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    config_repo.commit_files(
        {"app/x.yaml": "overrides: {chunk_size: 1}\n", "profiles/unused.yaml": "defaults: {}\n"},
        "two files nothing reads",
    )
    server = await start_server(config_repo.path)
    assert server.served_sha == config_repo.head()  # warnings never stop a commit
    warnings = (await server.status())["served"]["warnings"]
    assert warnings == [
        {
            "path": "app/x.yaml",
            "message": "not read: 'app/' is not 'apps/' (app files are apps/<app_id>.yaml)",
        },
        {
            "path": "profiles/unused.yaml",
            "message": "not read: no file includes it "
            "(a fragment is read only where a file includes it)",
        },
    ]
    page = await (await server.client.get("/dashboard")).text()
    shown = re.search(r'<pre class="errors" id="config-warnings">(.*?)</pre>', page, re.S)
    assert shown is not None, page
    assert shown.group(1).splitlines() == [
        "app/x.yaml: warning: not read: &#39;app/&#39; is not &#39;apps/&#39; "
        "(app files are apps/&lt;app_id&gt;.yaml)",
        "profiles/unused.yaml: warning: not read: no file includes it "
        "(a fragment is read only where a file includes it)",
    ]

    config_repo.remove("app/x.yaml")
    config_repo.commit_files({"global.yaml": "include: [profiles/unused.yaml]\n"}, "tidied")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert (await server.status())["served"]["warnings"] == []
    assert 'id="config-warnings"' not in await (await server.client.get("/dashboard")).text()


NO_CONFIG_IN_LMCACHE = (
    ".:1:1: error: no config found at .: expected global.yaml and/or apps/*.yaml; "
    "the config seems to be in lmcache/: pass that folder as PATH or --path"
)


async def test_a_commit_with_no_config_is_rejected_and_names_the_subfolder(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    good = server.served_sha
    (config_repo.path / "lmcache").mkdir()
    config_repo.git("mv", "global.yaml", "apps", "lmcache/")
    moved = config_repo.commit("moved into a folder")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert record.result == "rejected"
    status = await server.status()
    assert status["served"]["sha"] == good  # the last good commit is still served
    assert status["last_rejected"]["commit"]["sha"] == moved
    assert status["last_rejected"]["errors"] == [NO_CONFIG_IN_LMCACHE]

    # The same commit served with --path lmcache is fine.
    other = await start_server(config_repo.path, path="lmcache")
    assert other.served_sha == moved


async def test_a_first_commit_with_no_config_is_not_served(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"README.md": "nothing yet\n"}, "empty")
    server = await start_server(repo.path)
    assert server.served_sha is None
    assert (await server.client.get("/readyz")).status == 503
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [
        ".:1:1: error: no config found at .: expected global.yaml and/or apps/*.yaml; "
        "is the config in a subfolder? pass it as PATH or --path"
    ]


@pytest.fixture
def misnamed_repo(tmp_path: Path) -> ConfigRepo:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {"global.yaml": BASIC_GLOBAL, "apps/tset-app.yaml": BASIC_APP, "app/x.yaml": "{}\n"},
        "a misnamed app file",
    )
    return repo


def _lines(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if needle in line]


def test_an_unknown_app_is_logged_once_per_app_and_commit_with_the_access_log_on(
    tmp_path: Path, misnamed_repo: ConfigRepo
) -> None:
    # The default settings: the access log on, one process.
    server = ServerProcess(tmp_path, "silent", "--repo", str(misnamed_repo.path))
    try:
        first = server.wait_ready()
        for _ in range(3):
            assert server.request("/config?appId=test-app")[0] == 200
        assert server.request("/config?appId=zzz")[0] == 200
        second = misnamed_repo.commit_files({"global.yaml": "defaults: {chunk_size: 128}\n"})
        code, answer = server.json("/admin/refresh", method="POST")
        assert (code, answer["served"]) == (200, second), answer
        for _ in range(2):
            assert server.request("/config?appId=test-app")[0] == 200
        assert server.stop() == 0
    finally:
        server.kill()

    log = server.log()
    assert len(_lines(log, "path=/config status=200")) == 6  # the access log was on
    expected = (
        "WARNING server.access: unknown app test-app at commit {sha}: no apps/test-app.yaml, "
        "serving the global layer only; did you mean apps/tset-app.yaml?"
    )
    assert [line.split(" ", 2)[2] for line in _lines(log, "unknown app test-app")] == [
        expected.format(sha=first[:12]),
        expected.format(sha=second[:12]),
    ]
    assert [line.split(" ", 2)[2] for line in _lines(log, "unknown app zzz")] == [
        f"WARNING server.access: unknown app zzz at commit {first[:12]}: no apps/zzz.yaml, "
        "serving the global layer only"
    ]
    # The file nothing reads: once per commit, when it goes live.
    assert [line.split(" ", 2)[2] for line in _lines(log, "warning(s):")] == [
        f"WARNING server.sync: commit {sha[:12]} has 1 warning(s): app/x.yaml: warning: "
        "not read: 'app/' is not 'apps/' (app files are apps/<app_id>.yaml)"
        for sha in (first, second)
    ]
