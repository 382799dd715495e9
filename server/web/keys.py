"""Typed application and request state: every key the app stores, in one place.

Only the web layer reads these; what lies below is handed the values it
needs by the composition root (``run.compose``), never the app.
"""

from __future__ import annotations

from aiohttp import web

from ..base.clock import Moment
from ..base.logs import Fields
from ..base.reloading import Current
from ..ops.fleet import FleetTable
from ..ops.metrics import ConnectionCounts, Metrics
from ..ops.status import RepoDescription
from ..processes.pool import FollowerPool
from ..processes.role import ProcessRole
from ..settings import Settings
from ..shared.view import SharedView
from ..sync.control import SyncControl
from ..sync.file_watch import FileWatch
from ..sync.state import SnapshotHolder
from ..sync.viewer import CommitViewer
from .auth import AuthPolicy, Credential
from .in_flight import InFlight
from .request_body import BodyLimits
from .webhooks import WebhookReceiver

SETTINGS = web.AppKey("settings", Settings)
SNAPSHOTS = web.AppKey("snapshots", SnapshotHolder)
# The leader's sync loop, or a follower's link to it (a protocol: annotated, not passed).
SYNC: web.AppKey[SyncControl] = web.AppKey("sync")
VIEWER = web.AppKey("viewer", CommitViewer)  # history and past commits, on the view thread
REPO = web.AppKey("repo", RepoDescription)
STARTED = web.AppKey("started", Moment)
BODY_LIMITS = web.AppKey("body_limits", BodyLimits)
WEBHOOKS = web.AppKey("webhooks", WebhookReceiver)
# A cell: --auth-file is read again when it changes; a request reads it once.
AUTH: web.AppKey[Current[AuthPolicy]] = web.AppKey("auth")
CREDENTIAL_FILES = web.AppKey("credential_files", FileWatch)  # what is reloaded, for /status
METRICS = web.AppKey("metrics", Metrics)
FLEET = web.AppKey("fleet", FleetTable)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
CONNECTIONS = web.AppKey("connections", ConnectionCounts)
ROLE = web.AppKey("role", ProcessRole)  # which process of --workers N this is
FOLLOWERS = web.AppKey("followers", FollowerPool)  # the leader's followers (--workers > 1)
# What this replica shares with the others (--redis; the leader process only).
SHARED = web.AppKey("shared", SharedView)

# Per request: the credential that authenticated it, when authentication is on.
CREDENTIAL = web.RequestKey("credential", Credential)
# Per request: its id, and what the handler adds to its log line and metrics.
REQUEST_ID = web.RequestKey("request_id", str)
APP_LABEL = web.RequestKey("app_label", str)  # set by /config only: the bounded metrics label
ACCESS_LOG_FIELDS: web.RequestKey[Fields] = web.RequestKey("access_log_fields")
