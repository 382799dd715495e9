"""The status of one replica, read once: what ``/status`` answers and the dashboard shows.

Both read one :class:`StatusView`, built from the served snapshot, the sync
state and the fleet table at one moment, so the page and the JSON can never
disagree about what is served, whether it is stale or what was rejected.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..base.clock import Moment, rfc3339
from ..base.reloading import ReloadStatus
from ..config.hints import app_file
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


# Rows of unknown apps shown (the ids are workers' choice: any number may ask).
MAX_UNKNOWN_APPS_SHOWN = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnknownApp:
    """An app id workers asked for that the served commit has no file for."""

    app_id: str
    workers: int  # in the fleet table now (0: asked, but refused or since forgotten)
    nearest: str | None  # the known app it probably means

    @property
    def did_you_mean(self) -> str | None:
        return app_file(self.nearest) if self.nearest else None

    def as_json(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "workers": self.workers, "did_you_mean": self.did_you_mean}


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusView:
    snapshot: Snapshot | None
    state: SyncState
    fresh: Freshness
    repo: RepoDescription
    started: Moment
    stale_after: float
    fleet: FleetTable
    credentials: tuple[ReloadStatus, ...] = ()  # the files this process reloads

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

    @property
    def unknown_apps(self) -> list[UnknownApp]:
        """Unknown app ids asked of the served commit: this process's sightings, and the
        replica's fleet table (shared by every process), most workers first."""
        snapshot = self.snapshot
        if snapshot is None:
            return []
        known = snapshot.config_set.apps
        workers: dict[str, int] = dict.fromkeys(snapshot.unknown_apps_seen(), 0)
        for (app_id, _), count in self.fleet.counts().items():
            if app_id and app_id not in known:
                workers[app_id] = workers.get(app_id, 0) + count
        shown = sorted(workers.items(), key=lambda item: (-item[1], item[0]))
        return [
            UnknownApp(app_id=app_id, workers=count, nearest=snapshot.nearest_app(app_id))
            for app_id, count in shown[:MAX_UNKNOWN_APPS_SHOWN]
        ]

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
                "loaded_at": rfc3339(snapshot.loaded_at),
                "apps": len(snapshot.app_ids),
                "schema": snapshot.schema_source,
                # YAML files nothing reads, and app ids asked for that have no file.
                "warnings": [warning.as_json() for warning in snapshot.warnings],
                "unknown_apps": [app.as_json() for app in self.unknown_apps],
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
            # The emergency pin (POST /admin/pin): served whatever the tip, until unpinned.
            "pinned": {**state.pin.as_json(), "scope": state.pin_scope} if state.pin else None,
            "pin_problem": state.pin_problem,
            "last_sync": state.last_sync.as_json() if state.last_sync else None,
            "last_successful_fetch_at": rfc3339(state.last_success_at),
            "consecutive_failures": state.consecutive_failures,
            "backoff_seconds": state.backoff_seconds,
            "next_poll_at": rfc3339(state.next_poll_at),
            "watching": state.watching,
            "coalesced_requests": state.coalesced,
            "last_rejected": state.last_rejection.as_json() if state.last_rejection else None,
            "recent_syncs": [record.as_json() for record in self.recent],
            "sync_task_error": state.task_error,
            "started_at": rfc3339(self.started.wall),
            "fleet_instances_tracked": self.instances,
            "credentials": {status.setting: status.as_json() for status in self.credentials},
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
    credentials: tuple[ReloadStatus, ...] = (),
) -> StatusView:
    return StatusView(
        snapshot=holder.current,
        state=state,
        fresh=freshness(state, started=started, stale_after=stale_after, now=now),
        repo=repo,
        started=started,
        stale_after=stale_after,
        fleet=fleet,
        credentials=credentials,
    )
