"""``validate`` checks per declared LMCache version and value ranges, without lmcache."""

from __future__ import annotations

import json

import pytest

from tests.support.clirun import call, spawn
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT

MIXED_FLEET = {
    "global.yaml": """
        # Mid-upgrade: some workers still run 0.4.1.
        lmcache_versions: ["0.4.1", "0.5.6"]
        defaults:
          chunk_size: 256
    """,
    "apps/x.yaml": """
        overrides:
          pd_allocation_timeout_sec: 30.0
          chunk_size: 0
    """,
}
MIXED_REPORT = [
    "apps/x.yaml:2:3: error: 'pd_allocation_timeout_sec' is not a config key of LMCache 0.4.1 "
    "(lmcache_versions: 0.4.1, 0.5.6): workers of that version skip it as unknown",
    "apps/x.yaml:3:15: error: 'chunk_size' must be at least 1 (LMCache splits the KV cache "
    "into chunks of this many tokens): got 0",
]


def test_validate_checks_each_declared_version_and_ranges(
    config_repo: ConfigRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    for relative, text in MIXED_FLEET.items():
        config_repo.write(relative, text)
    result = call(capsys, "validate", str(config_repo.path))
    assert result.code == 1
    prefix = str(config_repo.path) + "/"
    assert result.out.splitlines() == [prefix + line for line in MIXED_REPORT]

    sha = config_repo.commit("mixed fleet")
    result = call(capsys, "validate", str(config_repo.path), "--ref", sha, "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert [
        f"{i['path']}:{i['line']}:{i['column']}: error: {i['message']}" for i in report["issues"]
    ] == MIXED_REPORT


def test_validate_reports_the_declared_schema(
    config_repo: ConfigRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    config_repo.write(
        "global.yaml", 'lmcache_versions: ["0.5.6", "0.4.7"]\ndefaults: {chunk_size: 256}\n'
    )
    result = call(capsys, "validate", str(config_repo.path), "--format", "json")
    assert result.code == 0, result.out
    assert (
        json.loads(result.out)["schema"] == "LMCache 0.4.7, 0.5.6 (declared; bundled field lists)"
    )


def test_validate_with_declared_versions_never_imports_lmcache(
    config_repo: ConfigRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real command line in its own process, with every import it makes listed on stderr.
    config_repo.write("global.yaml", 'lmcache_versions: ["0.5.6"]\ndefaults: {chunk_size: 256}\n')
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    result = spawn("validate", ".", cwd=config_repo.path)
    assert result.code == 0, result.err
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.err.splitlines() if "|" in line]
    assert "server.config.schema" in imported
    assert not [
        name
        for name in imported
        if name.split(".")[0] in {"lmcache", "aiohttp", "prometheus_client"}
    ]


def test_the_example_repository_declares_its_version_and_validates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = call(capsys, "validate", str(ROOT / "config-repo-example"), "--format", "json")
    assert result.code == 0, result.out
    assert json.loads(result.out)["schema"] == "LMCache 0.5.6 (declared; bundled field lists)"
