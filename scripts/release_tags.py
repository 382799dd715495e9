"""Find each CHANGELOG release's commit in history; check or create its `vX.Y.Z` tag.

A release is the commit that turned `## [Unreleased]` into `## [X.Y.Z] - date`
(RELEASING.md). That commit is found from history alone, so the tags can be
checked, or made again, in any full clone: a mirror or CI checkout that was
cloned without tags, or a fork that lost them.

    python scripts/release_tags.py [--repo DIR]           # check; exit 1 on a wrong tag
    python scripts/release_tags.py [--repo DIR] --create  # also make the missing tags

A tag that exists must be annotated and point at its release commit; a
missing one is reported (and made with --create, annotated, as the current git
identity). Exit 1 when a release's commit cannot be found or holds another
version in pyproject.toml, or a tag is wrong: those are never repaired
silently.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

RELEASE_HEADING = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", re.MULTILINE)


class ReleaseError(Exception):
    """A release whose commit or tag is not what RELEASING.md says."""


@dataclass(frozen=True)
class Release:
    version: str
    heading: str  # "## [X.Y.Z] - date", as CHANGELOG.md has it
    commit: str

    @property
    def tag(self) -> str:
        return f"v{self.version}"


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result


def release_commit(repo: Path, heading: str) -> str:
    """The oldest commit that added `heading` to CHANGELOG.md (the release commit)."""
    found = git(
        repo, "log", "--reverse", "--format=%H", "-S", heading, "HEAD", "--", "CHANGELOG.md"
    ).stdout.split()
    if not found:
        shallow = git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        hint = " (a shallow clone: `git fetch --unshallow`)" if shallow else ""
        raise ReleaseError(f"no commit added {heading!r} to CHANGELOG.md{hint}")
    return found[0]


def releases(repo: Path) -> list[Release]:
    """Every release heading of CHANGELOG.md at HEAD, newest first, with its commit."""
    changelog = git(repo, "show", "HEAD:CHANGELOG.md").stdout
    found = []
    for match in RELEASE_HEADING.finditer(changelog):
        heading, version = match.group(0), match.group(1)
        commit = release_commit(repo, heading)
        pyproject = git(repo, "show", f"{commit}:pyproject.toml").stdout
        declared = tomllib.loads(pyproject)["project"]["version"]
        if declared != version:
            raise ReleaseError(
                f"{heading!r} was added in {commit[:12]}, whose pyproject.toml says "
                f"version {declared!r}: a release commit sets both (RELEASING.md)"
            )
        found.append(Release(version=version, heading=heading, commit=commit))
    return found


def tag_problem(repo: Path, release: Release) -> str | None:
    """What is wrong with the release's tag, which exists; None when it is right."""
    kind = git(repo, "cat-file", "-t", f"refs/tags/{release.tag}").stdout.strip()
    if kind != "tag":
        return f"{release.tag} is a lightweight tag; releases are tagged with `git tag -a`"
    points_at = git(repo, "rev-parse", f"refs/tags/{release.tag}^{{commit}}").stdout.strip()
    if points_at != release.commit:
        return (
            f"{release.tag} points at {points_at[:12]}, but {release.heading!r} was "
            f"released in {release.commit[:12]}"
        )
    return None


def has_tag(repo: Path, tag: str) -> bool:
    return (
        git(repo, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).returncode
        == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout (default: .)")
    parser.add_argument("--create", action="store_true", help="make the missing tags")
    args = parser.parse_args(argv)
    repo: Path = args.repo
    try:
        found = releases(repo)
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not found:
        print("CHANGELOG.md has no release heading yet")
        return 0
    failed = False
    for release in found:
        if not has_tag(repo, release.tag):
            if not args.create:
                print(f"{release.tag}: missing (release commit {release.commit[:12]}; --create)")
                continue
            message = f"lmcache-config-server {release.version}"
            git(repo, "tag", "-a", release.tag, "-m", message, release.commit)
            print(f"{release.tag}: created at {release.commit[:12]}")
            continue
        problem = tag_problem(repo, release)
        if problem is None:
            print(f"{release.tag}: ok ({release.commit[:12]})")
        else:
            print(f"error: {problem}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
