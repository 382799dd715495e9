"""Every LMCache release with remote config is bundled, and a commit is checked per version."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from server.base.errors import SettingsError
from server.config.loader import load_config_set
from server.config.parse_memo import ParseMemo
from server.config.schema import (
    SchemaChoice,
    bundled_schema,
    bundled_versions,
    load_schema,
    schema_for_versions,
)
from server.settings import settings_from
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT
from tests.support.servers import BASIC_APP, ServerFactory

DATA = ROOT / "server" / "config" / "data"
SCRIPT = ROOT / "scripts" / "bundle_lmcache_fields.py"
# Every lmcache release on PyPI from 0.3.13 (the first with remote config) to 0.5.6.
RELEASES = [
    *("0.3.13", "0.3.14", "0.3.15"),
    *("0.4.1", "0.4.2", "0.4.3", "0.4.4", "0.4.5", "0.4.6", "0.4.7"),
    *("0.5.0", "0.5.1", "0.5.2", "0.5.3", "0.5.4", "0.5.5", "0.5.6"),
]
# A key of 0.5.6 that 0.4.1 does not have (it came in 0.4.5).
NEW_KEY = "pd_allocation_timeout_sec"


def problems(files: dict[str, str], schema: Any = None) -> list[str]:
    encoded = {path: textwrap.dedent(text).lstrip("\n").encode() for path, text in files.items()}
    config_set, issues = load_config_set(encoded, schema or SchemaChoice())
    assert (config_set is None) == bool(issues)
    return [str(issue) for issue in issues]


def test_every_release_with_remote_config_is_bundled() -> None:
    assert bundled_versions() == tuple(RELEASES)
    counts = {version: len(bundled_schema(version).fields) for version in RELEASES}
    # The counts the releases' own _CONFIG_DEFINITIONS hold (lmcache-client-facts.md).
    assert counts["0.3.15"] == counts["0.4.1"] == 84
    assert counts["0.4.7"] == counts["0.5.0"] == 103
    assert counts["0.5.6"] == 108
    for version in RELEASES:
        assert (DATA / f"lmcache-{version}-aliases.tsv").is_file()
        assert bundled_schema(version).aliases["controller_url"] == "controller_pull_url"


def _installed_config_py() -> Path:
    # Found without importing lmcache: the generator reads the source, as from a wheel.
    spec = importlib.util.find_spec("lmcache")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations))) / "v1" / "config.py"


def test_generator_reproduces_the_bundled_0_5_6_files(tmp_path: Path) -> None:
    """The script, run on the installed lmcache 0.5.6's config.py, writes the committed files."""
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--config-py",
            str(_installed_config_py()),
            "--out",
            str(tmp_path),
            "0.5.6",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("lmcache-0.5.6-fields.tsv", "lmcache-0.5.6-aliases.tsv"):
        assert (tmp_path / name).read_text() == (DATA / name).read_text(), name
    # --check compares with the committed files and writes nothing.
    check = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--check",
            "--config-py",
            str(_installed_config_py()),
            "0.5.6",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_bundled_0_5_6_equals_the_installed_packages_definitions() -> None:
    config = importlib.import_module("lmcache.v1.config")
    definitions: dict[str, dict[str, Any]] = config._CONFIG_DEFINITIONS
    rows = [
        line.split("\t") for line in (DATA / "lmcache-0.5.6-fields.tsv").read_text().splitlines()
    ]
    assert rows[0] == ["name", "type", "default", "env_var"]
    assert [row[0] for row in rows[1:]] == list(definitions)
    for name, type_text, default, env_var in rows[1:]:
        declared = definitions[name]["type"]
        shown = declared.__name__ if isinstance(declared, type) else str(declared)
        assert shown.replace("typing.", "") == type_text, name
        assert repr(definitions[name].get("default")) == default, name
        assert env_var == f"LMCACHE_{name.upper()}"
    aliases = {
        alias: field
        for alias, field, _ in (
            line.split("\t")
            for line in (DATA / "lmcache-0.5.6-aliases.tsv").read_text().splitlines()[1:]
        )
    }
    assert set(aliases) == set(config._CONFIG_ALIASES) | set(config._DEPRECATED_CONFIGS)
    for alias, field in config._CONFIG_ALIASES.items():
        assert aliases[alias] == field


