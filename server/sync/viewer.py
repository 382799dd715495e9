"""Git work that only shows: the history of an app, and snapshots of past commits.

It runs on the view thread, never on the sync thread, so that a long history
walk or a dashboard link to an old commit never delays the sync that decides
what workers get. It reads the mirror with a reader (and a history memo) of
its own, and never changes the mirror. Every process has one, the followers
of ``--workers N`` too.
"""

from __future__ import annotations

import time

import git

from ..base.errors import GitError, InvalidParameter, NotReady
from ..base.redact import redact
from ..base.tasks import OneThread, Precedence
from ..config.loader import RepoLimits
from ..config.model import ConfigSet
from ..config.parse_memo import ParseMemo
from ..config.schema import load_schema
from ..config.snapshot import Snapshot
from ..git.history import AppHistory, FingerprintMemo, app_history
from ..git.mirror import GitMirror, MirrorReader


def _recloning() -> NotReady:
    return NotReady("the server is cloning its mirror again; retry in a moment")


class CommitViewer:
    def __init__(
        self,
        *,
        mirror: GitMirror,
        view_thread: OneThread,
        subdir: str,
        limits: RepoLimits,
        lmcache_versions: tuple[str, ...] = (),
        precedence: Precedence | None = None,
    ) -> None:
        """``precedence``: shared with the builder; this viewer steps aside while it builds."""
        self._mirror = mirror
        self._precedence = precedence or Precedence()
        self._lmcache_versions = lmcache_versions  # as the builder's
        self._thread = view_thread
        self._subdir = subdir
        self._limits = limits
        # Its own blob cache and parse memo: walking history, adjacent commits share
        # most files, so each costs about the files it changed.
        self._reader = MirrorReader(
            mirror, parse_memo=ParseMemo(), between_files=self._precedence.step_aside
        )
        # Effective-config fingerprints per config tree, for /history; view thread only.
        self._history_memo = FingerprintMemo()

    async def history(self, app_id: str, start: str, limit: int) -> AppHistory:
        """Commits up to ``start`` that changed ``app_id``'s config, newest first."""
        try:
            return await self._thread.run(self._history_blocking, app_id, start, limit)
        except (git.NoSuchPathError, FileNotFoundError):
            raise _recloning() from None
        except (git.GitError, ValueError) as exc:
            if not self._mirror.is_usable():
                raise _recloning() from None
            raise GitError(redact(f"reading the history of {start[:12]} failed: {exc}")) from None

    def _history_blocking(self, app_id: str, start: str, limit: int) -> AppHistory:
        schema = load_schema(versions=self._lmcache_versions)

        def load(sha: str) -> ConfigSet | None:
            self._precedence.step_aside()  # and before each file (the reader's between_files)
            config_set, _ = self._reader.load_config_set(sha, self._subdir, schema, self._limits)
            return config_set

        with self._mirror.open() as repo:
            return app_history(
                repo,
                start,
                self._subdir,
                app_id,
                limit=limit,
                memo=self._history_memo,
                load=load,
                # The walk's time bound counts only the time it ran, not its steps aside.
                clock=self._precedence.clock,
            )

    async def snapshot_at(self, rev: str) -> Snapshot:
        """A snapshot of any commit in the mirror (for viewing), secrets left unresolved."""
        try:
            return await self._thread.run(self._snapshot_blocking, rev)
        except (git.GitError, OSError, GitError, InvalidParameter):
            # The sync thread may be cloning the mirror again right now (it found it
            # damaged): say so, rather than a 500 or a false "not in the mirror".
            if not self._mirror.is_usable():
                raise _recloning() from None
            raise

    def _snapshot_blocking(self, rev: str) -> Snapshot:
        schema = load_schema(versions=self._lmcache_versions)
        sha = self._mirror.resolve_rev(rev)
        info, config_set, issues = self._reader.load_commit(sha, self._subdir, schema, self._limits)
        if config_set is None:
            raise InvalidParameter(
                f"commit {sha[:12]} did not pass validation ({len(issues)} error(s)); "
                "it was never served"
            )
        return Snapshot(
            commit=info,
            config_set=config_set,
            loaded_at=time.time(),
            schema_source=schema.with_versions(config_set.lmcache_versions).source,
        )
