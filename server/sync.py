"""Keeps the served snapshot in step with the remote, off the event loop.

One ``Syncer`` per app. Its git work (fetch, read trees, validate, build the
snapshot) runs on a single-thread executor; the event loop only swaps the
finished snapshot in. A fetch that fails or hangs (it is killed after
``--git-timeout``) never touches the snapshot being served. A commit that fails
validation is recorded as rejected and not retried until the ref moves.
Every sync attempt ends in one ``SyncRecord``, one log line and one count in
``SyncState`` (which ``/status`` and ``/metrics`` read).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import git

from .commit_signatures import SignaturePolicy
from .config_history import AppHistory
from .config_issues import ConfigIssue
from .errors import GitError, InvalidParameter, NotReady
from .git_credentials import load_git_credentials
from .git_mirror import DataDirLock, GitMirror, MirrorDamaged
from .lmcache_schema import Schema, load_schema
from .logs import log_event
from .redact import redact
from .repo_format import RepoLimits
from .secret_values import SecretSource
from .settings import Settings
from .snapshot import CommitInfo, Snapshot, SnapshotHolder

log = logging.getLogger(__name__)
T = TypeVar("T")

RECENT_SYNCS = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncRecord:
    trigger: str  # startup, poll, manual, ...
    started_at: float
    finished_at: float
    result: str  # restored, updated, unchanged, rejected, failed
    old_commit: str | None
    new_commit: str | None
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rejection:
    commit: CommitInfo
    issues: tuple[ConfigIssue, ...]
    rejected_at: float
    # Rejected (also) for this server's state, e.g. a missing secret: retried at each
    # sync, since fixing the server rather than the commit must be enough.
    server_side: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "commit": self.commit.as_json(),
            "rejected_at": self.rejected_at,
            "errors": [str(issue) for issue in self.issues],
        }


@dataclasses.dataclass(kw_only=True)
class SyncState:
    """What /status reports about syncing. Touched only on the event loop."""

    last_sync: SyncRecord | None = None
    last_success_at: float | None = None
    last_rejection: Rejection | None = None
    consecutive_failures: int = 0
    next_poll_at: float | None = None
    backoff_seconds: float = 0.0
    coalesced: int = 0  # sync requests folded into one already queued
    watching: str | None = None  # the local upstream git dir being watched
    task_error: str | None = None
    recent: collections.deque[SyncRecord] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_SYNCS)
    )
    # Totals since startup, by trigger (restored, startup, poll, manual, ...): for /metrics.
    attempts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    rejected_commits: int = 0


def repo_limits(settings: Settings) -> RepoLimits:
    return RepoLimits(
        max_file_bytes=settings.max_yaml_file_bytes,
        max_files=settings.max_repo_files,
        max_total_bytes=settings.max_repo_bytes,
    )


class Syncer:
    """Runs syncs one at a time: at most one running and one queued, whatever the triggers."""

    def __init__(self, settings: Settings, holder: SnapshotHolder) -> None:
        self.settings = settings
        self.holder = holder
        self.state = SyncState()
        self.mirror = GitMirror(
            remote=settings.repo,
            data_dir=Path(settings.data_dir),
            ref=settings.ref,
            timeout=settings.git_timeout,
            depth=settings.depth,
            credentials=load_git_credentials(settings),
        )
        self._lock: DataDirLock | None = DataDirLock(Path(settings.data_dir))
        self._secret_source = SecretSource(settings.secrets_dir)
        self._signatures = (
            SignaturePolicy(
                data_dir=Path(settings.data_dir),
                gpg_keys=settings.trusted_gpg_keys,
                allowed_signers=settings.allowed_signers,
            )
            if settings.require_signed_commits
            else None
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._schema: Schema | None = None
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._queued_trigger: str | None = None
        self._waiters: list[asyncio.Future[SyncRecord]] = []
        self.first_attempt_done = asyncio.Event()
        # Bumped each time a snapshot is published (a new commit, or the same commit with
        # rotated secrets): other worker processes rebuild when it moves.
        self.generation = 0
        # Called on the event loop after every sync outcome (the worker pool relays it).
        self.listeners: list[Callable[[], None]] = []

    # -- lifecycle (driven by the app's cleanup_ctx) --

    async def start(self) -> None:
        if self._lock is not None:
            self._lock.acquire()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="git-sync")
        if self._signatures is not None:
            # A bad trusted-key file must stop startup, not leave a server that never serves.
            try:
                await self._in_git_thread(self._signatures.prepare)
            except Exception:
                self._executor.shutdown()
                if self._lock is not None:
                    self._lock.release()
                raise
        self._task = asyncio.create_task(self._guarded_run(), name="config-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiter in self._waiters:
            waiter.cancel()
        if self._executor is not None:
            # Waits for a git command in flight; each one is bounded by --git-timeout.
            executor = self._executor
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        if self._lock is not None:
            self._lock.release()

    async def _guarded_run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dead sync loop must be loud and visible
            log.exception("the sync task crashed; the last snapshot keeps serving")
            self.state.task_error = f"{type(exc).__name__} (see the server log)"
            # Nobody may wait forever for a sync that will not come.
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(NotReady("the sync task crashed; see /status"))
            self._waiters = []
            raise

    async def _run(self) -> None:
        await self._in_git_thread(self._prepare)
        try:
            await self.restore()
        except Exception:  # restoring is a head start, never a reason to stop syncing
            log.exception("restoring the last good commit failed; syncing from the remote")
        trigger = "startup"
        while True:
            waiters, self._waiters = self._waiters, []
            record = await self.sync(trigger)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(record)
            self.first_attempt_done.set()
            trigger = await self._wait_for_trigger()

    async def _wait_for_trigger(self) -> str:
        """Sleep until the next poll, or until someone asks for a sync; return the trigger."""
        delay = self._next_delay()
        self.state.next_poll_at = time.time() + delay if delay is not None else None
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._wake.clear()
        trigger, self._queued_trigger = self._queued_trigger, None
        return trigger or "poll"

    def _next_delay(self) -> float | None:
        """Seconds to the next poll; None when the ref is a commit that is already served."""
        if self.mirror.ref_is_commit and self._served_sha() == self.settings.ref:
            return None  # a pinned commit cannot change: nothing to poll
        base = self.settings.poll_interval
        failures = self.state.consecutive_failures
        if failures:
            cap = max(base, self.settings.max_backoff)
            base = min(base * 2**failures, cap)
        self.state.backoff_seconds = base if failures else 0.0
        # Jitter so that replicas started together do not fetch in step.
        return base * random.uniform(0.9, 1.1)  # noqa: S311 - not security related

    def request_sync(self, trigger: str) -> None:
        """Ask for a sync soon, without waiting. Bursts coalesce into one queued sync."""
        if self._queued_trigger is None:
            self._queued_trigger = trigger
        else:
            self.state.coalesced += 1
        self._wake.set()

    async def refresh(self, trigger: str) -> SyncRecord:
        """Ask for a sync and wait for one that started after this call."""
        if self._task is None or self._task.done():
            raise NotReady("the sync task is not running; see /status")
        waiter: asyncio.Future[SyncRecord] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.request_sync(trigger)
        return await waiter

    async def _in_git_thread(self, func: Callable[..., T], *args: object) -> T:
        assert self._executor is not None, "syncer not started"
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _prepare(self) -> None:
        self._schema = load_schema()
        log.info("LMCache schema: %s (%d fields)", self._schema.source, len(self._schema.fields))
        # We hold the data dir lock, so any git lock file in the mirror is a leftover of a
        # process killed mid-fetch; left in place it would fail every later fetch.
        for leftover in self.mirror.remove_stale_locks():
            log.warning("removed stale git lock file %s (left by an interrupted fetch)", leftover)

    # -- building snapshots (git thread) --

    def _build(self, sha: str) -> Snapshot | Rejection:
        assert self._schema is not None
        if self._signatures is not None:
            refusal = self._signatures.check(self.mirror.path, sha)
            if refusal is not None:
                info = self.mirror.commit_info(sha)
                issue = ConfigIssue(path=".", line=1, column=1, message=refusal)
                return Rejection(commit=info, issues=(issue,), rejected_at=time.time())
        info, config_set, issues = self.mirror.load_commit(
            sha, self.settings.path, self._schema, repo_limits(self.settings)
        )
        secrets: dict[str, str] = {}
        secret_issues: list[ConfigIssue] = []
        if config_set is not None:
            secrets, secret_issues = self._secret_source.resolve(config_set)
            issues = [*issues, *secret_issues]
        if config_set is None or issues:
            return Rejection(
                commit=info,
                issues=tuple(sorted(issues)),
                rejected_at=time.time(),
                server_side=bool(secret_issues),
            )
        return Snapshot(
            commit=info,
            config_set=config_set,
            loaded_at=time.time(),
            schema_source=self._schema.source,
            secrets=secrets,
        )

    def _restore_blocking(self) -> Snapshot | Rejection | None:
        if not self.mirror.is_usable():
            return None
        sha = self.mirror.load_last_good()
        try:
            if sha is None or not self.mirror.has_commit(sha):
                sha = self.mirror.resolve()
            return self._build(sha)
        except MirrorDamaged as exc:
            log.error("local mirror is damaged (%s); it will be cloned again", exc.message)
            self.mirror.discard()
            return None
        except GitError:
            return None
        except Exception:  # restore is an optimisation: on any surprise, sync from scratch
            log.exception("restoring from the local mirror failed; syncing instead")
            return None

    def _sync_blocking(
        self, served: str | None, rejected: str | None, retry_rejected: bool
    ) -> Snapshot | Rejection | str:
        """Fetch and build; returns a new snapshot, a rejection, or the unchanged sha."""
        self.mirror.ensure()
        if not (self.mirror.ref_is_commit and served == self.settings.ref):
            self.mirror.fetch()
        tip = self.mirror.resolve()
        if tip == served and self._secrets_changed():
            return self._build(tip)  # same commit, rotated secret: rebuild the answers
        if tip == served or (tip == rejected and not retry_rejected):
            return tip
        try:
            return self._build(tip)
        except MirrorDamaged:
            # Objects we need are unreadable: start over from the remote, once.
            self.mirror.discard()
            self.mirror.ensure()
            self.mirror.fetch()
            return self._build(self.mirror.resolve())

    def _secrets_changed(self) -> bool:
        snapshot = self.holder.current
        if snapshot is None or not snapshot.secret_names:
            return False
        resolved, issues = self._secret_source.resolve(snapshot.config_set)
        return bool(issues) or resolved != snapshot.secrets_for_comparison()

    # -- on the event loop --

    async def history(self, app_id: str, start: str, limit: int) -> AppHistory:
        """Commits up to ``start`` that changed ``app_id``'s config; git work on the git thread."""
        if self._executor is None or self._schema is None:
            raise NotReady("the git mirror is not open yet; see /status")
        schema = self._schema
        try:
            return await self._in_git_thread(
                self.mirror.app_history,
                start,
                self.settings.path,
                schema,
                app_id,
                limit,
                repo_limits(self.settings),
            )
        except (git.GitError, ValueError) as exc:
            raise GitError(redact(f"reading the history of {start[:12]} failed: {exc}")) from None

    async def snapshot_at(self, rev: str) -> Snapshot:
        """A snapshot of any commit in the mirror (for viewing), secrets left unresolved."""
        if self._executor is None or self._schema is None:
            raise NotReady("the git mirror is not open yet; see /status")
        schema = self._schema

        def build() -> Snapshot:
            sha = self.mirror.resolve_rev(rev)
            info, config_set, issues = self.mirror.load_commit(
                sha, self.settings.path, schema, repo_limits(self.settings)
            )
            if config_set is None:
                raise InvalidParameter(
                    f"commit {sha[:12]} did not pass validation ({len(issues)} error(s)); "
                    "it was never served"
                )
            return Snapshot(
                commit=info,
                config_set=config_set,
                loaded_at=time.time(),
                schema_source=schema.source,
            )

        return await self._in_git_thread(build)

    def _served_sha(self) -> str | None:
        snapshot = self.holder.current
        return snapshot.commit.sha if snapshot else None

    async def _publish(self, snapshot: Snapshot, record: SyncRecord) -> SyncRecord:
        """Swap the snapshot in; the record is kept in the same loop step, then saved."""
        self.holder.current = snapshot
        self.generation += 1
        self._keep(record)
        try:
            await self._in_git_thread(self.mirror.save_last_good, snapshot.commit.sha)
        except OSError as exc:  # e.g. a full disk: keep serving; only restarts lose out
            log.error("could not record the last good commit in the data dir: %s", exc)
        return record

    async def restore(self) -> None:
        """Serve the last good commit from an existing mirror, before any network access."""
        started = time.time()
        outcome = await self._in_git_thread(self._restore_blocking)
        if isinstance(outcome, Snapshot):
            record = self._new_record("restore", started, "restored", None, outcome.commit.sha)
            await self._publish(outcome, record)
        elif isinstance(outcome, Rejection):
            self._reject(outcome)
            self._notify()

    async def sync(self, trigger: str) -> SyncRecord:
        """Fetch, validate and publish once. Concurrent calls wait for each other."""
        async with self._sync_lock:
            started = time.time()
            old = self._served_sha()
            rejected = self.state.last_rejection.commit.sha if self.state.last_rejection else None
            try:
                # A rejection caused by this server's state (a missing secret) is retried.
                last = self.state.last_rejection
                retry = last is not None and last.server_side
                outcome = await self._in_git_thread(self._sync_blocking, old, rejected, retry)
            except GitError as exc:
                self.state.consecutive_failures += 1
                return self._keep(
                    self._new_record(trigger, started, "failed", old, old, exc.message)
                )
            except Exception as exc:  # never let one bad sync end the sync loop
                log.exception(
                    "sync (%s) failed unexpectedly; still serving the last snapshot", trigger
                )
                self.state.consecutive_failures += 1
                # The type only: an exception's text may quote what it choked on (a secret).
                error = f"unexpected {type(exc).__name__}; see the server log"
                return self._keep(self._new_record(trigger, started, "failed", old, old, error))
            self.state.consecutive_failures = 0
            self.state.backoff_seconds = 0.0
            self.state.last_success_at = time.time()
            if isinstance(outcome, str):
                result = "rejected" if outcome == rejected and outcome != old else "unchanged"
                return self._keep(self._new_record(trigger, started, result, old, old))
            if isinstance(outcome, Rejection):
                self._reject(outcome)
                return self._keep(
                    self._new_record(
                        trigger, started, "rejected", old, old, f"{len(outcome.issues)} error(s)"
                    )
                )
            record = self._new_record(trigger, started, "updated", old, outcome.commit.sha)
            return await self._publish(outcome, record)

    def _reject(self, rejection: Rejection) -> None:
        self.state.last_rejection = rejection
        self.state.rejected_commits += 1
        served = self._served_sha()
        log.error(
            "commit %s rejected (%d error(s)); still serving %s:\n  %s",
            rejection.commit.sha[:12],
            len(rejection.issues),
            served[:12] if served else "nothing",
            "\n  ".join(str(issue) for issue in rejection.issues),
        )

    @staticmethod
    def _new_record(  # noqa: PLR0917 - private, called with the record's fields in order
        trigger: str,
        started: float,
        result: str,
        old: str | None,
        new: str | None,
        error: str | None = None,
    ) -> SyncRecord:
        return SyncRecord(
            trigger=trigger,
            started_at=started,
            finished_at=time.time(),
            result=result,
            old_commit=old,
            new_commit=new,
            error=error,
        )

    def _keep(self, record: SyncRecord) -> SyncRecord:
        self.state.last_sync = record
        self.state.recent.append(record)
        self.state.attempts[record.trigger] += 1
        if record.result == "failed":
            self.state.failures[record.trigger] += 1
        self._log(record)
        self._notify()
        return record

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not end the sync loop
                log.exception("a sync listener failed")

    def _log(self, record: SyncRecord) -> None:
        """The one line per sync: what triggered it, what came of it, what is served now."""
        level = logging.WARNING if record.result == "failed" else logging.INFO
        snapshot = self.holder.current
        changed = record.result in {"updated", "restored"}
        log_event(
            log,
            level,
            "sync",
            {
                "trigger": record.trigger,
                "result": record.result,
                "serving": record.new_commit[:12] if record.new_commit else None,
                "was": record.old_commit[:12] if record.old_commit else None,
                "ms": round((record.finished_at - record.started_at) * 1000, 1),
                "subject": snapshot.commit.subject if changed and snapshot else None,
                "error": record.error,
            },
        )
