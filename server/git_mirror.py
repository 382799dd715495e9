"""The local git mirror of the config repository: clone, fetch, resolve, read trees.

Everything here blocks and must run on the sync executor's single thread, so
git operations never race each other. A ``Repo`` is opened and closed per
operation (GitPython leaks helper processes in long-running programs otherwise).
Config files are read from commit trees (git objects), never from a working
directory, so what is validated and served is exactly what was committed; they
are read by ``commit_files.MirrorCommitSource`` (one ``ls-tree``, blobs cached
across commits) and validated by ``repo_format.load_config_set``, the path the
authoring commands take too, with a parse memo so a commit re-parses only the
files it changed.

Layout of the data directory::

    <data-dir>/lock          held by the running server (one server per directory)
    <data-dir>/mirror.git    bare mirror; refs/remotes/origin/* and refs/upstream-tags/*
    <data-dir>/state.json    the last good commit, written atomically
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import git
from git import Repo

from .commit_files import BlobStore, MirrorCommitSource, TreeUnreadable
from .config_history import AppHistory, FingerprintMemo, app_history
from .config_issues import ConfigIssue
from .config_source import commit_info, display_prefix
from .errors import GitError, InvalidParameter, SettingsError
from .git_credentials import GitCredentials
from .lmcache_schema import Schema
from .parse_memo import ParseMemo
from .redact import redact
from .repo_format import ConfigSet, RepoLimits, load_config_set
from .snapshot import CommitInfo

# Never wait for a password prompt: fail instead (ssh gets BatchMode from GitCredentials).
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCP_RE = re.compile(r"^[^/]+@[^/]+:")
FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/upstream-tags/*")


def normalise_remote(repo: str) -> str:
    """A URL as given, or a local path made absolute (git runs inside the mirror)."""
    if _URL_RE.match(repo) or _SCP_RE.match(repo):
        return repo
    return str(Path(repo).expanduser().resolve())


def _git_error(action: str, exc: Exception) -> GitError:
    detail = exc.stderr.strip() if isinstance(exc, git.GitCommandError) else str(exc)
    detail = " ".join(str(detail).replace("stderr:", "").split())
    return GitError(redact(f"{action} failed: {detail or type(exc).__name__}"))


class MirrorDamaged(GitError):
    """Objects the mirror should hold are missing or unreadable (e.g. killed mid-fetch)."""


class DataDirLock:
    """An exclusive lock on the data directory: two servers must not share a mirror."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SettingsError(
                f"data dir {self._path.parent} is in use by another server process; "
                "give each server its own --data-dir"
            ) from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class GitMirror:
    def __init__(
        self,
        *,
        remote: str,
        data_dir: Path,
        ref: str,
        timeout: float,
        depth: int = 0,
        credentials: GitCredentials | None = None,
    ) -> None:
        self.remote = normalise_remote(remote)
        self.credentials = credentials or GitCredentials(https_username="git")
        self._env = {**GIT_ENV, **self.credentials.environment(self.remote)}
        self.path = data_dir / "mirror.git"
        self.state_path = data_dir / "state.json"
        self.ref = ref
        self.timeout = timeout
        self.depth = depth
        # Effective-config fingerprints per config tree, for /history; git thread only.
        self.history_memo = FingerprintMemo()
        # Blobs and parsed files of the last commit loaded, so the next one reuses them.
        self.blobs = BlobStore(self.path, {**os.environ, **self._env}, timeout)
        self.parse_memo = ParseMemo()

    @property
    def ref_is_commit(self) -> bool:
        """Whether --ref pins a full commit sha (which can never move)."""
        return bool(_SHA_RE.match(self.ref))

    @property
    def remote_for_display(self) -> str:
        return redact(self.remote)

    @contextlib.contextmanager
    def _open(self) -> Iterator[Repo]:
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
            with self._open() as repo:
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
            with self._open() as repo:
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
        if _SHA_RE.match(self.ref):
            candidates.append(self.ref)
        with self._open() as repo:
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

    def resolve_rev(self, rev: str) -> str:
        """A full commit sha (or unambiguous prefix) present in the mirror, checked."""
        if not re.fullmatch(r"[0-9a-f]{7,40}", rev):
            raise InvalidParameter(f"not a commit id: {rev[:64]!r}")
        with self._open() as repo:
            sha = repo.git.rev_parse(
                "--verify", "--quiet", f"{rev}^{{commit}}", with_exceptions=False
            )
        if not sha:
            raise InvalidParameter(f"commit {rev} is not in the server's mirror")
        return str(sha)

    def has_commit(self, sha: str) -> bool:
        with self._open() as repo:
            return self._has(repo, sha)

    def load_commit(
        self, sha: str, subdir: str, schema: Schema, limits: RepoLimits | None = None
    ) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
        """The commit's metadata and its validated config set (or every issue found).

        Raises MirrorDamaged when objects of the commit cannot be read.
        """
        limits = limits or RepoLimits()
        try:
            with self._open() as repo:
                info = commit_info(repo.commit(sha))
            config_set, issues = load_config_set(
                MirrorCommitSource(self.blobs, sha, subdir, limits),
                schema,
                display_prefix=display_prefix(subdir),
                limits=limits,
                memo=self.parse_memo.for_schema(schema),
            )
        except (git.GitError, ValueError, OSError, AssertionError, TreeUnreadable) as exc:
            raise MirrorDamaged(
                redact(f"cannot read commit {sha[:12]} from the mirror: {exc!r}")
            ) from None
        finally:
            self.blobs.finish_load()
            self.parse_memo.finish_build()
        return info, config_set, issues

    def commit_info(self, sha: str) -> CommitInfo:
        try:
            with self._open() as repo:
                return commit_info(repo.commit(sha))
        except (git.GitError, ValueError, OSError) as exc:
            raise MirrorDamaged(f"cannot read commit {sha[:12]}: {exc!r}") from None

    def app_history(  # noqa: PLR0917 - called through the executor, which passes positionals
        self, start: str, subdir: str, schema: Schema, app_id: str, limit: int, limits: RepoLimits
    ) -> AppHistory:
        """The commits before ``start`` (first parents) that changed an app's effective config."""
        with self._open() as repo:
            return app_history(
                repo,
                start,
                subdir,
                schema,
                app_id,
                limit=limit,
                memo=self.history_memo,
                limits=limits,
            )

    # -- the last good commit, kept across restarts --

    def load_last_good(self) -> str | None:
        try:
            state = json.loads(self.state_path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        sha = state.get("last_good") if isinstance(state, dict) else None
        if (
            isinstance(sha, str)
            and _SHA_RE.match(sha)
            and state.get("remote") == self.remote_for_display
            and state.get("ref") == self.ref  # another --ref must not restore this one's commit
        ):
            return sha
        return None

    def save_last_good(self, sha: str) -> None:
        state = {"remote": self.remote_for_display, "ref": self.ref, "last_good": sha}
        scratch = self.state_path.with_suffix(".tmp")
        with scratch.open("w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.state_path)
