"""Typed application state: every key the app stores, in one place."""

from __future__ import annotations

from aiohttp import web

from .auth import AuthPolicy, Credential
from .settings import Settings
from .snapshot import SnapshotHolder
from .sync import Syncer
from .webhooks import WebhookReceiver

SETTINGS = web.AppKey("settings", Settings)
SNAPSHOTS = web.AppKey("snapshots", SnapshotHolder)
SYNCER = web.AppKey("syncer", Syncer)
STARTED_AT = web.AppKey("started_at", float)
WEBHOOKS = web.AppKey("webhooks", WebhookReceiver)
AUTH = web.AppKey("auth", AuthPolicy)

# Per request: the credential that authenticated it, when authentication is on.
CREDENTIAL = web.RequestKey("credential", Credential)
