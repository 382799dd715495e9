"""diff and /history on a real multi-commit repository, with a bad commit and a revert."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from server.sync.state import SyncTrigger
from tests.support.clirun import call, spawn
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import RunningServer, ServerFactory

GLOBAL = """
defaults:
  chunk_size: 256
  local_cpu: true
"""
TEST_APP = """
overrides:
  chunk_size: 512
"""
PROD_APP = """
overrides:
  remote_url: "lm://cache:65432"
"""
CANARY = """
rules:
  - name: canary
    when:
      env: {GPU_TYPE: "H100*"}
      percent: {percent}
    overrides:
      max_local_cpu_size: 40.0
"""


@dataclasses.dataclass
class History:
    repo: ConfigRepo
    shas: dict[str, str]


@pytest.fixture
def history(tmp_path: Path) -> History:
    repo = ConfigRepo(tmp_path / "repo")
    shas: dict[str, str] = {}
    shas["initial"] = repo.commit_files(
        {"global.yaml": GLOBAL, "apps/test-app.yaml": TEST_APP, "apps/prod.yaml": PROD_APP},
        "initial",
    )
    shas["readme"] = repo.commit_files({"README.md": "notes\n"}, "docs only")
    shas["bigger"] = repo.commit_files(
        {"apps/test-app.yaml": TEST_APP.replace("512", "1024")}, "bigger chunks for test-app"
    )
    shas["canary"] = repo.commit_files(
        {"apps/prod.yaml": PROD_APP + CANARY.replace("{percent}", "10")}, "canary for prod"
    )
    shas["profile"] = repo.commit_files(
        {
            "profiles/h100.yaml": "defaults:\n  max_local_disk_size: 100.0\n",
            "apps/test-app.yaml": "include: [profiles/h100.yaml]\n"
            + TEST_APP.replace("512", "1024"),
        },
        "test-app uses the h100 profile",
    )
    shas["broken"] = repo.commit_files(
        {"profiles/h100.yaml": "defaults:\n  max_local_disk_siz: 100.0\n"}, "typo"
    )
    shas["fix"] = repo.revert(shas["broken"])
    shas["revert"] = repo.revert(shas["bigger"])
    shas["flip"] = repo.commit_files(
        {"global.yaml": GLOBAL.replace("defaults:", "overrides:")}, "global values are overrides"
    )
    shas["moved"] = repo.commit_files(
        {"global.yaml": "\n\n# comment\n" + GLOBAL.replace("defaults:", "overrides:")},
        "reformat global.yaml",
    )
    return History(repo, shas)


def diff_json(
    capsys: pytest.CaptureFixture[str], repo: ConfigRepo, *args: str
) -> dict[str | None, Any]:
    result = call(capsys, "diff", *args, "--repo", str(repo.path), "--format", "json")
    assert result.code == 0, result.err
    return {app["app_id"]: app for app in json.loads(result.out)["apps"]}


def test_diff_keys_rules_flips_and_revert(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, s = history.repo, history.shas
    apps = diff_json(capsys, repo, s["readme"], s["bigger"])
    assert apps["test-app"]["status"] == "changed"
    assert apps["test-app"]["keys"] == [
        {
            "key": "chunk_size",
            "change": "changed",
            "override_flipped": False,
            "before": {"value": 512, "override": True, "from": ["apps/test-app.yaml:2"]},
            "after": {"value": 1024, "override": True, "from": ["apps/test-app.yaml:2"]},
        }
    ]
    assert apps["prod"]["status"] == apps[None]["status"] == "unchanged"
    assert diff_json(capsys, repo, s["initial"], s["readme"])["test-app"]["status"] == "unchanged"

    apps = diff_json(capsys, repo, s["bigger"], s["canary"])
    assert apps["prod"]["keys"] == []
    [rule] = apps["prod"]["rules"]
    assert (rule["name"], rule["change"], rule["before"]) == ("canary", "added", None)
    assert rule["after"] == {
        "name": "canary",
        "file": "apps/prod.yaml",
        "line": 5,
        "when": [{"source": "env", "name": "GPU_TYPE", "pattern": "H100*"}],
        "rollout": {"percent": 10.0, "by": "config:lmcache_instance_id"},
        "sets": [{"key": "max_local_cpu_size", "value": 40.0, "override": True}],
    }

    apps = diff_json(capsys, repo, s["canary"], s["profile"])
    assert apps["test-app"]["layers_after"] == [
        "global.yaml",
        "profiles/h100.yaml",
        "apps/test-app.yaml",
    ]
    assert [(k["key"], k["change"]) for k in apps["test-app"]["keys"]] == [
        ("max_local_disk_size", "added")
    ]
    assert apps["test-app"]["keys"][0]["after"]["from"] == ["profiles/h100.yaml:2"]

    # The revert takes chunk_size back; reformatting moves lines but changes nothing.
    apps = diff_json(capsys, repo, s["fix"], s["revert"], "--app", "test-app")
    assert list(apps) == ["test-app"]
    change = apps["test-app"]["keys"][0]
    assert (change["before"]["value"], change["after"]["value"]) == (1024, 512)
    flips = diff_json(capsys, repo, s["revert"], s["flip"])
    assert [(k["key"], k["override_flipped"]) for k in flips["prod"]["keys"]] == [
        ("chunk_size", True),
        ("local_cpu", True),
    ]
    # In test-app the app's own override still wins chunk_size: only local_cpu flips.
    assert [k["key"] for k in flips["test-app"]["keys"]] == ["local_cpu"]
    assert all(
        a["status"] == "unchanged" for a in diff_json(capsys, repo, s["flip"], s["moved"]).values()
    )


def test_diff_markdown_for_a_pull_request(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, s = history.repo, history.shas
    repo.git("checkout", "--quiet", "-b", "pr", s["canary"])
    repo.commit_files({"apps/prod.yaml": PROD_APP + CANARY.replace("{percent}", "50")}, "to 50%")
    repo.git("update-ref", "refs/remotes/origin/main", s["canary"])
    result = spawn("diff", "origin/main", "HEAD", cwd=repo.path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == (
        f"### LMCache config: effective changes `origin/main` ({s['canary'][:12]}) → "
        f"`HEAD` ({repo.head()[:12]})"
    )
    assert "#### `prod`: changed" in lines
    assert (
        '- changed rule `canary` (apps/prod.yaml:5): when env GPU_TYPE = "H100*" and '
        "50% of workers by config:lmcache_instance_id: override max_local_cpu_size = 40.0"
    ) in lines
    assert (
        '  - was: when env GPU_TYPE = "H100*" and 10% of workers by '
        "config:lmcache_instance_id: override max_local_cpu_size = 40.0"
    ) in lines
    assert lines[-1] == "Unchanged: `(apps without a file)`, `test-app`"

    table = call(capsys, "diff", s["readme"], s["bigger"], "--repo", str(repo.path)).out
    assert "| key | change | before | after | set in |" in table
    assert (
        "| `chunk_size` | changed | `512` (override) | `1024` (override) | apps/test-app.yaml:2 |"
        in table
    )


def test_diff_against_a_commit_that_does_not_validate(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, s = history.repo, history.shas
    result = call(capsys, "diff", s["profile"], s["broken"], "--repo", str(repo.path))
    assert result.code == 1
    assert f"`{s['broken']}` ({s['broken'][:12]}) does not validate" in result.out
    assert (
        "profiles/h100.yaml:2:3: error: unknown LMCache config key 'max_local_disk_siz'; "
        "did you mean 'max_local_disk_size'?"
    ) in result.out.splitlines()
    as_json = call(
        capsys, "diff", s["profile"], s["broken"], "--repo", str(repo.path), "--format", "json"
    )
    report = json.loads(as_json.out)
    assert (as_json.code, report["valid"], list(report["invalid"])) == (1, False, [s["broken"]])
    usage = call(capsys, "diff", "nope", "HEAD", "--repo", str(repo.path))
    assert usage.code == 2
    assert "unknown revision 'nope'" in usage.err


async def history_shas(
    server: RunningServer, app: str, **params: str
) -> tuple[int, dict[str, Any]]:
    response = await server.client.get("/history", params={"app": app, **params})
    return response.status, await response.json()


async def test_history_endpoint(history: History, start_server: ServerFactory) -> None:
    repo, s = history.repo, history.shas
    server = await start_server(repo.path)
    assert server.served_sha == s["moved"]

    status, body = await history_shas(server, "test-app")
    assert status == 200
    # Not: the docs commit, the bad commit (never served), its fix (same config as
    # before it), the canary (another app) or the reformat (same values).
    assert [c["sha"] for c in body["commits"]] == [
        s["flip"],
        s["revert"],
        s["profile"],
        s["bigger"],
        s["initial"],
    ]
    assert body["complete"] is True
    assert body["commits"][1]["subject"].startswith('Revert "bigger chunks for test-app"')
    assert body["commits"][0]["author"] == "Config Author"
    assert set(body["commits"][0]) == {"sha", "author", "authored_at", "subject"}
    assert (body["app_id"], body["start"], body["ref"]) == ("test-app", s["moved"], "main")

    _, body = await history_shas(server, "prod")
    assert [c["sha"] for c in body["commits"]] == [s["flip"], s["canary"], s["initial"]]
    # An app without a file has the global layer's history.
    _, body = await history_shas(server, "ghost")
    assert [c["sha"] for c in body["commits"]] == [s["flip"], s["initial"]]
    _, body = await history_shas(server, "test-app", limit="2")
    assert ([c["sha"] for c in body["commits"]], body["complete"]) == (
        [s["flip"], s["revert"]],
        False,
    )

    # A new commit is in the history once it is served.
    newest = repo.commit_files({"apps/prod.yaml": PROD_APP.replace("cache", "cache2")}, "move")
    await server.syncer.sync(SyncTrigger.MANUAL)
    _, body = await history_shas(server, "prod", limit="1")
    assert [c["sha"] for c in body["commits"]] == [newest]

    for params, code in [
        ({"app": ""}, "invalid_parameter"),
        ({"app": "../etc"}, "invalid_app_id"),
        ({"app": "prod", "limit": "0"}, "invalid_parameter"),
        ({"app": "prod", "limit": "many"}, "invalid_parameter"),
        ({"app": "prod", "limit": "1000"}, "invalid_parameter"),
    ]:
        response = await server.client.get("/history", params=params)
        assert response.status == 400, params
        assert (await response.json())["error"]["code"] == code


async def test_history_before_anything_is_served(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"global.yaml": "defaults: {chunk_size: 'x'}\n"})
    server = await start_server(repo.path)
    status, body = await history_shas(server, "prod")
    assert (status, body["error"]["code"]) == (503, "not_ready")