def test_a_key_of_one_declared_version_only_is_an_error_naming_the_other() -> None:
    found = problems(
        {
            "global.yaml": f"""
                lmcache_versions: ["0.4.1", "0.5.6"]
                defaults:
                  chunk_size: 256
                  {NEW_KEY}: 30.0
            """
        }
    )
    assert found == [
        f"global.yaml:4:3: error: '{NEW_KEY}' is not a config key of LMCache 0.4.1 "
        "(lmcache_versions: 0.4.1, 0.5.6): workers of that version skip it as unknown"
    ]
    # The same key under 0.5.6 alone is fine.
    ok = {"global.yaml": f'lmcache_versions: ["0.5.6"]\ndefaults:\n  {NEW_KEY}: 30.0\n'}
    assert problems(ok) == []


def test_a_key_of_another_release_says_where_it_exists() -> None:
    found = problems({"global.yaml": f'lmcache_versions: ["0.4.1"]\ndefaults:\n  {NEW_KEY}: 1.0\n'})
    assert found == [
        f"global.yaml:3:3: error: '{NEW_KEY}' is not a config key of LMCache 0.4.1 "
        "(lmcache_versions), only of LMCache 0.4.5 to 0.5.6"
    ]


@pytest.mark.parametrize("version", RELEASES)
def test_a_valid_config_is_accepted_under_each_bundled_version(version: str) -> None:
    files = {
        "global.yaml": f"""
            lmcache_versions: ["{version}"]
            defaults:
              chunk_size: 256
              local_cpu: true
              max_local_cpu_size: 5.0
              max_local_disk_size: 0
              remote_url: "lm://cache.internal:65432"
              lmcache_worker_ports: [8000, 8001]
            overrides:
              pre_caching_hash_algorithm: builtin
        """,
        "apps/a.yaml": """
            rules:
              - name: big
                when: {config: {chunk_size: 0}}
                overrides: {extra_config: {tier: gold}}
        """,
    }
    assert problems(files) == []


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            '["0.5.7"]',
            "global.yaml:1:20: error: lmcache_versions: unknown LMCache version '0.5.7'; "
            "did you mean '0.5.6'? the versions with remote config are " + ", ".join(RELEASES),
        ),
        (
            '["0.5.6", 0.5]',
            'global.yaml:1:29: error: an LMCache version must be a string such as "0.5.6", '
            "got 0.5; quote it",
        ),
        (
            "[]",
            "global.yaml:1:1: error: 'lmcache_versions' is empty: list the LMCache versions "
            "the fleet runs, or leave the key out",
        ),
        (
            '"0.5.6"',
            "global.yaml:1:19: error: 'lmcache_versions' (a list of LMCache versions) "
            "must be a list",
        ),
        (
            '["0.5.6", "0.5.6"]',
            "global.yaml:1:29: error: lmcache_versions: '0.5.6' is listed twice",
        ),
    ],
)
def test_lmcache_versions_is_validated(written: str, message: str) -> None:
    assert problems({"global.yaml": f"lmcache_versions: {written}\n"}) == [message]


def test_lmcache_versions_belongs_in_global_yaml_only() -> None:
    found = problems(
        {
            "global.yaml": "lmcache_version: ['0.5.6']\n",
            "apps/a.yaml": "lmcache_versions: ['0.5.6']\n",
        }
    )
    assert found == [
        "apps/a.yaml:1:1: error: 'lmcache_versions' belongs in global.yaml: it declares the "
        "LMCache versions of the whole fleet",
        "global.yaml:1:1: error: unknown section 'lmcache_version'; did you mean "
        "'lmcache_versions'? allowed: include, defaults, overrides, rules, access, lmcache_versions",
    ]


