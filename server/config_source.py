"""Where a config set's files come from: a commit tree or a directory on disk.

The server reads commits of its mirror; ``validate``, ``render`` and ``diff``
read commits of the author's clone or its working tree. Both hand their source
to ``repo_format.load_config_set``, so a file that the server would reject is
rejected here with the same message, and the same files are selected:
``global.yaml`` (and a misnamed ``global.yml``) at the config root, everything
below ``apps/``, and the fragments those files include.
"""

from __future__ import annotations

import os
import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from git import Repo
from git.objects import Blob, Commit, Tree

from .config_issues import ConfigIssue
from .lmcache_schema import Schema
from .repo_format import (
    APPS_DIR,
    GLOBAL_FILE,
    ConfigSet,
    RepoLimits,
    SourceProblem,
    load_config_set,
)
from .snapshot import CommitInfo

_SYMLINK = "symbolic links are not followed in a config repository"
_ROOT_FILES = (GLOBAL_FILE, "global.yml")


def display_prefix(subdir: str) -> str:
    """``subdir/`` as issues show it, or empty for the repository root."""
    stripped = subdir.strip("/")
    return f"{stripped}/" if stripped else ""


def commit_info(commit: Commit) -> CommitInfo:
    return CommitInfo(
        sha=commit.hexsha,
        author=str(commit.author.name),
        authored_at=datetime.fromtimestamp(commit.authored_date, UTC).isoformat(),
        subject=str(commit.summary),
    )


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
            if item.type == "blob" and item.name in _ROOT_FILES:
                paths.append(item.name)
            elif item.type == "tree" and item.name == APPS_DIR:
                paths.extend(
                    str(child.path)[cut:] for child in item.traverse() if isinstance(child, Blob)
                )
        return sorted(paths)

    def _blob(self, relative: str) -> Blob:
        try:
            item = self.root() / relative
        except KeyError:
            raise SourceProblem("no such file") from None
        if not isinstance(item, Blob):
            raise SourceProblem("is a directory, not a file")
        if item.mode == Blob.link_mode:
            raise SourceProblem(_SYMLINK)
        return item

    def size(self, relative: str) -> int:
        return int(self._blob(relative).size)

    def read(self, relative: str) -> bytes:
        data: bytes = self._blob(relative).data_stream.read()
        return data


class DirectorySource:
    """The files below a directory on disk, as an editor sees them (committed or not)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def selected_paths(self) -> list[str]:
        if not self._root.is_dir():
            raise SourceProblem(f"'{self._root}' is not a directory")
        paths = [name for name in _ROOT_FILES if (self._root / name).is_file()]
        paths += [name for name in _ROOT_FILES if (self._root / name).is_symlink()]
        apps = self._root / APPS_DIR
        if apps.is_dir() and not apps.is_symlink():
            for folder, dirs, files in os.walk(apps):
                relative = Path(folder).relative_to(self._root).as_posix()
                links = [d for d in dirs if (Path(folder) / d).is_symlink()]
                dirs[:] = sorted(d for d in dirs if d not in links and d != ".git")
                paths += [posixpath.join(relative, name) for name in (*files, *links)]
        return sorted(set(paths))

    def _file(self, relative: str) -> Path:
        target = self._root / relative
        parts = Path(relative).parts
        for depth in range(1, len(parts) + 1):
            if (self._root.joinpath(*parts[:depth])).is_symlink():
                raise SourceProblem(_SYMLINK)
        if target.is_dir():
            raise SourceProblem("is a directory, not a file")
        return target

    def size(self, relative: str) -> int:
        try:
            return self._file(relative).stat().st_size
        except FileNotFoundError:
            raise SourceProblem("no such file") from None
        except OSError as exc:
            raise SourceProblem(f"cannot read: {exc.strerror}") from None

    def read(self, relative: str) -> bytes:
        target = self._file(relative)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise SourceProblem("no such file") from None
        except OSError as exc:
            raise SourceProblem(f"cannot read: {exc.strerror}") from None


def load_commit(
    repo: Repo, rev: str, subdir: str, schema: Schema, limits: RepoLimits | None = None
) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
    """Load and validate the config set of one commit (the server's and the CLI's path)."""
    commit = repo.commit(rev)
    limits = limits or RepoLimits()
    config_set, issues = load_config_set(
        CommitSource(commit, subdir), schema, display_prefix=display_prefix(subdir), limits=limits
    )
    return commit_info(commit), config_set, issues


def load_directory(
    root: Path, schema: Schema, *, prefix: str = ""
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    """Load and validate the config set in a directory (a working tree); issues start ``prefix``."""
    return load_config_set(DirectorySource(root), schema, display_prefix=prefix)
