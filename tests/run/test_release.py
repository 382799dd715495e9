"""Package and release: the license, the declared floors, and one version everywhere.

RELEASING.md: a release sets the version in pyproject.toml, turns the
CHANGELOG's `[Unreleased]` into `[X.Y.Z] - date`, moves the examples' `rev:`
to `vX.Y.Z` and is tagged `vX.Y.Z`. These tests hold the files to that, and
check that the tag the examples name exists, holds its version, and that
real pre-commit installs the example's hook from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config-repo-example"
RELEASE_HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", re.MULTILINE)


def project() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def example_revs() -> set[str]:
    """Every server version the config repository's examples install or run."""
    config = yaml.safe_load((EXAMPLE / ".pre-commit-config.yaml").read_text())
    revs = {
        repo["rev"] for repo in config["repos"] if repo["repo"].endswith("/lmcache-config-server")
    }
    workflow = (EXAMPLE / ".github/workflows/lmcache-config.yml").read_text()
    revs |= set(re.findall(r"lmcache-config-server@(v[0-9][^\"\s]*)", workflow))
    return revs


def test_version_changelog_and_examples_agree() -> None:
    version = project()["version"]
    assert example_revs() == {f"v{version}"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    releases = RELEASE_HEADING.findall(changelog)
    if releases:
        # Released: the newest heading is this version (the examples name its tag).
        assert releases[0] == version
    else:
        # Before the first release, pyproject names it (the examples say v0.1.0 comes then).
        assert version == "0.1.0"
    # The image the Deployment runs is the same release.
    deployment = (ROOT / "deploy/kubernetes/deployment.yaml").read_text()
    assert f"lmcache-config-server:{version}" in deployment


def test_the_project_urls_are_where_the_examples_install_from() -> None:
    urls = project()["urls"]
    config = yaml.safe_load((EXAMPLE / ".pre-commit-config.yaml").read_text())
    (repo,) = [r["repo"] for r in config["repos"] if r["repo"].endswith("/lmcache-config-server")]
    assert urls["Repository"] == repo
    assert f"git+{repo}@" in (EXAMPLE / ".github/workflows/lmcache-config.yml").read_text()


def test_the_license_file_is_the_apache_2_text_the_metadata_names() -> None:
    meta = project()
    assert meta["license"] == "Apache-2.0"
    assert meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) == 201  # the whole text, appendix included
    assert "License :: OSI Approved" not in " ".join(meta["classifiers"])  # PEP 639: not both


def test_every_imported_distribution_is_declared() -> None:
    # Jinja2 is imported by the dashboard directly, not only through aiohttp-jinja2.
    declared = {Requirement(spec).name.lower() for spec in project()["dependencies"]}
    assert {"aiohttp", "jinja2", "aiohttp-jinja2", "redis", "msgspec", "orjson"} <= declared


def test_min_constraints_pin_every_runtime_dependency_at_its_floor() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/min_constraints.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = dict(line.split("==") for line in result.stdout.splitlines())
    for spec in project()["dependencies"]:
        requirement = Requirement(spec)
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        assert pins[requirement.name] == floor
    # web.RequestKey (server/web/keys.py) first appears in aiohttp 3.14.0.
    assert pins["aiohttp"] == "3.14"


def git_in_checkout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )


def test_every_release_in_the_changelog_is_tagged_at_its_version() -> None:
    """The tag the examples install from exists, and holds the release it names."""
    releases = RELEASE_HEADING.findall((ROOT / "CHANGELOG.md").read_text())
    assert releases, "CHANGELOG.md has no release heading: RELEASING.md says how to cut one"
    tags = set(git_in_checkout("tag", "--list", "v*").stdout.split())
    missing = [f"v{release}" for release in releases if f"v{release}" not in tags]
    assert not missing, (
        f"no tag {', '.join(missing)} in this checkout: it is a release in CHANGELOG.md "
        "(a clone without tags? `git fetch --tags`)"
    )
    for release in releases:
        tagged = git_in_checkout("show", f"v{release}:pyproject.toml")
        assert tagged.returncode == 0, tagged.stderr
        assert tomllib.loads(tagged.stdout)["project"]["version"] == release
        changelog = git_in_checkout("show", f"v{release}:CHANGELOG.md").stdout
        assert RELEASE_HEADING.findall(changelog)[0] == release
        # Annotated (RELEASING.md step 6): it carries who tagged it and when.
        kind = git_in_checkout("cat-file", "-t", f"v{release}").stdout.strip()
        assert kind == "tag", f"v{release} is a lightweight tag; tag with `git tag -a`"


def test_the_examples_pre_commit_hook_installs_from_its_tag_and_validates(
    tmp_path: Path,
) -> None:
    """Real pre-commit, as a config repository's author runs it: this repository at the tag
    the example's `rev:` names is cloned and installed, and its hook validates."""
    config = (EXAMPLE / ".pre-commit-config.yaml").read_text()
    hosted = project()["urls"]["Repository"]
    assert hosted in config
    repo = ConfigRepo(tmp_path / "config-repo")
    files = {
        str(path.relative_to(EXAMPLE)): path.read_text()
        for path in sorted(EXAMPLE.rglob("*.yaml"))
        if not any(part.startswith(".") for part in path.relative_to(EXAMPLE).parts)
    }
    # Installed from this checkout (its tags) instead of the project's future host.
    files[".pre-commit-config.yaml"] = config.replace(hosted, str(ROOT))
    repo.commit_files(files, "the example config repository")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),  # a fresh install, every time
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    pre_commit = [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            pre_commit, cwd=repo.path, env=env, capture_output=True, text=True, timeout=900
        )

    passed = run()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "validate LMCache config" in passed.stdout
    assert "Passed" in passed.stdout

    repo.commit_files({"apps/typo-app.yaml": "overrides:\n  chunk_sise: 256\n"}, "a typo")
    failed = run()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "apps/typo-app.yaml:2:3: error:" in failed.stdout
    assert "did you mean 'chunk_size'?" in failed.stdout
