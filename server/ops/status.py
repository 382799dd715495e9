"""The status of one replica, read once: what ``/status`` answers and the dashboard shows.

Both read one :class:`StatusView`, built from the served snapshot, the sync
state and the fleet table at one moment, so the page and the JSON can never
disagree about what is served, whether it is stale or what was rejected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..base.clock import Moment
from ..config.snapshot import Snapshot
from ..sync.freshness import Freshness, freshness
from ..sync.state import SnapshotHolder, SyncRecord, SyncState
from .fleet import FleetTable


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepoDescription:
    """The repository served, as it may be shown: never a credential."""

    remote: str  # redacted
    ref: str
    path: str
    credentials: str  # what kind of credentials, never their value


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusView:
    snapshot: Snapshot | None
    state: SyncState
    fresh: Freshness
    repo: RepoDescription
    started: Moment
    stale_after: float
    fleet: FleetTable

    @property
    def instances(self) -> int:
        """Workers in the fleet table."""
        return len(self.fleet)

    @property
    def behind(self) -> int:
        """Workers in the fleet table that were given another commit than the one served."""
        served = self.snapshot.commit.sha if self.snapshot is not None else None
        return sum(1 for sighting in self.fleet.sightings() if sighting.commit != served)

    @property
    def recent(self) -> list[SyncRecord]:
        """The recent syncs, newest first."""
        return list(reversed(self.state.recent))

    def summary_json(self) -> dict[str, Any]:
        """Without an admin credential: enough for a load balancer or a curious worker."""
        snapshot = self.snapshot
        return {
            "ready": snapshot is not None,
            "version": snapshot.commit.sha if snapshot else None,
            "stale": self.fresh.stale,
            "detail": "send an admin token for the full status",
        }

    def as_json(self) -> dict[str, Any]:
        """The full status, for admins."""
        snapshot, state = self.snapshot, self.state
        served: dict[str, Any] | None = None
        if snapshot is not None:
            served = {
                **snapshot.commit.as_json(),
                "loaded_at": snapshot.loaded_at,
                "apps": len(snapshot.app_ids),
                "schema": snapshot.schema_source,
            }
        return {
            "ready": snapshot is not None,
            "stale": self.fresh.stale,
            "stale_reason": self.fresh.reason,
            "stale_after": self.stale_after,
            "seconds_since_last_successful_sync": self.fresh.since_last_success,
            "repo": self.repo.remote,
            "git_credentials": self.repo.credentials,
            "ref": self.repo.ref,
            "path": self.repo.path,
            "served": served,
            "tip": state.tip,
            "last_sync": state.last_sync.as_json() if state.last_sync else None,
            "last_successful_fetch_at": state.last_success_at,
            "consecutive_failures": state.consecutive_failures,
            "backoff_seconds": state.backoff_seconds,
            "next_poll_at": state.next_poll_at,
            "watching": state.watching,
            "coalesced_requests": state.coalesced,
            "last_rejected": state.last_rejection.as_json() if state.last_rejection else None,
            "recent_syncs": [record.as_json() for record in self.recent],
            "sync_task_error": state.task_error,
            "started_at": self.started.wall,
            "fleet_instances_tracked": self.instances,
        }


def status_view(
    *,
    holder: SnapshotHolder,
    state: SyncState,
    fleet: FleetTable,
    repo: RepoDescription,
    started: Moment,
    stale_after: float,
    now: Moment,
) -> StatusView:
    return StatusView(
        snapshot=holder.current,
        state=state,
        fresh=freshness(state, started=started, stale_after=stale_after, now=now),
        repo=repo,
        started=started,
        stale_after=stale_after,
        fleet=fleet,
    )
