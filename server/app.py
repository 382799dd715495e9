"""The one app factory, used by the CLI, ``python -m server`` and the tests alike."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import http_api, sync_api
from .appkeys import (
    AUTH,
    FLEET,
    IN_FLIGHT,
    METRICS,
    SETTINGS,
    SNAPSHOTS,
    STARTED_AT,
    SYNCER,
    WEBHOOKS,
)
from .auth import AuthPolicy, load_auth_file
from .dashboard import setup_dashboard
from .fleet import FleetTable
from .front_door import front_door
from .in_flight import InFlight
from .metrics import Metrics, StateCollector
from .settings import Settings
from .snapshot import SnapshotHolder
from .sync import Syncer
from .upstream_watch import RefWatcher, local_git_dir
from .webhooks import WebhookReceiver, load_webhook_secret

log = logging.getLogger("server")


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the git sync loop with the server; stop it (and its git thread) on shutdown."""
    syncer = app[SYNCER]
    await syncer.start()
    yield
    await syncer.stop()
    log.info("sync stopped")


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watch a local upstream's refs so a commit is served without waiting for a poll."""
    settings = app[SETTINGS]
    git_dir = local_git_dir(settings.repo) if settings.watch else None
    if git_dir is None:
        yield
        return
    syncer = app[SYNCER]
    watcher = RefWatcher(git_dir, lambda: syncer.request_sync("watch"))
    watcher.start()
    syncer.state.watching = str(git_dir)
    yield
    await watcher.stop()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        # Outermost first: request id, log line and metrics see every outcome, auth errors too.
        middlewares=[front_door],
        client_max_size=settings.max_body_bytes,
    )
    app[AUTH] = AuthPolicy(
        config=load_auth_file(settings.auth_file) if settings.auth_file else None,
        protect_metrics=settings.protect_metrics,
    )
    holder = SnapshotHolder()
    app[WEBHOOKS] = WebhookReceiver(load_webhook_secret(settings), settings.ref)
    syncer = Syncer(settings, holder)
    fleet = FleetTable(capacity=settings.fleet_size, env_allow_list=settings.fleet_env)
    started_at = time.time()
    metrics = Metrics()
    metrics.registry.register(
        StateCollector(
            holder=holder,
            syncer=syncer,
            fleet=fleet,
            started_at=started_at,
            stale_after=settings.stale_after,
            ref=settings.ref,
        )
    )
    app[SETTINGS] = settings
    app[SNAPSHOTS] = holder
    app[SYNCER] = syncer
    app[STARTED_AT] = started_at
    app[FLEET] = fleet
    app[METRICS] = metrics
    app[IN_FLIGHT] = InFlight()
    app.cleanup_ctx.append(sync_ctx)
    app.cleanup_ctx.append(watch_ctx)
    http_api.add_routes(app)
    sync_api.add_routes(app)
    setup_dashboard(app)
    return app
