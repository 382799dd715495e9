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
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import git
from git import Repo

from ..base.errors import GitError, InvalidParameter, MirrorDamaged
from ..base.issues import ConfigIssue
from ..base.redact import redact, redact_url, remember_url
from ..config.loader import RepoLimits, load_config_set
from ..config.model import ConfigSet
from ..config.names import display_prefix
from ..config.parse_memo import ParseMemo
from ..config.schema import Schema
from ..config.snapshot import CommitInfo
from .commits import commit_info
from .credentials import GitCredentials
from .data_dir import SHA_RE
from .remote import normalise_remote, remote_identity
from .tree_reader import BlobStore, MirrorCommitSource

# Never wait for a password prompt: fail instead (ssh gets BatchMode from GitCredentials).
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
log = logging.getLogger("server.sync")
FETCH_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/upstream-tags/*")


# The second record of the last good commit of each --ref (the first is
# <data-dir>/state.json), named by the ref's name in hex: any name, no clashes.
LAST_GOOD_REFS = "refs/lmcache/last-good/"
_REF_LINE = re.compile(rb"(?:[0-9a-f]{40}|ref: refs/[^\x00-\x20]+)\n?")
_PACKED_LINE = re.compile(rb"(?:# pack-refs .*|[0-9a-f]{40} refs/\S+|\^[0-9a-f]{40})")


def _mirror_ref(full: str) -> str:
    """Where the mirror keeps the remote's refs/heads/X and refs/tags/X."""
    if full.startswith("refs/heads/"):
        return "refs/remotes/origin/" + full.removeprefix("refs/heads/")
    return "refs/upstream-tags/" + full.removeprefix("refs/tags/")


def _config_text(remote: str) -> str:
    escaped = remote.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "[core]\n\trepositoryformatversion = 0\n\tbare = true\n"
        f'[remote "origin"]\n\turl = "{escaped}"\n'
        "[gc]\n\tauto = 0\n"
    )


def _packed_refs_readable(path: Path) -> bool:
    return all(_PACKED_LINE.fullmatch(line) for line in path.read_bytes().splitlines() if line)


def _loose_refs(git_dir: Path) -> list[Path]:
    refs = git_dir / "refs"
    return [path for path in refs.rglob("*") if path.is_file()] if refs.is_dir() else []


def _log_repairs(repairs: list[str]) -> None:
    for repair in repairs:
        log.warning("repaired the local mirror: %s", repair)


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
        # Taught to the redactor before any git runs: every log line and error from now on
        # hides these credentials, however git or a library spells them back.
        remember_url(remote)
        self.remote = normalise_remote(remote)
        remember_url(self.remote)
        self.credentials = credentials or GitCredentials(https_username="git")
        self._env = {**GIT_ENV, **self.credentials.environment(self.remote)}
        self.path = path
        self.ref = ref
        self.timeout = timeout
        self.depth = depth

    def use_credentials(self, credentials: GitCredentials) -> None:
        """From now on, git processes talk to the remote with ``credentials`` (a rotated token).

        One reference store: a git process already running keeps the environment it got.
        """
        self.credentials = credentials
        self._env = {**GIT_ENV, **credentials.environment(self.remote)}

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
        return redact(redact_url(self.remote))

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
        """Whether a mirror of this repository exists (it may still need ``ensure``'s repair)."""
        return self._exists() and self._configured_identity() in {None, self.identity}

    def _exists(self) -> bool:
        return (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    def _configured_url(self) -> str | None:
        """remote.origin.url of the mirror; None when its config cannot be read."""
        result = self._git("config", "--get", "remote.origin.url")
        return result.stdout.strip() if result.returncode == 0 else None

    def _configured_identity(self) -> str | None:
        url = self._configured_url()
        return remote_identity(url) if url else None

    @property
    def identity(self) -> str:
        """The repository served, however --repo spells it (see ``remote.remote_identity``)."""
        return remote_identity(self.remote)

    def ensure(self) -> bool:
        """Make sure a mirror of the repository exists; True when one had to be created.

        A mirror that exists is repaired in place, never deleted, so that the
        commits it holds (the last good one among them) survive damage and a
        remote that is down: an unreadable config is written anew, and a URL that
        names the same repository another way (a rotated token, a path for a
        file:// URL) is updated. Refs git cannot read are ``repair_refs``'s, run
        at startup and when a fetch fails, not on every sync. Only a mirror of
        another repository is replaced.
        """
        if self._exists():
            url = self._configured_url()
            if url is not None and remote_identity(url) != self.identity:
                log.warning(
                    "the data dir's mirror is of another repository (%s); replacing it",
                    redact(redact_url(url)),  # an old URL: its credentials were never remembered
                )
                shutil.rmtree(self.path)
            else:
                _log_repairs(self._repair_config(url))
                return False
        elif self.path.exists():
            shutil.rmtree(self.path)  # not a git repository at all: nothing in it to keep
        scratch = self.path.with_name(self.path.name + ".partial")
        self._init(scratch)
        scratch.rename(self.path)
        return True

    def _init(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        try:
            repo = Repo.init(path, bare=True)
            try:
                repo.git.update_environment(**self._env)
                repo.git.remote("add", "origin", self.remote)
                repo.git.config("gc.auto", "0")  # no surprise repacks on the sync thread
            finally:
                repo.close()
        except git.GitError as exc:
            raise _git_error("creating the local mirror", exc) from None

    def _repair_config(self, url: str | None) -> list[str]:
        """A config git cannot read written anew, or the URL updated; the repairs made."""
        if url is None:
            (self.path / "config").write_text(_config_text(self.remote), encoding="utf-8")
            return ["its git config could not be read: written anew"]
        if url != self.remote:
            self._git("config", "remote.origin.url", self.remote)
            return ["remote URL updated (the same repository, spelled or signed anew)"]
        return []

    def repair_refs(self) -> list[str]:
        """Remove the refs git cannot read (they come back with the next fetch).

        Each repair is logged; the list says whether there were any.
        """
        done: list[str] = []
        packed = self.path / "packed-refs"
        if packed.is_file() and not _packed_refs_readable(packed):
            packed.unlink()
            done.append("packed-refs could not be read: removed (refs come back on fetch)")
        for ref in _loose_refs(self.path):
            if not _REF_LINE.fullmatch(ref.read_bytes()):
                ref.unlink()
                done.append(f"{ref.relative_to(self.path)} could not be read: removed")
        _log_repairs(done)
        return done

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", *args],
            capture_output=True,
            text=True,
            env=self.process_env,
            timeout=self.timeout,
            check=False,
        )

    def discard(self) -> None:
        """Remove the mirror entirely; the next ``ensure`` starts over."""
        shutil.rmtree(self.path, ignore_errors=True)

    def reclone(self) -> None:
        """Fetch everything into a new mirror, and swap it in only once that has worked.

        For objects the mirror lacks (a fetch killed half-way): the old mirror,
        and the last good commit in it, stay until the new one is complete, so a
        remote that is down costs nothing.
        """
        fresh = self.path.with_name(self.path.name + ".new")
        self._init(fresh)
        try:
            self._fetch_into(fresh)
        except GitError:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        old = self.path.with_name(self.path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            self.path.rename(old)
        fresh.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)

    @property
    def _last_good_ref(self) -> str:
        return LAST_GOOD_REFS + self.ref.encode().hex()

    def mark_last_good(self, sha: str) -> None:
        """Keep the last good commit of --ref as a ref too: a second record, beside state.json."""
        self._git("update-ref", self._last_good_ref, sha)

    def marked_last_good(self) -> str | None:
        result = self._git("rev-parse", "--verify", "--quiet", f"{self._last_good_ref}^{{commit}}")
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and SHA_RE.match(sha) else None

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
        """Fetch the remote; a fetch that fails on refs git cannot read is repaired, once."""
        try:
            self._fetch_into(self.path)
        except GitError:
            if not self.repair_refs():
                raise
            self._fetch_into(self.path)

    def _fetch_into(self, path: Path) -> None:
        options = ["--prune", "--no-tags", "--quiet"]
        if self.depth > 0:
            options.append(f"--depth={self.depth}")
        try:
            repo = Repo(path)
            try:
                repo.git.update_environment(**self._env)
                repo.git.fetch(*options, "origin", *FETCH_REFSPECS, kill_after_timeout=self.timeout)
                if self.ref_is_commit and not self._has(repo, self.ref):
                    # A pinned commit that no branch or tag reaches (or beyond --depth):
                    # ask for it by id, which most servers allow for reachable commits.
                    repo.git.fetch(*options, "origin", self.ref, kill_after_timeout=self.timeout)
            finally:
                repo.close()
        except (git.GitError, ValueError, OSError) as exc:
            raise _git_error(f"fetch from {self.remote_for_display}", exc) from None

    @staticmethod
    def _has(repo: Repo, sha: str) -> bool:
        found = repo.git.rev_parse(
            "--verify", "--quiet", f"{sha}^{{commit}}", with_exceptions=False
        )
        return bool(found)

    def resolve(self) -> str:
        """The commit sha the configured ref points at in the mirror, resolved unambiguously.

        A 40-hex --ref is that commit, never a branch named like it; ``refs/heads/X``
        and ``refs/tags/X`` name a branch or a tag; a short name is whichever exists.
        A short name that is both is an error, unless this mirror has resolved it
        before: then it stays what it was (a tag stays a tag when someone pushes a
        branch of the same name).
        """
        ref = self.ref
        with self.open() as repo:

            def commit_of(candidate: str) -> str | None:
                sha = repo.git.rev_parse(
                    "--verify", "--quiet", f"{candidate}^{{commit}}", with_exceptions=False
                )
                return str(sha) if sha else None

            if SHA_RE.match(ref):
                found = commit_of(ref)
            elif ref.startswith(("refs/heads/", "refs/tags/")):
                found = commit_of(_mirror_ref(ref))
            else:
                found = self._resolve_short(repo, ref, commit_of)
        if found is None:
            raise GitError(
                f"ref '{ref}' not found in {self.remote_for_display} "
                "(no such branch, tag or commit; deleted?)"
            )
        return found

    def _resolve_short(
        self, repo: Repo, ref: str, commit_of: Callable[[str], str | None]
    ) -> str | None:
        branch = commit_of(_mirror_ref(f"refs/heads/{ref}"))
        tag = commit_of(_mirror_ref(f"refs/tags/{ref}"))
        key = f"lmcache.{ref.encode().hex()}.refkind"  # any name, as a subsection
        known = repo.git.config("--get", key, with_exceptions=False) or None
        if branch is not None and tag is not None:
            if known == "tag":
                return tag
            if known == "branch":
                return branch
            raise GitError(
                f"ref '{ref}' is both a branch and a tag in {self.remote_for_display}: "
                f"give --ref refs/heads/{ref} or --ref refs/tags/{ref}"
            )
        kind, found = ("branch", branch) if branch is not None else ("tag", tag)
        if found is not None and known != kind:
            if known is not None:  # the kind it was is gone; say so once
                log.warning("ref '%s' was a %s and is now a %s", ref, known, kind)
            repo.git.config(key, kind)
        return found

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

    def find_commit(self, rev: str) -> str | None:
        """The full sha of a commit id (or unambiguous prefix) the mirror holds; None when it
        holds none (or the prefix is ambiguous). No fetch: the remote may be down."""
        if not re.fullmatch(r"[0-9a-f]{7,40}", rev):
            raise InvalidParameter(f"not a commit id: {rev[:64]!r}")
        with self.open() as repo:
            sha = repo.git.rev_parse(
                "--verify", "--quiet", f"{rev}^{{commit}}", with_exceptions=False
            )
        return str(sha) if sha and SHA_RE.match(str(sha)) else None

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

    def __init__(
        self,
        mirror: GitMirror,
        *,
        parse_memo: ParseMemo | None = None,
        between_files: Callable[[], None] | None = None,
    ) -> None:
        """``between_files``: called before each file is read (a view's reader steps aside
        for a build there: ``base.tasks.Precedence``)."""
        self._mirror = mirror
        self._blobs = BlobStore(mirror.path, mirror.process_env, mirror.timeout)
        self._parse_memo = parse_memo
        self._between_files = between_files

    def load_commit(
        self,
        sha: str,
        subdir: str,
        schema: Schema,
        limits: RepoLimits,
        *,
        between_files: Callable[[], None] | None = None,
    ) -> tuple[CommitInfo, ConfigSet | None, list[ConfigIssue]]:
        """The commit's metadata and its validated config set (or every issue found).

        ``between_files``: called before each file, after the reader's own (a build
        freezes what it made so far there: ``base.collector``). Raises MirrorDamaged when
        objects of the commit cannot be read.
        """
        try:
            with self._mirror.open() as repo:
                info = commit_info(repo.commit(sha))
        except (git.GitError, ValueError, OSError) as exc:
            raise MirrorDamaged(redact(f"cannot read commit {sha[:12]}: {exc!r}")) from None
        config_set, issues = self.load_config_set(
            sha, subdir, schema, limits, between_files=between_files
        )
        return info, config_set, issues

    def load_config_set(
        self,
        sha: str,
        subdir: str,
        schema: Schema,
        limits: RepoLimits,
        *,
        between_files: Callable[[], None] | None = None,
    ) -> tuple[ConfigSet | None, list[ConfigIssue]]:
        """The commit's validated config set (or every issue found), without its metadata."""
        # The loader empties the memo when the schema changes (it knows the declared versions).
        memo = self._parse_memo
        try:
            return load_config_set(
                MirrorCommitSource(self._blobs, sha, subdir, limits),
                schema,
                display_prefix=display_prefix(subdir),
                limits=limits,
                memo=memo,
                between_files=_both(self._between_files, between_files),
            )
        except (git.GitError, ValueError, OSError, AssertionError, MirrorDamaged) as exc:
            raise MirrorDamaged(
                redact(f"cannot read commit {sha[:12]} from the mirror: {exc!r}")
            ) from None
        finally:
            self._blobs.finish_load()
            if memo is not None:
                memo.finish_build()


def _both(
    first: Callable[[], None] | None, second: Callable[[], None] | None
) -> Callable[[], None] | None:
    if first is None or second is None:
        return first or second

    def call_both() -> None:
        first()
        second()

    return call_both
