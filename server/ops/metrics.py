"""Prometheus metrics, in a registry of the app's own (never the global one).

Only four things are updated on the /config path: a request counter, a
latency histogram, an in-flight gauge (a dict lookup and a lock each) and, for an
app the served commit does not know, a counter by app id. Everything else -- the
served commit, snapshot age, sync counts, staleness, fleet counts -- is read
from the live state when ``/metrics`` is scraped, by :class:`StateCollector`,
so keeping it costs the request path nothing and can never drift from
``/status``.

The ``app`` label is bounded: an app id that the served commit does not know is
counted as ``_unknown``, a request without one as ``_none``, an unparseable one
as ``_invalid``. Worker-chosen strings never become label values there; the one
exception, ``unknown_app_requests_total``, names the unknown ids (they passed the
app-id rule) for the first :data:`MAX_UNKNOWN_APP_LABELS` of them per process and
folds the rest into ``(other)``.

With ``--workers N`` the request metrics are kept in prometheus_client's
multiprocess mode (memory-mapped files under ``<data-dir>/metrics``, one set
per process), so a scrape that reaches any process counts every process's
answers. The state read at scrape time is the same in every process: each
follower holds the leader's sync state and the shared fleet table. The sync
histogram is observed by the leader only (it syncs), into its file, so any
process's scrape shows it. ``process_*`` are the leader's in every process
(read from ``/proc/<leader pid>``): a scrape reaches one process at random, and
per-process values under one name would jump between them. ``python_gc_*``
cannot be read from another process, so they are left out with ``--workers N``.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .. import __version__
from ..base.clock import Moment
from ..config.schema import BUNDLED_VERSION
from ..config.snapshot import Snapshot
from ..sync.control import SyncControl
from ..sync.freshness import freshness
from ..sync.state import SnapshotHolder, SyncRecord, SyncState
from .fleet import FleetTable

PREFIX = "lmcache_config"
UNKNOWN_APP = "_unknown"
NO_APP = "_none"
INVALID_APP = "_invalid"
# Distinct app ids the unknown-app counter names (per process); later ones count as OTHER_APP.
MAX_UNKNOWN_APP_LABELS = 100
OTHER_APP = "(other)"
# Answers come from memory: most take well under a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A sync is a fetch (often under 100 ms) plus, for a new commit, a build: up to --git-timeout.
SYNC_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The provider label of a webhook to no known provider (a path or header a sender chose).
UNKNOWN_PROVIDER = "unknown"
BUILD_INFO = "lmcache_config_server_build_info"


@dataclasses.dataclass(kw_only=True)
class ConnectionCounts:
    """What the connection guards saw (``web.connections``). Touched on the event loop only."""

    open: int = 0
    refused: int = 0  # closed at once: --max-connections were open
    timed_out: int = 0  # closed: a request head did not arrive within --header-timeout


def app_label(snapshot: Snapshot | None, app_id: str | None) -> str:
    """The bounded ``app`` label for a request's app id."""
    if app_id is None:
        return NO_APP
    if snapshot is None or app_id not in snapshot.config_set.apps:
        return UNKNOWN_APP
    return app_id


