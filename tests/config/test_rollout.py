"""percent: N rules reach a stable N% of workers, chosen by a hash of their identity."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from server.config.loader import load_config_set
from server.config.rollout import bucket
from server.config.schema import load_schema
from server.config.snapshot import CommitInfo, Snapshot
from tests.support.clirun import call
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory

SCHEMA = load_schema()

ROLLOUT_APP = """
defaults:
  max_local_cpu_size: 10.0
rules:
  - name: bigger-cache-canary
    when:
      percent: {percent}
    overrides:
      max_local_cpu_size: 40.0
  - name: host-canary
    when:
      env: {{GPU_TYPE: "H100*"}}
      percent: 50
      by: env:HOSTNAME
    overrides:
      chunk_size: 1024
"""


def snapshot(percent: float) -> Snapshot:
    files = {"apps/app.yaml": textwrap.dedent(ROLLOUT_APP.format(percent=percent)).encode()}
    config_set, issues = load_config_set(files, SCHEMA)
    assert issues == []
    assert config_set is not None
    info = CommitInfo(sha="0" * 40, author="a", authored_at="t", subject="s")
    return Snapshot(commit=info, config_set=config_set, loaded_at=0.0, schema_source="test")


def in_rollout(snap: Snapshot, instance: str, rule: str = "bigger-cache-canary") -> bool:
    answer = snap.answer("app", {}, {"lmcache_instance_id": instance})
    return rule in answer.applied_rules


IDS = [f"worker-{n:05d}" for n in range(4000)]


@pytest.mark.parametrize("percent", [1, 10, 50, 90])
def test_split_is_close_to_percent_and_stable(percent: int) -> None:
    snap = snapshot(percent)
    chosen = {instance for instance in IDS if in_rollout(snap, instance)}
    share = len(chosen) / len(IDS) * 100
    assert abs(share - percent) < 2.0, share
    # The same worker always gets the same answer, from a fresh snapshot too.
    again = snapshot(percent)
    assert all(in_rollout(again, instance) for instance in list(chosen)[:200])
    assert not any(in_rollout(again, i) for i in IDS[:300] if i not in chosen)


def test_raising_percent_only_adds_workers() -> None:
    chosen = {
        p: {i for i in IDS if in_rollout(snap, i)}
        for p in (0, 10, 50, 100)
        for snap in [snapshot(p)]
    }
    assert chosen[10] < chosen[50]
    assert chosen[0] == set()
    assert chosen[100] == set(IDS)


def test_worker_without_identity_never_matches() -> None:
    snap = snapshot(100)
    for config in ({}, {"lmcache_instance_id": None}, {"lmcache_instance_id": ""}):
        assert snap.answer("app", {}, config).applied_rules == ()


def test_env_identity_and_other_conditions() -> None:
    snap = snapshot(0)
    hosts = [f"gpu-node-{n}" for n in range(2000)]
    matched = [
        h
        for h in hosts
        if "host-canary"
        in snap.answer("app", {"GPU_TYPE": "H100", "HOSTNAME": h}, {}).applied_rules
    ]
    assert abs(len(matched) / len(hosts) - 0.5) < 0.04
    # The other condition still applies, and HOSTNAME is needed.
    assert snap.answer("app", {"GPU_TYPE": "A100", "HOSTNAME": matched[0]}, {}).applied_rules == ()
    assert snap.answer("app", {"GPU_TYPE": "H100"}, {}).applied_rules == ()
    # Only the names of the variables read are logged.
    answer = snap.answer("app", {"GPU_TYPE": "H100", "HOSTNAME": matched[0]}, {})
    assert answer.env_names_used == ("GPU_TYPE", "HOSTNAME")


def test_hash_depends_on_app_and_rule() -> None:
    # Different rollouts pick different cohorts, so one unlucky worker is not in every canary.
    one = {i for i in IDS if bucket("app", "a", i) < 1000}
    other_rule = {i for i in IDS if bucket("app", "b", i) < 1000}
    other_app = {i for i in IDS if bucket("app2", "a", i) < 1000}
    assert len(one & other_rule) < len(one) / 3
    assert len(one & other_app) < len(one) / 3


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{percent: 150}", "2:31: error: percent must be a number from 0 to 100, got 150"),
        ("{percent: ten}", "2:31: error: percent must be a number from 0 to 100, got 'ten'"),
        ("{percent: true}", "2:31: error: percent must be a number from 0 to 100, got True"),
        (
            "{env: {A: b}, by: env:HOSTNAME}",
            "2:35: error: 'by' of rule 'r' needs a 'percent'",
        ),
        (
            "{percent: 5, by: host:X}",
            "2:38: error: 'by: host:X' is not understood: write env:NAME or config:FIELD (or FIELD)",
        ),
        (
            "{percent: 5, by: lmcache_instance}",
            "2:38: error: unknown LMCache config key 'lmcache_instance'; did you mean "
            "'lmcache_instance_id'?",
        ),
        ("{percent: 5, by: ''}", "2:38: error: 'by' must name the worker identity"),
    ],
)
def test_bad_rollouts(when: str, expected: str) -> None:
    text = f"rules:\n  - {{name: r, when: {when}, overrides: {{chunk_size: 1}}}}\n"
    _, issues = load_config_set({"global.yaml": text.encode()}, SCHEMA)
    assert len(issues) == 1, issues
    assert str(issues[0]).startswith(f"global.yaml:{expected}")


async def test_render_shows_rollout_and_matches_the_server(
    tmp_path: Path, start_server: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/app.yaml": ROLLOUT_APP.format(percent=10)}, "canary at 10%")
    server = await start_server(repo.path)
    ten = snapshot(10)
    inside = next(i for i in IDS if in_rollout(ten, i))
    outside = next(i for i in IDS if not in_rollout(ten, i))

    for instance in (inside, outside):
        body = {"current_config": {"lmcache_instance_id": instance}, "env_variables": {}}
        response = await server.client.get("/config", params={"appId": "app"}, json=body)
        served = await response.read()
        rendered = call(
            capsys,
            "render", "app", "--repo", str(repo.path), "--ref", "HEAD",
            "--config", f"lmcache_instance_id={instance}", "--format", "json",
        )  # fmt: skip
        assert rendered.code == 0
        assert rendered.out.encode() == served  # byte for byte

    text = call(
        capsys, "render", "app", "--repo", str(repo.path), "--config",
        f"lmcache_instance_id={inside}",
    ).out  # fmt: skip
    assert "rule applied: bigger-cache-canary (apps/app.yaml:4)" in text
    assert "rule not applied: host-canary (apps/app.yaml:9): env GPU_TYPE is not set" in text
    assert "40.0" in text
    assert "apps/app.yaml:8 (rule 'bigger-cache-canary')" in text
    text = call(
        capsys, "render", "app", "--repo", str(repo.path), "--config",
        f"lmcache_instance_id={outside}",
    ).out  # fmt: skip
    assert "rule not applied: bigger-cache-canary (apps/app.yaml:4): outside the 10% rollout" in (
        text
    )
    text = call(capsys, "render", "app", "--repo", str(repo.path)).out
    assert (
        "rule not applied: bigger-cache-canary (apps/app.yaml:4): no config:lmcache_instance_id "
        "to place the worker in the 10% rollout"
    ) in text
    assert (
        json.loads(call(capsys, "render", "app", "--repo", str(repo.path), "--format", "json").out)[
            "version"
        ]
        == "working-tree"
    )
