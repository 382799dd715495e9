"""Commits read with GitPython: their metadata, and one commit as a config source.

``CommitSource`` walks a commit's trees object by object, which is right for
the authoring commands (one commit at a time, in the author's clone); the
server reads its mirror through the faster ``tree_reader``, which selects
and refuses exactly the same files. Blocking.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from git import Repo
from git.objects import Blob, Commit, Tree

from ..base.errors import SourceProblem
from ..base.issues import ConfigIssue
from ..config.loader import RepoLimits, load_config_set
from ..config.model import ConfigSet
from ..config.names import APPS_DIR, ROOT_FILES, SYMLINK_REFUSED, display_prefix, is_yaml_name
from ..config.schema import Schema, SchemaChoice
from ..config.snapshot import CommitInfo


def commit_time(seconds: int) -> str:
    """A commit's timestamp in ISO 8601, or git's raw ``@seconds`` when no calendar holds it.

    Anyone can commit with any date (year 10000, or before year 1): such a
    commit is served or rejected for its content like any other.
    """
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return f"@{seconds}"


def commit_info(commit: Commit) -> CommitInfo:
    message = commit.message
    return CommitInfo(
        sha=commit.hexsha,
        author=str(commit.author.name),
        authored_at=commit_time(commit.authored_date),
        subject=str(commit.summary),
        removes_apps=removed_apps_trailer(
            message if isinstance(message, str) else message.decode("utf-8", "replace")
        ),
    )


REMOVES_APPS_TRAILER = "Removes-Apps"


def removed_apps_trailer(message: str) -> frozenset[str]:
    """The app ids of every ``Removes-Apps: a, b`` trailer (the message's last paragraph)."""
    paragraphs = [part for part in message.strip().split("\n\n") if part.strip()]
    if len(paragraphs) < 2:  # a subject alone has no trailers
        return frozenset()
    apps: set[str] = set()
    for line in paragraphs[-1].splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == REMOVES_APPS_TRAILER.lower():
            apps.update(app for app in value.replace(",", " ").split() if app)
    return frozenset(apps)


class CommitSource:
    """The files of one commit below ``subdir``, read as git objects (never a checkout)."""

    def __init__(self, commit: Commit, subdir: str) -> None:
        self._commit = commit
        self._subdir = subdir.strip("/")
        self._shown_subdir = subdir

    def root(self) -> Tree:
        """The config root's tree; SourceProblem when --path is not a directory here."""
        tree: Any = self._commit.tree
        if self._subdir:
            try:
                tree = tree / self._subdir
            except KeyError:
                tree = None
        if not isinstance(tree, Tree):
            raise SourceProblem(f"--path '{self._shown_subdir}' is not a directory in this commit")
        return tree

    def selected_paths(self) -> list[str]:
        root = self.root()
        cut = len(self._subdir) + 1 if self._subdir else 0
        paths: list[str] = []
        for item in root:
            if item.type == "blob" and item.name in ROOT_FILES:
                paths.append(item.name)
            elif item.type == "tree" and item.name == APPS_DIR:
                paths.extend(
                    str(child.path)[cut:] for child in item.traverse() if isinstance(child, Blob)
                )
        return sorted(paths)

    def yaml_paths(self) -> list[str]:
        cut = len(self._subdir) + 1 if self._subdir else 0
        return sorted(
            str(item.path)[cut:]
            for item in self.root().traverse()
            if isinstance(item, Blob) and is_yaml_name(item.name)
        )

    def _blob(self, relative: str) -> Blob:
        try:
            item = self.root() / relative
        except KeyError:
            raise SourceProblem("no such file") from None
        if not isinstance(item, Blob):
            raise SourceProblem("is a directory, not a file")
        if item.mode == Blob.link_mode:
            raise SourceProblem(SYMLINK_REFUSED)
        return item

    def size(self, relative: str) -> int:
        return int(self._blob(relative).size)

    def read(self, relative: str) -> bytes:
        data: bytes = self._blob(relative).data_stream.read()
        return data


def load_commit(
    repo: Repo,
    rev: str,
    subdir: str,
    schema: Schema | SchemaChoice,
    limits: RepoLimits | None = None,
) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
    """Load and validate the config set of one commit (the authoring commands' path)."""
    commit = repo.commit(rev)
    config_set, issues = load_config_set(
        CommitSource(commit, subdir),
        schema,
        display_prefix=display_prefix(subdir),
        limits=limits or RepoLimits(),
    )
    return commit_info(commit), config_set, issues
