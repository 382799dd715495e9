"""Which commits changed an app's effective config: the walk behind ``GET /history``.

Walks the first-parent history of a commit (the commits a branch actually went
through, merges included), loads each commit's config set the way the server
does (through the caller's loader: the mirror's fast reader, whose blob cache
and parse memo make a commit cost only the files it changed), and compares the
app's view (``config.views.AppView``) with the previous valid commit's.
Commits that fail validation never served, so they are skipped. Fingerprints
are remembered per config-root tree and app, so commits that changed nothing
below the root, and repeated requests, cost no parsing. The walk is bounded in
commits and in time; a walk cut short says so (``complete: false``). Blocking:
runs on the view thread, never on the sync thread.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from git import Repo
from git.objects import Commit, Tree

from ..config.model import ConfigSet
from ..config.snapshot import CommitInfo
from ..config.views import app_view
from .commits import commit_info

# A commit's config set, or None when it does not validate.
ConfigSetLoader = Callable[[str], ConfigSet | None]

MAX_COMMITS_SCANNED = 1000
# A walk stops (incomplete) after this long, whatever it has found: a view, not a sync.
MAX_WALK_SECONDS = 20.0
_INVALID = "invalid"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppHistory:
    app_id: str
    start: str
    commits: tuple[CommitInfo, ...]  # newest first
    scanned: int
    complete: bool  # False when the walk stopped at the limit or the scan bound

    def as_json(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "start": self.start,
            "commits": [commit.as_json() for commit in self.commits],
            "scanned": self.scanned,
            "complete": self.complete,
        }


class FingerprintMemo:
    """Per config-root tree sha: fingerprints of the apps asked for, or None for an invalid tree.

    Bounded by trees and by fingerprints held in all (least recently used goes first),
    so a repository with thousands of apps cannot make it hold millions of entries;
    one per mirror, used on the view thread only.
    """

    def __init__(self, max_trees: int = 4096, max_fingerprints: int = 200_000) -> None:
        self._max = max_trees
        self._max_fingerprints = max_fingerprints
        self._held = 0
        self._trees: collections.OrderedDict[str, dict[str | None, str] | None] = (
            collections.OrderedDict()
        )

    def get(self, tree: str) -> tuple[bool, dict[str | None, str] | None]:
        if tree not in self._trees:
            return False, None
        self._trees.move_to_end(tree)
        return True, self._trees[tree]

    def put(self, tree: str, fingerprints: dict[str | None, str] | None) -> None:
        previous = self._trees.pop(tree, None)
        self._held -= len(previous or ())
        self._trees[tree] = fingerprints
        self._held += len(fingerprints or ())
        while len(self._trees) > 1 and (
            len(self._trees) > self._max or self._held > self._max_fingerprints
        ):
            _, dropped = self._trees.popitem(last=False)
            self._held -= len(dropped or ())


def _root_tree(commit: Commit, subdir: str) -> Tree | None:
    tree: Any = commit.tree
    if subdir.strip("/"):
        try:
            tree = tree / subdir.strip("/")
        except KeyError:
            return None
    return tree if isinstance(tree, Tree) else None


def _fingerprint(
    commit: Commit, subdir: str, app_id: str, memo: FingerprintMemo, load: ConfigSetLoader
) -> str:
    """The app's view fingerprint at ``commit``, or _INVALID; only this app's is computed."""
    tree = _root_tree(commit, subdir)
    if tree is None:
        return _INVALID
    known, fingerprints = memo.get(tree.hexsha)
    if known and fingerprints is None:
        return _INVALID
    if fingerprints is not None and app_id in fingerprints:
        return fingerprints[app_id]
    config_set = load(commit.hexsha)
    if config_set is None:
        memo.put(tree.hexsha, None)
        return _INVALID
    found = dict(fingerprints or {})
    found[app_id] = app_view(config_set, app_id).fingerprint()
    memo.put(tree.hexsha, found)
    return found[app_id]


def app_history(
    repo: Repo,
    start: str,
    subdir: str,
    app_id: str,
    *,
    limit: int,
    memo: FingerprintMemo,
    load: ConfigSetLoader,
    max_scanned: int = MAX_COMMITS_SCANNED,
    max_seconds: float = MAX_WALK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AppHistory:
    """Up to ``limit`` commits, newest first, after which ``app_id`` got a different answer.

    ``clock``: what ``max_seconds`` is measured on (monotonic; the viewer's stands still
    while the walk steps aside for a build)."""
    empty = app_view(ConfigSet(global_file=None, apps={}), app_id).fingerprint()
    found: list[CommitInfo] = []
    newer: tuple[Commit, str] | None = None  # the newest valid commit not yet compared
    scanned = 0
    reached_root = False
    deadline = clock() + max_seconds

    def cut_short() -> AppHistory:
        return AppHistory(
            app_id=app_id, start=start, commits=tuple(found), scanned=scanned, complete=False
        )

    for commit in repo.iter_commits(start, first_parent=True, max_count=max_scanned):
        if clock() > deadline:
            return cut_short()
        scanned += 1
        reached_root = not commit.parents
        fingerprint = _fingerprint(commit, subdir, app_id, memo, load)
        if fingerprint == _INVALID:
            continue
        if newer is not None and newer[1] != fingerprint:
            found.append(commit_info(newer[0]))
            if len(found) >= limit:
                return cut_short()
        newer = (commit, fingerprint)
    if reached_root and newer is not None and newer[1] != empty:
        found.append(commit_info(newer[0]))  # the commit that first gave the app a config
    return AppHistory(
        app_id=app_id,
        start=start,
        commits=tuple(found[:limit]),
        scanned=scanned,
        complete=reached_root,
    )
