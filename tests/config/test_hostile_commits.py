"""Whatever a commit holds, it is served or rejected with file:line and a reason.

It never becomes a sync failure, a 500, a re-clone or a log line it wrote
itself. Each test commits the hostile content to a real repository, syncs the
real server from it, and checks what the server and ``validate`` make of it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.sync.state import SyncTrigger
from tests.support.clirun import call
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.servers import RunningServer, ServerFactory, values
from tests.support.waiting import wait_until

HUGE = "0x" + "f" * 4000  # a YAML integer of 16,000 bits


async def _rejected(server: RunningServer) -> dict[str, Any]:
    """Sync once and return /status, checking that the outcome is a rejection, not a failure."""
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, record.error) == ("rejected", record.error)
    status = await server.status()
    assert status["consecutive_failures"] == 0
    assert status["sync_task_error"] is None
    rejected: dict[str, Any] = status["last_rejected"]
    return rejected


@pytest.mark.parametrize(
    "app_file",
    [
        f"overrides:\n  chunk_size: {HUGE}\n",
        f"rules:\n  - name: big\n    when: {{env: {{GPU: H100}}}}\n    overrides:\n      chunk_size: {HUGE}\n",
        f"defaults:\n  extra_config:\n    depth: {HUGE}\n",
    ],
    ids=["override", "rule", "extra_config"],
)
async def test_an_integer_json_cannot_carry_is_rejected(
    app_file: str,
    config_repo: ConfigRepo,
    start_server: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await start_server(config_repo.path)
    good = server.served_sha
    config_repo.commit_files({"apps/test-app.yaml": app_file}, "a huge integer")
    rejected = await _rejected(server)
    assert len(rejected["errors"]) == 1
    assert rejected["errors"][0].startswith("apps/test-app.yaml:")
    assert (
        "<an integer of 16000 bits> is out of range; integers must fit in 64 bits"
        in (rejected["errors"][0])
    )
    assert server.served_sha == good
    status, answer = await server.config(body={"env_variables": {"GPU": "H100"}})
    assert status == 200
    assert values(answer)["chunk_size"] == 512
    dashboard = await server.client.get("/dashboard")
    assert dashboard.status == 200
    result = call(capsys, "validate", str(config_repo.path))
    assert result.code == 1
    assert "out of range" in result.out


async def test_an_include_chain_too_deep_is_rejected_where_it_goes_too_deep(
    config_repo: ConfigRepo, start_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server(config_repo.path)
    good = server.served_sha
    files = {"global.yaml": "include: [chain/f0.yaml]\n"}
    for index in range(1500):
        files[f"chain/f{index}.yaml"] = f"include: [chain/f{index + 1}.yaml]\n"
    files["chain/f1500.yaml"] = "defaults: {chunk_size: 1}\n"
    config_repo.commit_files(files, "a chain of 1,500 fragments")
    rejected = await _rejected(server)
    assert rejected["errors"] == [
        "chain/f31.yaml:1:11: error: cannot include 'chain/f32.yaml': the include chain is "
        "more than 32 fragments deep (chain/f0.yaml -> ... -> chain/f31.yaml); include the "
        "fragments from fewer levels"
    ]
    assert server.served_sha == good
    result = call(capsys, "validate", str(config_repo.path))
    shown = [line.removeprefix(f"{config_repo.path}/") for line in result.out.splitlines()]
    assert (result.code, shown) == (1, rejected["errors"])


async def test_too_many_rules_for_one_app_are_rejected(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, max_rules_per_app=100)
    rules = "".join(
        f"  - name: r{index}\n    when: {{env: {{N: '{index}'}}}}\n    defaults: {{chunk_size: {index + 1}}}\n"
        for index in range(101)
    )
    config_repo.commit_files({"apps/test-app.yaml": f"rules:\n{rules}"}, "101 rules")
    rejected = await _rejected(server)
    assert rejected["errors"] == [
        "apps/test-app.yaml:1:1: error: 101 rules apply to app 'test-app' (from global.yaml, "
        "apps/test-app.yaml); the limit is 100 (--max-rules-per-app): each request is "
        "matched against every one"
    ]


async def test_a_commit_dated_in_the_year_10000_is_served(
    config_repo: ConfigRepo, start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(config_repo.path)
    monkeypatch.setenv("GIT_AUTHOR_DATE", "@253402300800 +0000")  # 10000-01-01
    future = config_repo.commit_files({"apps/test-app.yaml": "defaults: {chunk_size: 64}\n"})
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, record.new_commit) == ("updated", future)
    status = await server.status()
    assert status["served"]["authored_at"] == "@253402300800"
    # Nothing to repair: the next poll finds the same commit and the mirror kept.
    assert (await server.syncer.sync(SyncTrigger.POLL)).result == "unchanged"
    assert values((await server.config())[1])["chunk_size"] == 64


def test_a_file_name_cannot_write_a_log_line(tmp_path: Path, config_repo: ConfigRepo) -> None:
    server = ServerProcess(tmp_path, "names", "--repo", str(config_repo.path), "--no-watch")
    try:
        good = server.wait_ready()
        forged = "x\n2026-01-01 00:00:00,000 INFO server.sync: sync result=updated serving=deadbeef"
        config_repo.commit_files({f"apps/{forged}\x1b[31m.yaml": "defaults: {}\n"}, "odd name")
        status, body = server.json("/admin/refresh", method="POST")
        assert status == 200
        assert body["sync"]["result"] == "rejected"
        assert body["served"] == good
        wait_until(lambda: "rejected" in server.log(), "the rejection in the log")
    finally:
        server.stop()
    log = server.log()
    assert "\x1b" not in log
    assert not [line for line in log.splitlines() if line.startswith("2026-01-01 00:00:00,000")]
    # Printed escaped (and, inside the JSON list of errors, escaped once more), never raw.
    assert "apps/x\\\\n2026-01-01 00:00:00,000 INFO server.sync" in log


async def test_a_file_name_that_is_not_utf8_never_breaks_a_page(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    name = os.fsdecode(b"apps/caf\xe9.yaml")  # Latin-1, as an old editor writes it
    (config_repo.path / name).write_text("defaults: {}\n")
    config_repo.commit("a file name that is not UTF-8")
    rejected = await _rejected(server)
    assert rejected["errors"][0].startswith("apps/caf\\xe9.yaml:1:1: error:")
    assert (await server.client.get("/dashboard")).status == 200
    subprocess.run(["git", "rm", "-q", "--", name], cwd=config_repo.path, check=True)
    fixed = config_repo.commit("remove it")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert server.served_sha == fixed
    page = await server.client.get("/dashboard")
    assert page.status == 200
    assert "apps/caf\\xe9.yaml" in await page.text()