def test_server_versions_and_repository_versions_are_both_checked() -> None:
    server_declared = schema_for_versions(["0.4.1"])
    files = {"global.yaml": f'lmcache_versions: ["0.5.6"]\ndefaults:\n  {NEW_KEY}: 5.0\n'}
    assert problems(files, server_declared) == [
        f"global.yaml:3:3: error: '{NEW_KEY}' is not a config key of LMCache 0.4.1 "
        "(lmcache_versions: 0.4.1, 0.5.6): workers of that version skip it as unknown"
    ]
    # The order of declaration does not matter: one schema object (the parse memo keys on it).
    assert schema_for_versions(["0.5.6", "0.4.1"]) is schema_for_versions(["0.4.1", "0.5.6"])


def test_a_parse_memo_does_not_keep_a_file_checked_under_other_versions() -> None:
    memo = ParseMemo()
    app = f"defaults:\n  {NEW_KEY}: 5.0\n".encode()
    newer = {"global.yaml": b'lmcache_versions: ["0.5.6"]\n', "apps/a.yaml": app}
    config_set, issues = load_config_set(newer, load_schema(), memo=memo)
    assert issues == []
    assert config_set is not None
    assert config_set.lmcache_versions == ("0.5.6",)
    memo.finish_build()
    # Same app bytes; global.yaml now declares 0.4.1 too: the app file is checked again.
    mixed = {**newer, "global.yaml": b'lmcache_versions: ["0.4.1", "0.5.6"]\n'}
    _, issues = load_config_set(mixed, load_schema(), memo=memo)
    assert [issue.line for issue in issues] == [2]
    assert "LMCache 0.4.1" in issues[0].message


def test_nothing_declared_keeps_the_installed_schema() -> None:
    assert SchemaChoice().with_versions(()) is load_schema()
    assert load_schema().source.startswith("installed lmcache 0.5.6")
    assert SchemaChoice().with_versions(["0.4.7"]).source == (
        "LMCache 0.4.7 (declared; bundled field lists)"
    )


def test_lmcache_versions_setting(tmp_path: Path) -> None:
    from server.cli.main import build_parser

    args = build_parser().parse_args(["serve"])
    environ = {
        "LMCACHE_CONFIG_SERVER_REPO": str(tmp_path),
        "LMCACHE_CONFIG_SERVER_LMCACHE_VERSIONS": "0.4.7, 0.5.6",
    }
    assert settings_from(args, environ).lmcache_versions == ("0.4.7", "0.5.6")
    with pytest.raises(
        SettingsError,
        match=r"--lmcache-versions: unknown LMCache version "
        r"'0\.4\.77'; did you mean '0\.4\.7'\?",
    ):
        settings_from(args, {**environ, "LMCACHE_CONFIG_SERVER_LMCACHE_VERSIONS": "0.4.77"})


async def test_server_rejects_a_commit_a_declared_version_cannot_take(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, lmcache_versions=("0.4.1",))
    good = config_repo.head()
    assert server.served_sha == good
    assert (await server.status())["served"]["schema"] == (
        "LMCache 0.4.1 (declared; bundled field lists)"
    )
    config_repo.commit_files({"apps/test-app.yaml": BASIC_APP + f"  {NEW_KEY}: 30.0\n"})
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [
        f"apps/test-app.yaml:7:3: error: '{NEW_KEY}' is not a config key of LMCache 0.4.1 "
        "(lmcache_versions), only of LMCache 0.4.5 to 0.5.6"
    ]
    assert server.served_sha == good
    # The repository declaring 0.5.6 as well changes nothing: 0.4.1 is still checked.
    config_repo.commit_files(
        {"global.yaml": 'lmcache_versions: ["0.5.6"]\ndefaults:\n  chunk_size: 256\n'}
    )
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [
        f"apps/test-app.yaml:7:3: error: '{NEW_KEY}' is not a config key of LMCache 0.4.1 "
        "(lmcache_versions: 0.4.1, 0.5.6): workers of that version skip it as unknown"
    ]
