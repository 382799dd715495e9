"""The sync loop: keeps the served snapshot in step with the remote, off the event loop.

Its git work (fetch, resolve, build) runs on the sync thread; the event loop
only swaps the finished snapshot in. A fetch that fails or hangs (it is killed
after ``--git-timeout``) never touches the snapshot being served. At most one
sync runs and one waits, whatever the triggers: bursts coalesce. A commit
rejected for its content is not tried again until the ref moves; one rejected
for this server's state is retried at each sync. Every attempt ends in one
``SyncRecord``, one log line and one count in ``SyncState``.

An emergency pin (``POST /admin/pin``) puts a commit of the mirror back, built
and published here like any other; while it holds, syncs still fetch (so that
/status shows the tip) but build only the pinned commit (again, when a secret
rotates). It is kept in a ``PinStore`` across restarts and restored before the
last good commit; ``unpin`` drops it and syncs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from ..base.clock import Moment
from ..base.errors import (
    CommitRejected,
    ConfigServerError,
    GitError,
    MirrorDamaged,
    NotReady,
    UnknownCommit,
)
from ..base.logs import log_event
from ..base.tasks import OneThread, guarded_task
from ..config.snapshot import Snapshot
from ..git.data_dir import LastGoodRecord
from ..git.mirror import GitMirror
from ..git.pin_store import Pin, PinStore
from .builder import SnapshotBuilder
from .state import (
    PinChange,
    Rejection,
    SnapshotHolder,
    SyncRecord,
    SyncResult,
    SyncState,
    SyncTrigger,
)

log = logging.getLogger("server.sync")

# A replica with nothing to serve whose tip is rejected looks this far back for a commit
# that validates (scaling out during an incident must still give a ready replica).
WALK_BACK_COMMITS = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class WalkedBack:
    """Nothing was served and the tip was rejected: the newest valid commit before it."""

    snapshot: Snapshot
    tip_rejection: Rejection


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhilePinned:
    """A sync while pinned: the tip fetched (None when the fetch failed), and the pinned
    commit built, when it had to be (not served yet, or a secret rotated)."""

    tip: str | None
    built: Snapshot | Rejection | None
    fetch_error: GitError | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PollSchedule:
    """How often to fetch, and how far to back off while fetches fail."""

    interval: float
    max_backoff: float


class Syncer:
    """The leader's sync loop; the only writer of the served snapshot in its process."""

    def __init__(
        self,
        *,
        mirror: GitMirror,
        builder: SnapshotBuilder,
        holder: SnapshotHolder,
        last_good: LastGoodRecord,
        sync_thread: OneThread,
        schedule: PollSchedule,
        pins: PinStore | None = None,
    ) -> None:
        self.mirror = mirror
        self.holder = holder
        self.state = SyncState()
        self._builder = builder
        self._last_good = last_good
        self._thread = sync_thread
        self._schedule = schedule
        self._pins = pins
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._queued_trigger: SyncTrigger | None = None
        self._waiters: list[asyncio.Future[SyncRecord]] = []
        self.first_attempt_done = asyncio.Event()
        # Bumped each time a snapshot is published (a new commit, or the same commit with
        # rotated secrets): the follower processes rebuild when it moves.
        self.generation = 0
        # Called on the event loop after every sync outcome (the follower pool relays it).
        self.listeners: list[Callable[[], None]] = []
        # Called on the event loop with every sync's record (the sync-duration histogram).
        self.recorded: list[Callable[[SyncRecord], None]] = []
        # Called (on the event loop) with each requested sync's trigger: with --redis the
        # other replicas are told of webhooks and refreshes (shared.replicas).
        self.requested: list[Callable[[SyncTrigger], None]] = []
        # Told of each pin and unpin an operator made here (not of those the shared state
        # applies for another replica): --redis shares them.
        self.pin_made: list[Callable[[Pin | None], None]] = []
        # With --workers N: has the other processes build a snapshot and hold it ready
        # before it goes live (the follower pool), so that all serve it at the same instant.
        self.stage_elsewhere: Callable[[Snapshot, int], Awaitable[None]] | None = None
        # With --workers N: told (on the event loop) which commit the sync thread starts to
        # build, so that the other processes build it at the same time, not after.
        self.building_elsewhere: Callable[[str], None] | None = None
        # Workers per app id seen within --fleet-ttl (the fleet table), read on the event loop.
        self.apps_in_use: Callable[[], Mapping[str, int]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle (driven by the app's cleanup_ctx) --

    def start(self) -> None:
        self._task = guarded_task(
            self._run(),
            name="config-sync",
            log=log,
            on_crash=self._crashed,
            crash_message="the sync task crashed; the last snapshot keeps serving",
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiter in self._waiters:
            waiter.cancel()

    def _crashed(self, error: BaseException) -> None:
        """A dead sync loop must be loud and visible; the last snapshot keeps serving."""
        self.state.task_error = f"{type(error).__name__} (see the server log)"
        # Nobody may wait forever for a sync that will not come.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(NotReady("the sync task crashed; see /status"))
        self._waiters = []

    async def _run(self) -> None:
        await self._thread.run(self._prepare)
        try:
            await self.restore()
        except Exception:  # restoring is a head start, never a reason to stop syncing
            log.exception("restoring the last good commit failed; syncing from the remote")
        trigger = SyncTrigger.STARTUP
        while True:
            waiters, self._waiters = self._waiters, []
            record = await self.sync(trigger)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(record)
            self.first_attempt_done.set()
            trigger = await self._wait_for_trigger()

    def _prepare(self) -> None:
        schema = self._builder.prepare()
        log.info("LMCache schema: %s (%d fields)", schema.source, len(schema.fields))
        # We hold the data dir lock, so any git lock file in the mirror is a leftover of a
        # process killed mid-fetch; left in place it would fail every later fetch.
        for leftover in self.mirror.remove_stale_locks():
            log.warning("removed stale git lock file %s (left by an interrupted fetch)", leftover)

    # -- triggers --

    async def _wait_for_trigger(self) -> SyncTrigger:
        """Sleep until the next poll, or until someone asks for a sync; return the trigger."""
        delay = self._next_delay()
        self.state.next_poll_at = time.time() + delay if delay is not None else None
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._wake.clear()
        trigger, self._queued_trigger = self._queued_trigger, None
        return trigger or SyncTrigger.POLL

    def _next_delay(self) -> float | None:
        """Seconds to the next poll; None when the ref is a commit that is already served."""
        if self._pinned_and_served():
            return None  # a pinned commit cannot change: nothing to poll
        base = self._schedule.interval
        failures = self.state.consecutive_failures
        if failures:
            cap = max(base, self._schedule.max_backoff)
            base = min(base * 2**failures, cap)
        self.state.backoff_seconds = base if failures else 0.0
        # Jitter so that replicas started together do not fetch in step.
        return base * random.uniform(0.9, 1.1)  # noqa: S311 - not security related

    def _pinned_and_served(self) -> bool:
        return self.mirror.ref_is_commit and self.holder.served_sha == self.mirror.ref

    def request_sync(self, trigger: SyncTrigger) -> None:
        """Ask for a sync soon, without waiting. Bursts coalesce into one queued sync."""
        if self._queued_trigger is None:
            self._queued_trigger = SyncTrigger(trigger)
        else:
            self.state.coalesced += 1
        self._wake.set()
        for hook in self.requested:
            hook(SyncTrigger(trigger))

    async def refresh(self, trigger: SyncTrigger) -> SyncRecord:
        """Ask for a sync and wait for one that started after this call."""
        if self._task is None or self._task.done():
            raise NotReady("the sync task is not running; see /status")
        waiter: asyncio.Future[SyncRecord] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.request_sync(trigger)
        return await waiter

    # -- on the sync thread --

    def _build_or_walk_back(
        self, tip: str, served: Snapshot | None, in_use: Mapping[str, int] | None = None
    ) -> Snapshot | Rejection | WalkedBack:
        """Build the tip; with nothing served yet, fall back to the newest valid commit."""
        self._announce(tip)
        outcome = self._builder.build(tip, in_use=in_use)
        if not isinstance(outcome, Rejection) or served is not None:
            return outcome
        for sha in self.mirror.first_parents(tip, WALK_BACK_COMMITS):
            older = self._builder.build(sha)
            if isinstance(older, Snapshot):
                return WalkedBack(snapshot=older, tip_rejection=outcome)
        return outcome

    def _restore_blocking(self, pin: Pin | None) -> Snapshot | Rejection | WalkedBack | None:
        if not self.mirror.is_usable():
            return None
        try:
            # Repairs in place what git cannot read, keeping every object.
            self.mirror.ensure()
            self.mirror.repair_refs()
            sha = self._last_good.load() or self.mirror.marked_last_good()
            if pin is not None:
                return self._restore_pinned(pin, sha)
            if sha is None or not self.mirror.has_commit(sha):
                return self._build_or_walk_back(self.mirror.resolve(), None)
            return self._builder.build(sha)
        except MirrorDamaged as exc:
            # Kept as it is: the sync clones anew beside it and swaps only once that works.
            log.error("local mirror is damaged (%s); it will be cloned again", exc.message)
            return None
        except GitError:
            return None
        except Exception:  # restore is an optimisation: on any surprise, sync from scratch
            log.exception("restoring from the local mirror failed; syncing instead")
            return None

    def _restore_pinned(self, pin: Pin, last_good: str | None) -> Snapshot | Rejection | None:
        """The pinned commit; if it cannot be served now, the last good one meanwhile (never
        the tip: the pin says the tip must not be served). Syncs retry the pinned commit."""
        pinned: Rejection | None = None
        if self.mirror.has_commit(pin.commit):
            outcome = self._builder.build(pin.commit)
            if isinstance(outcome, Snapshot):
                return outcome
            pinned = outcome
            log.error("pinned commit %s does not validate now", pin.commit[:12])
        else:
            log.error("pinned commit %s is not in the mirror; fetching it", pin.commit[:12])
        if last_good is not None and self.mirror.has_commit(last_good):
            return self._builder.build(last_good)
        return pinned

    def _load_pin(self) -> tuple[Pin | None, str | None]:
        """The stored pin, or why it cannot be read (then it is ignored, never a crash)."""
        if self._pins is None:
            return None, None
        try:
            return self._pins.load(), None
        except ConfigServerError as exc:
            return None, exc.message
        except Exception as exc:  # a store of another kind failing: report, sync unpinned
            log.exception("reading the stored pin failed")
            return None, f"unexpected {type(exc).__name__}; see the server log"

    def _pin_blocking(self, rev: str, in_use: Mapping[str, int]) -> Snapshot | Rejection:
        """The commit ``rev`` names in the mirror (no fetch: the remote may be down), built."""
        sha = self.mirror.find_commit(rev)
        if sha is None:
            raise UnknownCommit(
                f"commit {rev} is not in this server's mirror (or the prefix is ambiguous): "
                "only a commit fetched before can be pinned"
            )
        self._announce(sha)
        return self._builder.build(sha, in_use=in_use)

    def _sync_pinned(self, served: Snapshot | None, pinned: str) -> WhilePinned:
        """While pinned: fetch to show the tip, but build only the pinned commit."""
        tip: str | None = None
        fetch_error: GitError | None = None
        try:
            self.mirror.ensure()
            self.mirror.fetch()
            tip = self.mirror.resolve()
        except GitError as exc:  # the pinned commit is in the mirror: it is served regardless
            fetch_error = exc
        built: Snapshot | Rejection | None = None
        if served is None or served.commit.sha != pinned:
            if not self.mirror.has_commit(pinned):
                raise fetch_error or GitError(f"pinned commit {pinned[:12]} is not in the mirror")
            self._announce(pinned)
            built = self._builder.build(pinned)
        elif self._builder.secrets_changed(served):
            self._announce(pinned)
            built = self._builder.build(pinned)  # a rotated secret: the same commit rebuilt
        return WhilePinned(tip=tip, built=built, fetch_error=fetch_error)

    def _in_use(self, served: Snapshot | None) -> dict[str, int]:
        """Of the apps served now, those workers asked for (and how many workers)."""
        if served is None or self.apps_in_use is None:
            return {}
        asked = self.apps_in_use()
        return {app: asked[app] for app in served.app_ids if asked.get(app)}

    def _sync_blocking(
        self,
        served: Snapshot | None,
        rejected: str | None,
        retry_rejected: bool,
        in_use: Mapping[str, int],
    ) -> Snapshot | Rejection | WalkedBack | str:
        """Fetch and build; returns a new snapshot, a rejection, or the unchanged sha."""
        served_sha = served.commit.sha if served is not None else None
        self.mirror.ensure()
        if not (self.mirror.ref_is_commit and served_sha == self.mirror.ref):
            self.mirror.fetch()
        tip = self.mirror.resolve()
        if tip == served_sha and self._builder.secrets_changed(served):
            self._announce(tip)
            return self._builder.build(tip)  # same commit, rotated secret: rebuild the answers
        if tip == served_sha or (tip == rejected and not retry_rejected and served is not None):
            return tip
        try:
            return self._build_or_walk_back(tip, served, in_use)
        except MirrorDamaged:
            # Objects we need are unreadable: clone anew beside the mirror, once; the old
            # one (and the last good commit in it) goes only when the new one is complete.
            self.mirror.reclone()
            return self._build_or_walk_back(self.mirror.resolve(), served, in_use)

    def _announce(self, sha: str) -> None:
        """From the sync thread: tell ``building_elsewhere`` which commit is being built."""
        hook, loop = self.building_elsewhere, self._loop
        if hook is not None and loop is not None:
            loop.call_soon_threadsafe(hook, sha)

    def _save_last_good(self, sha: str) -> None:
        self.mirror.mark_last_good(sha)  # first: it needs no free space beyond one ref
        self._last_good.save(sha)

    # -- on the event loop --

    async def _publish(self, snapshot: Snapshot, record: SyncRecord) -> SyncRecord:
        """Swap the snapshot in; the record is kept in the same loop step, then saved."""
        generation = self.generation + 1
        if self.stage_elsewhere is not None:
            await self.stage_elsewhere(snapshot, generation)
        previous = self.holder.current
        self.holder.publish(generation, snapshot)
        self.generation = generation
        if snapshot.warnings and (previous is None or previous.commit.sha != snapshot.commit.sha):
            # Served all the same; said once per commit (and listed in /status).
            shown = "; ".join(str(warning) for warning in snapshot.warnings[:5])
            more = len(snapshot.warnings) - 5
            log.warning(
                "commit %s has %d warning(s): %s%s",
                snapshot.commit.sha[:12],
                len(snapshot.warnings),
                shown,
                f" (and {more} more: see /status)" if more > 0 else "",
            )
        self._keep(record)
        try:
            await self._thread.run(self._save_last_good, snapshot.commit.sha)
        except OSError as exc:  # e.g. a full disk: keep serving; only restarts lose out
            log.error("could not record the last good commit in the data dir: %s", exc)
        return record

    async def restore(self) -> None:
        """Serve the last good commit from an existing mirror, before any network access."""
        started = time.time()
        self._loop = asyncio.get_running_loop()
        pin, problem = await self._thread.run(self._load_pin)
        self._set_pin(pin)
        if problem is not None:
            self.state.pin_problem = problem
            log.error("the stored emergency pin cannot be read (%s): ignored", problem)
        if pin is not None:
            log.warning(
                "pinned to %s by %s at %s (%s): restoring it, not the last good commit or the "
                "tip, until POST /admin/unpin",
                pin.commit[:12],
                pin.by,
                pin.as_json()["at"],
                pin.reason,
            )
        outcome = await self._thread.run(self._restore_blocking, pin)
        if isinstance(outcome, WalkedBack):
            self._reject(outcome.tip_rejection)
            self.state.tip = outcome.tip_rejection.commit.sha
            snapshot = outcome.snapshot
            record = _record(
                SyncTrigger.RESTORE,
                started,
                SyncResult.RESTORED,
                None,
                snapshot.commit.sha,
                _walked_back(outcome),
            )
            await self._publish(snapshot, record)
        elif isinstance(outcome, Snapshot):
            record = _record(
                SyncTrigger.RESTORE, started, SyncResult.RESTORED, None, outcome.commit.sha
            )
            await self._publish(outcome, record)
        elif isinstance(outcome, Rejection):
            self.state.tip = outcome.commit.sha
            self._reject(outcome)
            self._notify()

    async def sync(self, trigger: SyncTrigger) -> SyncRecord:
        """Fetch, validate and publish once. Concurrent calls wait for each other."""
        trigger = SyncTrigger(trigger)  # a caller's plain "poll" is taken too
        async with self._sync_lock:
            started = time.time()
            served = self.holder.current
            old = self.holder.served_sha
            last = self.state.last_rejection
            rejected = last.commit.sha if last is not None else None
            retry = last is not None and last.retried
            pin = self.state.pin
            try:
                self._loop = asyncio.get_running_loop()
                in_use = self._in_use(served)
                outcome: Snapshot | Rejection | WalkedBack | str | WhilePinned
                if pin is not None:
                    outcome = await self._thread.run(self._sync_pinned, served, pin.commit)
                else:
                    outcome = await self._thread.run(
                        self._sync_blocking, served, rejected, retry, in_use
                    )
            except GitError as exc:
                self.state.consecutive_failures += 1
                return self._keep(
                    _record(trigger, started, SyncResult.FAILED, old, old, exc.message)
                )
            except Exception as exc:  # never let one bad sync end the sync loop
                log.exception(
                    "sync (%s) failed unexpectedly; still serving the last snapshot", trigger
                )
                self.state.consecutive_failures += 1
                # The type only: an exception's text may quote what it choked on (a secret).
                error = f"unexpected {type(exc).__name__}; see the server log"
                return self._keep(_record(trigger, started, SyncResult.FAILED, old, old, error))
            if isinstance(outcome, WhilePinned):
                return await self._after_pinned_sync(trigger, started, old, outcome)
            self.state.consecutive_failures = 0
            self.state.backoff_seconds = 0.0
            self.state.last_success = Moment.now()
            if isinstance(outcome, WalkedBack):
                self._reject(outcome.tip_rejection)
                self.state.tip = outcome.tip_rejection.commit.sha
                snapshot = outcome.snapshot
                record = _record(
                    trigger,
                    started,
                    SyncResult.UPDATED,
                    old,
                    snapshot.commit.sha,
                    _walked_back(outcome),
                )
                return await self._publish(snapshot, record)
            self.state.tip = outcome if isinstance(outcome, str) else outcome.commit.sha
            if isinstance(outcome, str):
                result = (
                    SyncResult.REJECTED
                    if outcome == rejected and outcome != old
                    else SyncResult.UNCHANGED
                )
                # Still rejected: said as the rejection was, so the record counts it.
                still = (
                    f"{len(last.issues)} error(s)"
                    if result is SyncResult.REJECTED and last
                    else None
                )
                return self._keep(_record(trigger, started, result, old, old, still))
            if isinstance(outcome, Rejection):
                self._reject(outcome)
                return self._keep(
                    _record(
                        trigger,
                        started,
                        SyncResult.REJECTED,
                        old,
                        old,
                        f"{len(outcome.issues)} error(s)",
                    )
                )
            record = _record(trigger, started, SyncResult.UPDATED, old, outcome.commit.sha)
            return await self._publish(outcome, record)

    async def _after_pinned_sync(
        self, trigger: SyncTrigger, started: float, old: str | None, outcome: WhilePinned
    ) -> SyncRecord:
        """Record a sync while pinned; publish only the pinned commit, when it was built."""
        if outcome.tip is not None:
            self.state.tip = outcome.tip
        if outcome.fetch_error is None:
            self.state.consecutive_failures = 0
            self.state.backoff_seconds = 0.0
            self.state.last_success = Moment.now()
        else:
            self.state.consecutive_failures += 1
        built = outcome.built
        if isinstance(built, Snapshot):
            record = _record(trigger, started, SyncResult.UPDATED, old, built.commit.sha)
            return await self._publish(built, record)
        if isinstance(built, Rejection):
            self._reject(built)
            error = f"pinned commit: {len(built.issues)} error(s)"
            return self._keep(_record(trigger, started, SyncResult.REJECTED, old, old, error))
        if outcome.fetch_error is not None:
            error = outcome.fetch_error.message
            return self._keep(_record(trigger, started, SyncResult.FAILED, old, old, error))
        return self._keep(_record(trigger, started, SyncResult.UNCHANGED, old, old))

    # -- the emergency pin --

    def _set_pin(self, pin: Pin | None) -> None:
        self.state.pin = pin
        self.state.pin_scope = self._pins.scope if pin is not None and self._pins else None

    def _store(self) -> PinStore:
        if self._pins is None:
            raise NotReady("this server keeps no pin store")
        return self._pins

    def _tell_pin(self, pin: Pin | None) -> None:
        for hook in self.pin_made:
            try:
                hook(pin)
            except Exception:  # a hook's bug must not undo the pin
                log.exception("a pin hook failed")

    async def pin(self, rev: str, *, by: str, reason: str, announce: bool = True) -> PinChange:
        """Serve the mirror's commit ``rev``, valid now, until ``unpin``; kept across restarts.

        Raises UnknownCommit (404) or CommitRejected (409); nothing changes then.
        """
        store = self._store()
        async with self._sync_lock:  # never between a sync's build and its publish
            started = time.time()
            self._loop = asyncio.get_running_loop()
            served = self.holder.current
            old = self.holder.served_sha
            outcome = await self._thread.run(self._pin_blocking, rev, self._in_use(served))
            if isinstance(outcome, Rejection):
                errors = tuple(str(issue) for issue in outcome.issues)
                log_event(
                    log,
                    logging.WARNING,
                    "pin_refused",
                    {"commit": outcome.commit.sha[:12], "by": by, "errors": list(errors)},
                )
                raise CommitRejected(
                    f"commit {outcome.commit.sha[:12]} does not validate now "
                    f"({len(errors)} error(s)); nothing changed",
                    errors,
                )
            pin = Pin(commit=outcome.commit.sha, by=by, at=float(int(started)), reason=reason)
            try:
                # Kept first: a pin that would not survive a restart is not made at all.
                await self._thread.run(store.save, pin)
            except OSError as exc:
                raise ConfigServerError(
                    f"could not keep the pin ({exc.strerror or type(exc).__name__}); "
                    "nothing changed"
                ) from None
            previous = self.state.pin
            self._set_pin(pin)
            self.state.pin_problem = None
            log.warning(
                "pinned to %s by %s (%s): syncs no longer change what is served until "
                "POST /admin/unpin; scope: %s",
                pin.commit[:12],
                by,
                reason,
                store.scope,
            )
            result = SyncResult.UPDATED if pin.commit != old else SyncResult.UNCHANGED
            record = _record(SyncTrigger.PIN, started, result, old, pin.commit)
            # Published even when already served: the followers take up the pin's state.
            record = await self._publish(outcome, record)
            if announce:
                self._tell_pin(pin)
            return PinChange(pin=pin, previous=previous, scope=store.scope, record=record)

    async def unpin(self, *, by: str, reason: str = "", announce: bool = True) -> PinChange:
        """Drop the pin (a damaged stored one too) and sync at once."""
        store = self._store()
        async with self._sync_lock:
            previous = self.state.pin
            try:
                await self._thread.run(store.clear)
            except OSError as exc:
                raise ConfigServerError(
                    f"could not drop the pin ({exc.strerror or type(exc).__name__}); still pinned"
                ) from None
            self._set_pin(None)
            self.state.pin_problem = None
            log.warning(
                "unpinned by %s (was %s)%s: syncing the tip again",
                by,
                previous.commit[:12] if previous is not None else "not pinned",
                f" ({reason})" if reason else "",
            )
        if announce:
            self._tell_pin(None)
        record = await self.refresh(SyncTrigger.UNPIN)
        return PinChange(pin=None, previous=previous, scope=store.scope, record=record)

    def _reject(self, rejection: Rejection) -> None:
        previous = self.state.last_rejection
        again = (
            previous is not None
            and previous.commit.sha == rejection.commit.sha
            and previous.issues == rejection.issues
        )
        self.state.last_rejection = rejection
        self.state.rejected_commits += 1
        served = self.holder.served_sha
        # One event, one line: the errors as a list (JSON) or quoted (text). A commit
        # rejected again for the same reasons (a server-side retry) is not logged again.
        log_event(
            log,
            logging.DEBUG if again else logging.ERROR,
            "rejected",
            {
                "commit": rejection.commit.sha[:12],
                "serving": served[:12] if served else None,
                "count": len(rejection.issues),
                "errors": [str(issue) for issue in rejection.issues],
            },
        )

    def _keep(self, record: SyncRecord) -> SyncRecord:
        self.state.last_sync = record
        recent = self.state.recent
        # A poll that changed nothing (unchanged, still rejected) adds no record and no log
        # line: the last record counts it, so the history keeps the events that mattered.
        quiet = record.result in {SyncResult.UNCHANGED, SyncResult.REJECTED}
        if quiet and recent and recent[-1].same_outcome(record):
            recent[-1] = dataclasses.replace(
                recent[-1], finished_at=record.finished_at, repeats=recent[-1].repeats + 1
            )
        else:
            recent.append(record)
            quiet = False
        self.state.attempts[record.trigger] += 1
        if record.result is SyncResult.FAILED:
            self.state.failures[record.trigger] += 1
        self._log(record, quiet=quiet)
        for hook in self.recorded:
            try:
                hook(record)
            except Exception:  # a metric's bug must not end the sync loop
                log.exception("a sync record hook failed")
        self._notify()
        return record

    def _notify(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not end the sync loop
                log.exception("a sync listener failed")

    def _log(self, record: SyncRecord, *, quiet: bool = False) -> None:
        """The one line per sync: what triggered it, what came of it, what is served now
        (at debug for a sync that changed nothing the last one had not said)."""
        level = logging.WARNING if record.result is SyncResult.FAILED else logging.INFO
        if quiet:
            level = logging.DEBUG
        snapshot = self.holder.current
        changed = record.result in {SyncResult.UPDATED, SyncResult.RESTORED}
        log_event(
            log,
            level,
            "sync",
            {
                "trigger": record.trigger.value,
                "result": record.result.value,
                "serving": record.new_commit[:12] if record.new_commit else None,
                "was": record.old_commit[:12] if record.old_commit else None,
                "ms": round((record.finished_at - record.started_at) * 1000, 1),
                "subject": snapshot.commit.subject if changed and snapshot else None,
                "error": record.error,
            },
        )


def _record(  # noqa: PLR0917 - private, called with the record's fields in order
    trigger: SyncTrigger,
    started: float,
    result: SyncResult,
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


def _walked_back(outcome: WalkedBack) -> str:
    tip = outcome.tip_rejection
    return (
        f"tip {tip.commit.sha[:12]} rejected ({len(tip.issues)} error(s)); serving the newest "
        f"valid commit before it, {outcome.snapshot.commit.sha[:12]}"
    )
