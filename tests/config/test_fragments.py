"""include: fragments are applied before the including file, with exact provenance."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from server.config.loader import load_config_set
from server.config.model import ConfigSet
from server.config.schema import load_schema
from server.config.snapshot import CommitInfo, Snapshot
from tests.support.clirun import call
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, secret_scopes

SCHEMA = load_schema()


def load(files: dict[str, str]) -> tuple[ConfigSet | None, list[str]]:
    encoded = {path: textwrap.dedent(text).lstrip("\n").encode() for path, text in files.items()}
    config_set, issues = load_config_set(encoded, SCHEMA)
    return config_set, [str(issue) for issue in issues]


def snapshot_of(config_set: ConfigSet) -> Snapshot:
    info = CommitInfo(sha="0" * 40, author="a", authored_at="t", subject="s")
    return Snapshot(commit=info, config_set=config_set, loaded_at=0.0, schema_source="test")


def test_include_errors_name_the_include_line() -> None:
    _, found = load(
        {
            "apps/a.yaml": """
                include:
                  - profiles/missing.yaml
                  - ../outside.yaml
                  - /etc/lmcache.yaml
                  - global.yaml
                  - apps/b.yaml
                  - profiles/notes.txt
                  - 5
                  - profiles/ok.yaml
                  - profiles/./ok.yaml
            """,
            "apps/b.yaml": "include: profiles/ok.yaml\n",
            "profiles/ok.yaml": "defaults: {chunk_size: 1}\n",
        }
    )
    assert found == [
        "apps/a.yaml:2:5: error: cannot include 'profiles/missing.yaml': no such file",
        "apps/a.yaml:3:5: error: cannot include '../outside.yaml': the path leaves the config root",
        "apps/a.yaml:4:5: error: cannot include '/etc/lmcache.yaml': absolute paths are not "
        "allowed; write the path relative to the config root",
        "apps/a.yaml:5:5: error: cannot include 'global.yaml': only fragment files can be "
        "included (not global.yaml or apps/ files)",
        "apps/a.yaml:6:5: error: cannot include 'apps/b.yaml': only fragment files can be "
        "included (not global.yaml or apps/ files)",
        "apps/a.yaml:7:5: error: cannot include 'profiles/notes.txt': fragment files end in .yaml",
        "apps/a.yaml:8:5: error: an include must be a path string, got 5",
        "apps/a.yaml:10:5: error: 'profiles/./ok.yaml' is already included on line 9",
        "apps/b.yaml:1:10: error: include (a list of fragment paths) must be a list",
    ]


def test_include_cycles_are_reported_once_at_the_closing_include() -> None:
    _, found = load(
        {
            "global.yaml": "include: [profiles/a.yaml]\n",
            "apps/x.yaml": "include: [profiles/b.yaml]\n",
            "profiles/a.yaml": "include: [profiles/b.yaml]\n",
            "profiles/b.yaml": "defaults: {chunk_size: 8}\ninclude: [profiles/a.yaml]\n",
            "profiles/self.yaml": "include: [profiles/self.yaml]\n",
            "apps/y.yaml": "include: [profiles/self.yaml]\n",
        }
    )
    assert found == [
        "profiles/b.yaml:2:11: error: include cycle: profiles/a.yaml -> profiles/b.yaml -> "
        "profiles/a.yaml",
        "profiles/self.yaml:1:11: error: include cycle: profiles/self.yaml -> profiles/self.yaml",
    ]


def test_errors_inside_a_fragment_name_the_fragment() -> None:
    _, found = load(
        {
            "apps/a.yaml": "include: [profiles/h100.yaml]\n",
            "apps/b.yaml": "include: [profiles/h100.yaml]\n",
            "profiles/h100.yaml": "overrides:\n  max_local_cpu_siz: 40.0\n",
            "profiles/unused.yaml": "this is: [not, checked\n",
        }
    )
    # Reported once although two apps include it; a fragment nobody includes is not config.
    assert found == [
        "profiles/h100.yaml:2:3: error: unknown LMCache config key 'max_local_cpu_siz'; "
        "did you mean 'max_local_cpu_size'?"
    ]


def test_layers_order_and_provenance() -> None:
    config_set, found = load(
        {
            "global.yaml": """
                include: [profiles/base.yaml]
                defaults:
                  lookup_timeout_ms: 3000
            """,
            "apps/gpu.yaml": """
                include:
                  - profiles/h100.yaml
                  - profiles/base.yaml
                overrides:
                  chunk_size: 1024
            """,
            "profiles/base.yaml": """
                defaults:
                  chunk_size: 256
                  lookup_timeout_ms: 1000
                  extra_config: {owner: platform}
            """,
            "profiles/h100.yaml": """
                include: [profiles/big.yaml]
                overrides:
                  max_local_cpu_size: 40.0
                  extra_config: {gpu: h100}
                rules:
                  - name: sxm-more
                    when: {env: {GPU_TYPE: "H100-SXM*"}}
                    overrides: {max_local_cpu_size: 80.0}
            """,
            "profiles/big.yaml": "defaults:\n  max_local_cpu_size: 20.0\n  local_cpu: true\n",
        }
    )
    assert found == []
    assert config_set is not None
    layers = [f.path for f in config_set.layers("gpu")]
    # base.yaml is applied once, where global.yaml first includes it.
    assert layers == [
        "profiles/base.yaml",
        "global.yaml",
        "profiles/big.yaml",
        "profiles/h100.yaml",
        "apps/gpu.yaml",
    ]
    effective, matched = snapshot_of(config_set).effective("gpu", {"GPU_TYPE": "H100-SXM5"}, {})
    where = {key: [str(origin) for origin in s.origins] for key, s in effective.items()}
    assert where == {
        "chunk_size": ["apps/gpu.yaml:5"],
        "lookup_timeout_ms": ["global.yaml:3"],
        "extra_config": ["profiles/base.yaml:4", "profiles/h100.yaml:4"],
        "local_cpu": ["profiles/big.yaml:3"],
        "max_local_cpu_size": ["profiles/h100.yaml:8 (rule 'sxm-more')"],
    }
    assert effective["extra_config"].value == {"owner": "platform", "gpu": "h100"}
    assert [rule.name for rule in matched] == ["sxm-more"]
    # Without the env match the fragment's own override holds.
    effective, _ = snapshot_of(config_set).effective("gpu", {"GPU_TYPE": "A100"}, {})
    assert (effective["max_local_cpu_size"].value, effective["max_local_cpu_size"].override) == (
        40.0,
        True,
    )


def test_symlinked_fragment_is_refused_in_commits_and_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.write("shared/real.yaml", "defaults: {chunk_size: 1}\n")
    (repo.path / "profiles").mkdir()
    (repo.path / "profiles" / "link.yaml").symlink_to("../shared/real.yaml")
    repo.commit_files({"apps/a.yaml": "include: [profiles/link.yaml]\n"})
    expected = (
        "apps/a.yaml:1:11: error: cannot include 'profiles/link.yaml': symbolic links are not "
        "followed in a config repository\n"
    )
    on_disk = call(capsys, "validate", str(repo.path))
    committed = call(capsys, "validate", str(repo.path), "--ref", "HEAD")
    assert (on_disk.code, committed.code) == (1, 1)
    assert on_disk.out == f"{repo.path}/{expected}"
    assert committed.out == expected


def test_fragments_count_against_the_repo_limits() -> None:
    from server.config.loader import RepoLimits

    files = {
        "apps/a.yaml": b"include: [profiles/big.yaml, profiles/small.yaml]\n",
        "profiles/big.yaml": b"# padding\n" * 20 + b"defaults: {chunk_size: 1}\n",
        "profiles/small.yaml": b"defaults: {local_cpu: true}\n",
    }
    _, issues = load_config_set(files, SCHEMA, limits=RepoLimits(max_file_bytes=100))
    assert [str(issue) for issue in issues] == [
        "apps/a.yaml:1:11: error: cannot include 'profiles/big.yaml': file is 226 bytes; "
        "the limit is 100"
    ]
    _, issues = load_config_set(files, SCHEMA, limits=RepoLimits(max_total_bytes=100))
    assert [str(issue) for issue in issues] == [
        "apps/a.yaml:1:11: error: cannot include 'profiles/big.yaml': config files total more "
        "than 100 bytes with this one"
    ]


async def test_secrets_and_access_in_fragments(
    tmp_path: Path,
    start_server: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LMCACHE_CONFIG_SERVER_SECRET_CACHE_PASSWORD", "s3cret")
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/a.yaml": "include: [profiles/cache.yaml]\n",
            "profiles/cache.yaml": """
                access:
                  env: {CLUSTER: "prod-*"}
                overrides:
                  remote_url: "lm://user:${secret:cache-password}@cache:65432"
            """,
        }
    )
    server = await start_server(
        repo.path, secret_scopes=secret_scopes(tmp_path, {"cache-password": ["a"]})
    )
    body = {"env_variables": {"CLUSTER": "prod-eu"}}
    status, answer = await server.config("a", body)
    # The server resolves a secret used in a fragment, and applies a fragment's access.
    assert status == 200
    assert answer["configs"] == [
        {"key": "remote_url", "value": "lm://user:s3cret@cache:65432", "override": True}
    ]
    assert (await server.config("a", {"env_variables": {"CLUSTER": "dev"}}))[0] == 403

    # render shows the reference, never the secret, and the same refusal.
    shown = call(capsys, "render", "a", "--repo", str(repo.path), "--env", "CLUSTER=prod-eu")
    assert "${secret:cache-password}" in shown.out
    assert "s3cret" not in shown.out
    assert "profiles/cache.yaml:4" in shown.out
    refused = call(capsys, "render", "a", "--repo", str(repo.path), "--env", "CLUSTER=dev")
    assert refused.code == 1
    assert refused.out.startswith("the server would refuse this worker (403): ")


def test_render_text_names_every_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "global.yaml": "defaults:\n  chunk_size: 256\n  extra_config: {owner: platform}\n",
            "profiles/eu.yaml": "overrides:\n  remote_url: lm://eu:1\n  extra_config: {region: eu}\n",
            "apps/a.yaml": (
                "include: [profiles/eu.yaml]\n"
                "overrides:\n  chunk_size: 512\n"
                "rules:\n"
                "  - name: big\n    when: {config: {local_cpu: true}}\n"
                "    overrides: {max_local_cpu_size: 30.0}\n"
            ),
        }
    )
    text = call(
        capsys, "render", "a", "--repo", str(repo.path), "--ref", "HEAD",
        "--config", "local_cpu=true",
    ).out  # fmt: skip
    rows = {line.split()[0]: line for line in text.splitlines()[4:] if line}
    assert text.splitlines()[1] == "files: global.yaml, profiles/eu.yaml, apps/a.yaml"
    assert rows["chunk_size"].split()[1:] == ["512", "override", "apps/a.yaml:3"]
    assert rows["remote_url"].split()[1:] == ['"lm://eu:1"', "override", "profiles/eu.yaml:2"]
    assert rows["extra_config"].endswith("override  global.yaml:3, profiles/eu.yaml:3")
    assert rows["max_local_cpu_size"].endswith("apps/a.yaml:7 (rule 'big')")
    assert "rule applied: big (apps/a.yaml:5)" in text
    assert repo.head()[:12] in text.splitlines()[0]


def test_render_reads_head_of_a_bare_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    head = repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 8}\n"})
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo.path), str(bare)], check=True)
    result = call(capsys, "render", "a", "--repo", str(bare), "--format", "json")
    assert result.code == 0
    answer = json.loads(result.out)
    assert answer["version"] == head
    assert answer["configs"] == [{"key": "chunk_size", "value": 8, "override": True}]