class Metrics:
    """The app's registry and the few metrics updated per request."""

    def __init__(self, multiprocess_dir: str | None = None, leader_pid: int | None = None) -> None:
        """``leader_pid``: in a follower, the process whose ``process_*`` every process reports."""
        self.registry = CollectorRegistry()
        own: CollectorRegistry | None = self.registry
        process: int | str = leader_pid if leader_pid is not None else "self"
        ProcessCollector(pid=lambda: process, registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(BuildInfo())
        if multiprocess_dir is None:
            GCCollector(registry=self.registry)  # this process's own: see the module's docstring
        if multiprocess_dir is not None:
            # The value class is chosen when prometheus_client is imported: the CLI sets
            # PROMETHEUS_MULTIPROC_DIR before that. Counting in process memory instead would
            # make every scrape show one process's share, so refuse to start.
            if values.ValueClass is values.MutexValue:
                raise RuntimeError("prometheus_client was imported before its multiprocess mode")
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            own = None  # the files are the source; registering too would count twice
        self._request_counters: dict[tuple[str, int], Counter] = {}
        self.requests = Counter(
            f"{PREFIX}_requests",
            "/config answers, by app and HTTP status.",
            ["app", "status"],
            registry=own,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "/config requests being answered now (body upload included).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self._unknown_counters: dict[str, Counter] = {}
        self.unknown_apps = Counter(
            f"{PREFIX}_unknown_app_requests",
            "/config requests for an app id with no apps/<id>.yaml in the served commit.",
            ["app"],
            registry=own,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer /config, body upload included.",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.sync_duration = Histogram(
            f"{PREFIX}_sync_duration_seconds",
            "Time a sync took (fetch, and build when the commit is new), by trigger and result.",
            ["trigger", "result"],
            buckets=SYNC_BUCKETS,
            registry=own,
        )
        self.webhooks = Counter(
            f"{PREFIX}_webhooks",
            "Webhook deliveries, by provider and outcome (accepted, replay, ignored_ref, ...).",
            ["provider", "outcome"],
            registry=own,
        )

    def observe_sync(self, record: SyncRecord) -> None:
        # Wall-clock times (the record's): a clock step must not give a negative duration.
        seconds = max(0.0, record.finished_at - record.started_at)
        self.sync_duration.labels(record.trigger.value, record.result.value).observe(seconds)

    def count_webhook(self, provider: str, outcome: str) -> None:
        # Both bounded: providers are a fixed set, outcomes are the handler's own words.
        self.webhooks.labels(provider, outcome).inc()

    def observe_config(self, app: str, status: int, seconds: float) -> None:
        # The labelled child is looked up once per (app, status): labels() takes a lock
        # and builds a key on every call. Both labels are bounded (see app_label).
        counter = self._request_counters.get((app, status))
        if counter is None:
            counter = self._request_counters[app, status] = self.requests.labels(app, str(status))
        counter.inc()
        self.latency.observe(seconds)

    def count_unknown_app(self, app_id: str) -> None:
        counter = self._unknown_counters.get(app_id)
        if counter is None:
            # A worker picks the id: cap the labels it can create (memory, scrape size).
            label = app_id if len(self._unknown_counters) < MAX_UNKNOWN_APP_LABELS else OTHER_APP
            counter = self._unknown_counters.get(label) or self.unknown_apps.labels(label)
            self._unknown_counters[label] = counter
        counter.inc()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the scraper asked for."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class BuildInfo:
    """What is running: the server's version, Python's, and the bundled LMCache schema."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            BUILD_INFO,
            "Always 1: the server version, the Python version and the newest LMCache field "
            "list bundled (the schema a commit was checked with is in /status).",
            labels=["version", "python", "lmcache_schema"],
        )
        info.add_metric([__version__, platform.python_version(), BUNDLED_VERSION], 1)
        yield info


class StateCollector:
    """Reads the served snapshot, sync state and fleet table at scrape time."""

    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        syncer: SyncControl,
        fleet: FleetTable,
        started: Moment,
        stale_after: float,
        ref: str,
        connections: ConnectionCounts | None = None,
    ) -> None:
        self._connections = connections
        self._holder = holder
        self._syncer = syncer
        self._fleet = fleet
        self._started = started
        self._stale_after = stale_after
        self._ref = ref

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        snapshot = self._holder.current
        state = self._syncer.state

        yield GaugeMetricFamily(
            f"{PREFIX}_ready", "1 once a validated commit is served.", value=int(bool(snapshot))
        )
        info = InfoMetricFamily(f"{PREFIX}_served_commit", "The commit being served.")
        if snapshot is not None:
            info.add_metric([], {"commit": snapshot.commit.sha, "ref": self._ref})
        yield info
        age = GaugeMetricFamily(
            f"{PREFIX}_snapshot_age_seconds",
            "Deprecated (use lmcache_config_snapshot_loaded_timestamp_seconds; removed in the "
            "next release): seconds since the served snapshot was loaded.",
        )
        loaded = GaugeMetricFamily(
            f"{PREFIX}_snapshot_loaded_timestamp_seconds",
            "When the served snapshot was loaded (Unix time; absent while nothing is served).",
        )
        apps = GaugeMetricFamily(f"{PREFIX}_apps", "Apps (apps/<id>.yaml) in the served commit.")
        if snapshot is not None:
            age.add_metric([], max(0.0, now - snapshot.loaded_at))
            loaded.add_metric([], snapshot.loaded_at)
            apps.add_metric([], len(snapshot.app_ids))
        yield age
        yield loaded
        yield apps
        yield GaugeMetricFamily(
            f"{PREFIX}_tip_served",
            "0 while the ref's tip is not the served commit (rejected); 1 otherwise.",
            value=int(snapshot is not None and state.tip in {None, snapshot.commit.sha}),
        )

        pin = state.pin
        yield GaugeMetricFamily(
            f"{PREFIX}_pinned",
            "1 while an emergency pin (POST /admin/pin) holds what is served; 0 otherwise.",
            value=int(pin is not None),
        )
        pinned = InfoMetricFamily(f"{PREFIX}_pinned_commit", "The commit pinned, while pinned.")
        if pin is not None:
            pinned.add_metric([], {"commit": pin.commit})
        yield pinned
        yield from self._sync_families(state)

        if self._connections is not None:
            counts = self._connections
            yield GaugeMetricFamily(
                f"{PREFIX}_connections_open", "Client connections open now.", value=counts.open
            )
            yield CounterMetricFamily(
                f"{PREFIX}_connections_refused",
                "Connections closed at once: --max-connections were open.",
                value=counts.refused,
            )
            yield CounterMetricFamily(
                f"{PREFIX}_connections_timed_out",
                "Connections closed: a request head did not arrive within --header-timeout.",
                value=counts.timed_out,
            )

        fleet = GaugeMetricFamily(
            f"{PREFIX}_fleet_instances",
            "Workers this replica answered recently, by app and the commit they were given.",
            labels=["app", "commit"],
        )
        per_label: dict[tuple[str, str], int] = {}
        for (app_id, commit), count in self._fleet.counts().items():
            key = (app_label(snapshot, app_id), commit)
            per_label[key] = per_label.get(key, 0) + count
        for (app, commit), count in sorted(per_label.items()):
            fleet.add_metric([app, commit], count)
        yield fleet

    def _sync_families(self, state: SyncState) -> Iterator[Metric]:
        """Freshness and the sync counts (apart: one method would hold too much)."""
        fresh = freshness(
            state, started=self._started, stale_after=self._stale_after, now=Moment.now()
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_seconds_since_last_successful_sync",
            "Deprecated (use lmcache_config_last_successful_sync_timestamp_seconds; removed in "
            "the next release): seconds since a fetch last succeeded (+Inf when none has).",
            value=math.inf if fresh.since_last_success is None else fresh.since_last_success,
        )
        last_success = GaugeMetricFamily(
            f"{PREFIX}_last_successful_sync_timestamp_seconds",
            "When a fetch last succeeded (Unix time; absent while none has since startup).",
        )
        if state.last_success is not None:
            last_success.add_metric([], state.last_success.wall)
        yield last_success
        yield GaugeMetricFamily(
            f"{PREFIX}_stale",
            "1 when no sync has succeeded for longer than --stale-after.",
            value=int(fresh.stale),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_sync_consecutive_failures",
            "Fetches failed in a row.",
            value=state.consecutive_failures,
        )
        attempts = CounterMetricFamily(
            f"{PREFIX}_sync_attempts", "Sync attempts, by trigger.", labels=["trigger"]
        )
        for trigger, count in sorted(state.attempts.items()):
            attempts.add_metric([trigger], count)
        yield attempts
        failures = CounterMetricFamily(
            f"{PREFIX}_sync_failures", "Failed sync attempts, by trigger.", labels=["trigger"]
        )
        for trigger in sorted(state.attempts.keys() | state.failures.keys()):
            failures.add_metric([trigger], state.failures[trigger])
        yield failures
        yield CounterMetricFamily(
            f"{PREFIX}_rejected_commits",
            "Commits that failed validation (each counted once).",
            value=state.rejected_commits,
        )
