"""The local git mirror of the config repository: clone, fetch, resolve, read commits.

Everything here blocks. The mirror is changed (created, fetched, discarded)
only on the sync thread; commits are read by a :class:`MirrorReader`, one per
thread, so that the sync thread and the view thread never share a cache. A
``Repo`` is opened and closed per operation (GitPython leaks helper processes
in long-running programs otherwise). Config files are read from commit trees
(git objects), never from a working directory, so what is validated and
served is exactly what was committed: through ``tree_reader`` (one
``ls-tree``, blobs cached across commits) into ``config.loader``, the path
the authoring commands take too.

The mirror lives at ``<data-dir>/mirror.git`` (see ``data_dir``), a bare
repository with the remote's branches as ``refs/remotes/origin/*`` and its
tags as ``refs/upstream-tags/*``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import git
from git import Repo

from ..base.errors import GitError, InvalidParameter, MirrorDamaged
from ..base.issues import ConfigIssue
from ..base.redact import redact
from ..config.loader import RepoLimits, load_config_set
from ..config.model import ConfigSet
from ..config.names import display_prefix
from ..config.parse_memo import ParseMemo
from ..config.schema import Schema
from ..config.snapshot import CommitInfo
from .commits import commit_info
from .credentials import GitCredentials
from .data_dir import SHA_RE
from .remote import normalise_remote
from .tree_reader import BlobStore, MirrorCommitSource

# Never wait for a password prompt: fail instead (ssh gets BatchMode from GitCredentials).
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/upstream-tags/*")


def _git_error(action: str, exc: Exception) -> GitError:
    detail = exc.stderr.strip() if isinstance(exc, git.GitCommandError) else str(exc)
    detail = " ".join(str(detail).replace("stderr:", "").split())
    return GitError(redact(f"{action} failed: {detail or type(exc).__name__}"))


class GitMirror:
    def __init__(
        self,
        *,
        remote: str,
        path: Path,
        ref: str,
        timeout: float,
        depth: int = 0,
        credentials: GitCredentials | None = None,
    ) -> None:
        self.remote = normalise_remote(remote)
        self.credentials = credentials or GitCredentials(https_username="git")
        self._env = {**GIT_ENV, **self.credentials.environment(self.remote)}
        self.path = path
        self.ref = ref
        self.timeout = timeout
        self.depth = depth

    @property
    def process_env(self) -> dict[str, str]:
        """The environment of a git process run on the mirror by hand."""
        return {**os.environ, **self._env}

    @property
    def ref_is_commit(self) -> bool:
        """Whether --ref pins a full commit sha (which can never move)."""
        return bool(SHA_RE.match(self.ref))

    @property
    def remote_for_display(self) -> str:
        return redact(self.remote)

    @contextlib.contextmanager
    def open(self) -> Iterator[Repo]:
        """The mirror as a GitPython ``Repo``, closed when the block ends."""
        repo = Repo(self.path)
        try:
            repo.git.update_environment(**self._env)
            yield repo
        finally:
            repo.close()

    def is_usable(self) -> bool:
        """Whether an existing mirror can be reused: a bare repo with our remote."""
        if not (self.path / "HEAD").exists():
            return False
        try:
            with self.open() as repo:
                url = repo.git.config("--get", "remote.origin.url")
        except (git.GitError, ValueError, OSError):
            return False
        return bool(url == self.remote)

    def ensure(self) -> bool:
        """Make sure a mirror exists; returns True when one had to be created (no fetch yet).

        A mirror that is missing, broken or points elsewhere is replaced. It is
        created under a temporary name and renamed only once initialised.
        """
        if self.is_usable():
            return False
        if self.path.exists():
            shutil.rmtree(self.path)
        scratch = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            repo = Repo.init(scratch, bare=True)
            try:
                repo.git.update_environment(**self._env)
                repo.git.remote("add", "origin", self.remote)
                repo.git.config("gc.auto", "0")  # no surprise repacks on the sync thread
            finally:
                repo.close()
        except git.GitError as exc:
            raise _git_error("creating the local mirror", exc) from None
        scratch.rename(self.path)
        return True

    def discard(self) -> None:
        """Remove the mirror entirely; the next ``ensure`` starts over."""
        shutil.rmtree(self.path, ignore_errors=True)

    def remove_stale_locks(self) -> list[str]:
        """Delete git ``*.lock`` files; only safe while holding the data dir lock."""
        if not self.path.is_dir():
            return []
        removed = []
        for lock_file in self.path.rglob("*.lock"):
            if lock_file.is_file():
                lock_file.unlink()
                removed.append(str(lock_file.relative_to(self.path)))
        return removed

    def fetch(self) -> None:
        options = ["--prune", "--no-tags", "--quiet"]
        if self.depth > 0:
            options.append(f"--depth={self.depth}")
        try:
            with self.open() as repo:
                repo.git.fetch(*options, "origin", *FETCH_REFSPECS, kill_after_timeout=self.timeout)
                if self.ref_is_commit and not self._has(repo, self.ref):
                    # A pinned commit that no branch or tag reaches (or beyond --depth):
                    # ask for it by id, which most servers allow for reachable commits.
                    repo.git.fetch(*options, "origin", self.ref, kill_after_timeout=self.timeout)
        except git.GitError as exc:
            raise _git_error(f"fetch from {self.remote_for_display}", exc) from None

    @staticmethod
    def _has(repo: Repo, sha: str) -> bool:
        found = repo.git.rev_parse(
            "--verify", "--quiet", f"{sha}^{{commit}}", with_exceptions=False
        )
        return bool(found)

    def resolve(self) -> str:
        """The commit sha the configured ref points at in the mirror."""
        candidates = [f"refs/remotes/origin/{self.ref}", f"refs/upstream-tags/{self.ref}"]
        if SHA_RE.match(self.ref):
            candidates.append(self.ref)
        with self.open() as repo:
            for candidate in candidates:
                sha = repo.git.rev_parse(
                    "--verify", "--quiet", f"{candidate}^{{commit}}", with_exceptions=False
                )
                if sha:
                    return str(sha)
        raise GitError(
            f"ref '{self.ref}' not found in {self.remote_for_display} "
            "(no such branch, tag or commit; deleted?)"
        )

    def first_parents(self, sha: str, count: int) -> list[str]:
        """Up to ``count`` commits before ``sha`` on its first-parent line, newest first."""
        with self.open() as repo:
            listed = repo.git.rev_list("--first-parent", f"--max-count={count + 1}", sha)
        return str(listed).split()[1:]

    def resolve_rev(self, rev: str) -> str:
        """A full commit sha (or unambiguous prefix) present in the mirror, checked."""
        if not re.fullmatch(r"[0-9a-f]{7,40}", rev):
            raise InvalidParameter(f"not a commit id: {rev[:64]!r}")
        with self.open() as repo:
            sha = repo.git.rev_parse(
                "--verify", "--quiet", f"{rev}^{{commit}}", with_exceptions=False
            )
        if not sha:
            raise InvalidParameter(f"commit {rev} is not in the server's mirror")
        return str(sha)

    def has_commit(self, sha: str) -> bool:
        with self.open() as repo:
            return self._has(repo, sha)

    def commit_info(self, sha: str) -> CommitInfo:
        try:
            with self.open() as repo:
                return commit_info(repo.commit(sha))
        except (git.GitError, ValueError, OSError) as exc:
            raise MirrorDamaged(f"cannot read commit {sha[:12]}: {exc!r}") from None


class MirrorReader:
    """Reads commits of the mirror into config sets, for one thread.

    It keeps the blobs of the last commit it read (and, with a parse memo, its
    parsed files), so that the next commit reads and parses only what changed;
    those caches are why each thread has a reader of its own.
    """

    def __init__(self, mirror: GitMirror, *, parse_memo: ParseMemo | None = None) -> None:
        self._mirror = mirror
        self._blobs = BlobStore(mirror.path, mirror.process_env, mirror.timeout)
        self._parse_memo = parse_memo

    def load_commit(
        self, sha: str, subdir: str, schema: Schema, limits: RepoLimits
    ) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
        """The commit's metadata and its validated config set (or every issue found).

        Raises MirrorDamaged when objects of the commit cannot be read.
        """
        try:
            with self._mirror.open() as repo:
                info = commit_info(repo.commit(sha))
        except (git.GitError, ValueError, OSError) as exc:
            raise MirrorDamaged(redact(f"cannot read commit {sha[:12]}: {exc!r}")) from None
        config_set, issues = self.load_config_set(sha, subdir, schema, limits)
        return info, config_set, issues

    def load_config_set(
        self, sha: str, subdir: str, schema: Schema, limits: RepoLimits
    ) -> tuple[ConfigSet | None, list[ConfigIssue]]:
        """The commit's validated config set (or every issue found), without its metadata."""
        memo = self._parse_memo.for_schema(schema) if self._parse_memo is not None else None
        try:
            return load_config_set(
                MirrorCommitSource(self._blobs, sha, subdir, limits),
                schema,
                display_prefix=display_prefix(subdir),
                limits=limits,
                memo=memo,
            )
        except (git.GitError, ValueError, OSError, AssertionError, MirrorDamaged) as exc:
            raise MirrorDamaged(
                redact(f"cannot read commit {sha[:12]} from the mirror: {exc!r}")
            ) from None
        finally:
            self._blobs.finish_load()
            if memo is not None:
                memo.finish_build()
