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
    ROLE,
    SETTINGS,
    SNAPSHOTS,
    STARTED_AT,
    SYNCER,
    WEBHOOKS,
    WORKER_POOL,
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
from .workers import LEADER, FollowerSyncer, WorkerPool, WorkerRole, metrics_dir_in_use
from .workers import stop_this_process as stop_when_leader_is_gone

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
    watching = settings.watch and app[ROLE].is_leader
    git_dir = local_git_dir(settings.repo) if watching else None
    if git_dir is None:
        yield
        return
    syncer = app[SYNCER]
    watcher = RefWatcher(git_dir, lambda: syncer.request_sync("watch"))
    watcher.start()
    syncer.state.watching = str(git_dir)
    yield
    await watcher.stop()


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The leader of --workers N starts its followers once it holds the data dir."""
    pool = app[WORKER_POOL]
    await pool.start()
    yield
    await pool.stop()
    log.info("workers stopped")


def create_app(settings: Settings, role: WorkerRole = LEADER) -> web.Application:
    """The server's app; ``role`` says which process of ``--workers N`` it runs in."""
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
    fleet = FleetTable(capacity=settings.fleet_size, env_allow_list=settings.fleet_env)
    syncer: Syncer
    if role.leader_link is None:
        syncer = Syncer(settings, holder)
    else:
        syncer = FollowerSyncer(
            settings,
            holder,
            link=role.leader_link,
            fleet=fleet,
            on_leader_gone=stop_when_leader_is_gone,
        )
    started_at = time.time()
    metrics = Metrics(str(metrics_dir_in_use()) if settings.workers > 1 else None)
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
    app[ROLE] = role
    app.cleanup_ctx.append(sync_ctx)
    app.cleanup_ctx.append(watch_ctx)
    if role.is_leader and settings.workers > 1:
        app[WORKER_POOL] = WorkerPool(settings, syncer, fleet)
        app.cleanup_ctx.append(workers_ctx)
    http_api.add_routes(app)
    sync_api.add_routes(app)
    setup_dashboard(app)
    return app
