"""What syncing has done, as typed values: triggers, results, records, rejections, the served cell.

Every sync attempt ends in one :class:`SyncRecord`; ``/status``, ``/metrics``
and the dashboard read :class:`SyncState`. Triggers and results are string
enums, so that records print, compare and serialise as the plain strings
they always were (``"poll"``, ``"unchanged"``).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Protocol

from ..base.clock import Moment, rfc3339
from ..base.issues import ConfigIssue
from ..config.snapshot import CommitInfo, Snapshot
from ..git.pin_store import Pin

RECENT_SYNCS = 20


class SyncTrigger(enum.StrEnum):
    """What started a sync."""

    RESTORE = "restore"  # the last good commit, from the data dir, before any fetch
    STARTUP = "startup"
    POLL = "poll"
    WATCH = "watch"  # the local upstream's refs moved
    WEBHOOK = "webhook"
    MANUAL = "manual"  # POST /admin/refresh
    SECRETS = "secrets"  # a file in --secrets-dir, or --secret-scopes, changed
    CREDENTIALS = "credentials"  # --git-token-file brought a new token
    PIN = "pin"  # POST /admin/pin: a known-good commit put back by an operator
    UNPIN = "unpin"  # POST /admin/unpin: the sync that resumes following the ref


class SyncResult(enum.StrEnum):
    """What came of a sync."""

    RESTORED = "restored"  # the last good commit is served again after a restart
    UPDATED = "updated"  # a new commit is served
    UNCHANGED = "unchanged"
    REJECTED = "rejected"  # the tip failed validation; the last good commit keeps serving
    FAILED = "failed"  # git or the server failed; retried with backoff


class RejectionKind(enum.Enum):
    """Why a commit was rejected, which says what happens next."""

    # The commit itself is wrong: it is not tried again until the ref moves.
    CONTENT = "content"
    # This server's state is (also) at fault, e.g. a secret it does not define: retried at
    # each sync, since fixing the server rather than the commit must be enough.
    SERVER_SIDE = "server_side"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncRecord:
    trigger: SyncTrigger
    started_at: float
    finished_at: float
    result: SyncResult
    old_commit: str | None
    new_commit: str | None
    error: str | None = None
    # Later syncs that came to the same (unchanged, still rejected): counted, not recorded.
    repeats: int = 0

    def same_outcome(self, other: SyncRecord) -> bool:
        """Whether ``other`` changed nothing this record had not said already."""
        return (self.result, self.old_commit, self.new_commit, self.error) == (
            other.result,
            other.old_commit,
            other.new_commit,
            other.error,
        )

    def as_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["started_at"] = rfc3339(self.started_at)
        data["finished_at"] = rfc3339(self.finished_at)
        data["ms"] = round((self.finished_at - self.started_at) * 1000, 1)  # a duration
        return data


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rejection:
    commit: CommitInfo
    issues: tuple[ConfigIssue, ...]
    rejected_at: float
    kind: RejectionKind = RejectionKind.CONTENT

    @property
    def retried(self) -> bool:
        """Whether the next sync tries the same commit again."""
        return self.kind is RejectionKind.SERVER_SIDE

    def as_json(self) -> dict[str, object]:
        return {
            "commit": self.commit.as_json(),
            "rejected_at": rfc3339(self.rejected_at),
            "errors": [str(issue) for issue in self.issues],
        }


@dataclasses.dataclass(kw_only=True)
class SyncState:
    """What /status reports about syncing. Touched only on the event loop."""

    last_sync: SyncRecord | None = None
    last_success: Moment | None = None  # the last fetch that succeeded
    last_rejection: Rejection | None = None
    consecutive_failures: int = 0
    next_poll_at: float | None = None
    backoff_seconds: float = 0.0
    coalesced: int = 0  # sync requests folded into one already queued
    watching: str | None = None  # the local upstream git dir being watched
    tip: str | None = None  # the commit the ref pointed at when last resolved
    task_error: str | None = None
    # The emergency pin in force (POST /admin/pin), and where it applies; a stored pin that
    # could not be read (ignored: the replica syncs as if unpinned).
    pin: Pin | None = None
    pin_scope: str | None = None
    pin_problem: str | None = None
    recent: collections.deque[SyncRecord] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_SYNCS)
    )
    # Totals since startup, by trigger: for /metrics.
    attempts: collections.Counter[SyncTrigger] = dataclasses.field(
        default_factory=collections.Counter
    )
    failures: collections.Counter[SyncTrigger] = dataclasses.field(
        default_factory=collections.Counter
    )
    rejected_commits: int = 0

    @property
    def last_success_at(self) -> float | None:
        """When the last fetch succeeded, by the wall clock: to show, never to measure."""
        return self.last_success.wall if self.last_success is not None else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PinChange:
    """What a pin or an unpin did: the pin in force afterwards (None once unpinned), the pin
    it replaced, where it applies, and the sync that published the outcome."""

    pin: Pin | None
    previous: Pin | None
    scope: str
    record: SyncRecord


class GenerationCell(Protocol):
    """The publish generation every process of one replica serves, in memory they share.

    The leader stores a new one only once every process holds that generation's
    snapshot; each process reads it on every use of its holder, so one store
    makes a commit go live everywhere at the same instant (``--workers N``).
    """

    value: int


class SnapshotHolder:
    """The one mutable cell: the snapshot being served. Replaced whole, never edited.

    Only the sync loop (or, in a follower process, the loop that follows the
    leader) assigns ``current`` or stages a snapshot; everything else reads it once
    per use. With ``live`` (``--workers N``), a snapshot can be staged for a
    generation: it is served from the moment the shared cell reaches that
    generation, in this process and every other at once.
    """

    def __init__(self, live: GenerationCell | None = None) -> None:
        self._current: Snapshot | None = None
        self._staged: tuple[int, Snapshot] | None = None
        self._live = live

    @property
    def current(self) -> Snapshot | None:
        staged, live = self._staged, self._live
        if staged is not None and live is not None and live.value >= staged[0]:
            return staged[1]
        return self._current

    @current.setter
    def current(self, snapshot: Snapshot | None) -> None:
        """Serve ``snapshot`` in this process now (a staged one is dropped)."""
        self._current = snapshot
        self._staged = None

    @property
    def served_sha(self) -> str | None:
        snapshot = self.current
        return snapshot.commit.sha if snapshot is not None else None

    @property
    def staged_generation(self) -> int | None:
        """The generation of the snapshot staged and not live yet, if any."""
        staged, live = self._staged, self._live
        if staged is None or (live is not None and live.value >= staged[0]):
            return None
        return staged[0]

    def stage(self, generation: int, snapshot: Snapshot) -> None:
        """Hold ``snapshot`` ready: served once the shared cell reaches ``generation``."""
        if self._live is None:
            raise RuntimeError("staging needs a shared generation cell (--workers N)")
        self.settle()
        self._staged = (generation, snapshot)

    def go_live(self, generation: int) -> None:
        """The leader's store: every process serves ``generation``'s snapshot from now on."""
        if self._live is None:
            raise RuntimeError("going live needs a shared generation cell (--workers N)")
        self._live.value = generation
        self.settle()

    def publish(self, generation: int, snapshot: Snapshot) -> None:
        """Serve ``snapshot`` as ``generation``: in every process at once when the cell is
        shared (the other processes staged it already), else in this one."""
        if self._live is None:
            self.current = snapshot
        else:
            self.stage(generation, snapshot)
            self.go_live(generation)

    def settle(self) -> None:
        """Fold a staged snapshot that is live by now into ``current`` (frees the old one)."""
        staged, live = self._staged, self._live
        if staged is not None and live is not None and live.value >= staged[0]:
            self._current, self._staged = staged[1], None
