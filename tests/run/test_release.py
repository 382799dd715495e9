"""Package and release: the license, the declared floors, and one version everywhere.

RELEASING.md: a release sets the version in pyproject.toml, turns the
CHANGELOG's `[Unreleased]` into `[X.Y.Z] - date`, moves the examples' `rev:`
to `vX.Y.Z` and is tagged `vX.Y.Z`. These tests hold the files to that; check
that each release's commit is in history and that `scripts/release_tags.py`
tags it (a checkout, CI's among them, may come without tags); and that real
pre-commit installs the example's hook from the tag the examples name.
"""

from __future__ import annotations

import os
import re
import runpy
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
RELEASE_TAGS_SCRIPT = ROOT / "scripts/release_tags.py"
# The script's own reading of a release heading, so the two never disagree.
RELEASE_HEADING: re.Pattern[str] = runpy.run_path(str(RELEASE_TAGS_SCRIPT))["RELEASE_HEADING"]


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


RELEASE_TAGS = [sys.executable, str(RELEASE_TAGS_SCRIPT)]


def release_tags(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELEASE_TAGS, "--repo", str(repo), *args], capture_output=True, text=True, check=False
    )


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def clone_without_tags(tmp_path: Path) -> Path:
    """This checkout as CI or a mirror may have it: full history, no tags."""
    clone = tmp_path / "server-clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-tags", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
    )
    assert git(clone, "tag", "--list") == ""
    return clone


def test_the_checkouts_release_tags_are_at_their_release_commits() -> None:
    """Each CHANGELOG release has its release commit in history (the version in pyproject
    and the heading added together); any tag this checkout has is annotated and on it."""
    releases = RELEASE_HEADING.findall((ROOT / "CHANGELOG.md").read_text())
    assert releases, "CHANGELOG.md has no release heading: RELEASING.md says how to cut one"
    checked = release_tags(ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    reported = [line.split(":")[0] for line in checked.stdout.splitlines()]
    assert reported == [f"v{release}" for release in releases]


def test_release_tags_are_made_again_from_history_in_a_clone_without_them(
    tmp_path: Path,
) -> None:
    clone = clone_without_tags(tmp_path)
    releases = RELEASE_HEADING.findall((ROOT / "CHANGELOG.md").read_text())
    missing = release_tags(clone)
    assert missing.returncode == 0, missing.stderr
    assert all("missing" in line for line in missing.stdout.splitlines())

    created = release_tags(clone, "--create")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created at") == len(releases)
    for release in releases:
        tag = f"v{release}"
        assert git(clone, "cat-file", "-t", tag) == "tag"  # annotated: who tagged it, and when
        assert (
            tomllib.loads(git(clone, "show", f"{tag}:pyproject.toml"))["project"]["version"]
            == release
        )
        assert RELEASE_HEADING.findall(git(clone, "show", f"{tag}:CHANGELOG.md"))[0] == release
        # The tag is on the commit that released it: its parent has no such heading yet.
        before = git(clone, "show", f"{tag}^{{commit}}^:CHANGELOG.md")
        assert release not in RELEASE_HEADING.findall(before)
    again = release_tags(clone)
    assert again.returncode == 0
    assert again.stdout.count(": ok") == len(releases)


def test_a_wrong_release_tag_is_an_error_and_is_not_moved(tmp_path: Path) -> None:
    clone = clone_without_tags(tmp_path)
    (release, *_) = RELEASE_HEADING.findall((ROOT / "CHANGELOG.md").read_text())
    tag = f"v{release}"
    git(clone, "tag", tag, "HEAD~0")  # lightweight
    light = release_tags(clone, "--create")
    assert light.returncode == 1
    assert f"{tag} is a lightweight tag" in light.stderr

    git(clone, "tag", "--delete", tag)
    root_commit = git(clone, "rev-list", "--max-parents=0", "HEAD")
    git(clone, "tag", "-a", tag, "-m", "elsewhere", root_commit)
    elsewhere = release_tags(clone, "--create")
    assert elsewhere.returncode == 1
    assert f"{tag} points at {root_commit[:12]}" in elsewhere.stderr
    assert git(clone, "rev-parse", f"{tag}^{{commit}}") == root_commit  # never moved silently


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
    # Installed from a clone of this checkout, its release tags made from history (CI's
    # checkout has none), instead of the project's future host.
    server = clone_without_tags(tmp_path)
    tagged = release_tags(server, "--create")
    assert tagged.returncode == 0, tagged.stderr
    files[".pre-commit-config.yaml"] = config.replace(hosted, str(server))
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
