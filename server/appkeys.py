"""Typed application and request state: every key the app stores, in one place."""

from __future__ import annotations

from aiohttp import web

from .auth import AuthPolicy, Credential
from .fleet import FleetTable
from .in_flight import InFlight
from .logs import Fields
from .metrics import Metrics
from .settings import Settings
from .snapshot import SnapshotHolder
from .sync import Syncer
from .webhooks import WebhookReceiver
from .workers import WorkerPool, WorkerRole

SETTINGS = web.AppKey("settings", Settings)
SNAPSHOTS = web.AppKey("snapshots", SnapshotHolder)
SYNCER = web.AppKey("syncer", Syncer)
STARTED_AT = web.AppKey("started_at", float)
WEBHOOKS = web.AppKey("webhooks", WebhookReceiver)
AUTH = web.AppKey("auth", AuthPolicy)
METRICS = web.AppKey("metrics", Metrics)
FLEET = web.AppKey("fleet", FleetTable)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
ROLE = web.AppKey("role", WorkerRole)  # which process of --workers N this is
WORKER_POOL = web.AppKey("worker_pool", WorkerPool)  # the leader's followers (--workers > 1)

# Per request: the credential that authenticated it, when authentication is on.
CREDENTIAL = web.RequestKey("credential", Credential)
# Per request: its id, and what the handler adds to its log line and metrics.
REQUEST_ID = web.RequestKey("request_id", str)
APP_LABEL = web.RequestKey("app_label", str)  # set by /config only: the bounded metrics label
ACCESS_FIELDS: web.RequestKey[Fields] = web.RequestKey("access_fields")
