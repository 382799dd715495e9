"""The one app factory, used by the CLI, ``python -m server`` and the tests alike.

:func:`create_app` composes one process's parts (``compose``), stores what
handlers read under typed keys (``web.keys``), and gives each long-lived
resource one ``cleanup_ctx``: the data dir lock, the git threads, the sync
loop (or, in a follower, the link to the leader), the upstream watcher, the
credential files' watch and the followers of ``--workers N``. Startup runs
them in that order; shutdown undoes them in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..git.remote import local_git_dir
from ..processes.pool import FollowerPool
from ..processes.role import LEADER, ProcessRole
from ..settings import Settings
from ..shared.replicas import SharedState
from ..sync.state import SyncTrigger
from ..sync.upstream_watch import RefWatcher
from ..web import config_api, operator_api, webhook_api
from ..web.dashboard import setup_dashboard
from ..web.in_flight import InFlight
from ..web.keys import (
    AUTH,
    BODY_LIMITS,
    CONNECTIONS,
    CREDENTIAL_FILES,
    FLEET,
    FOLLOWERS,
    IN_FLIGHT,
    METRICS,
    REPO,
    ROLE,
    SETTINGS,
    SHARED,
    SNAPSHOTS,
    STARTED,
    SYNC,
    VIEWER,
    WEBHOOKS,
)
from ..web.middleware import front_door
from .compose import Parts, compose

log = logging.getLogger("server")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _data_dir_ctx(parts: Parts) -> CleanupContext:
    async def hold_data_dir(app: web.Application) -> AsyncIterator[None]:
        """The leader holds the data dir for as long as it runs: one server per directory."""
        assert parts.leader is not None
        parts.leader.lock.acquire()
        yield
        parts.leader.lock.release()

    return hold_data_dir


def _threads_ctx(parts: Parts) -> CleanupContext:
    async def git_threads(app: web.Application) -> AsyncIterator[None]:
        """The sync and view threads, shut down once nothing uses them."""
        yield
        await parts.view_thread.shutdown()
        await parts.sync_thread.shutdown()

    return git_threads


def _sync_ctx(parts: Parts) -> CleanupContext:
    async def sync_loop(app: web.Application) -> AsyncIterator[None]:
        """The leader's sync loop, or the follower's link to its leader."""
        if parts.leader is not None:
            if parts.leader.signatures is not None:
                # A bad trusted-key file must stop startup, not leave a server that never
                # serves.
                await parts.sync_thread.run(parts.leader.signatures.prepare)
            syncer = parts.leader.syncer
            syncer.start()
            yield
            await syncer.stop()
        else:
            assert parts.follower is not None
            parts.follower.start()
            yield
            await parts.follower.stop()
        log.info("sync stopped")

    return sync_loop


def _watch_ctx(parts: Parts) -> CleanupContext:
    async def watch_upstream(app: web.Application) -> AsyncIterator[None]:
        """Watch a local upstream's refs so a commit is served without waiting for a poll."""
        git_dir = local_git_dir(parts.settings.repo) if parts.settings.watch else None
        if parts.leader is None or git_dir is None:
            yield
            return
        syncer = parts.leader.syncer
        watcher = RefWatcher(git_dir, lambda: syncer.request_sync(SyncTrigger.WATCH))
        watcher.start()
        syncer.state.watching = str(git_dir)
        yield
        await watcher.stop()

    return watch_upstream


def _credential_files_ctx(parts: Parts) -> CleanupContext:
    async def credential_files(app: web.Application) -> AsyncIterator[None]:
        """Every process reloads its credential files when they change (run.credentials)."""
        parts.credential_files.start()
        yield
        await parts.credential_files.stop()

    return credential_files


def _shared_ctx(shared: SharedState) -> CleanupContext:
    async def shared_state(app: web.Application) -> AsyncIterator[None]:
        """--redis: heartbeat, fan-out and the fleet exchange, all in background tasks."""
        shared.start()
        yield
        await shared.stop()

    return shared_state


def _followers_ctx(pool: FollowerPool) -> CleanupContext:
    async def followers(app: web.Application) -> AsyncIterator[None]:
        """The leader of --workers N starts its followers once it holds the data dir."""
        await pool.start()
        yield
        await pool.stop()
        log.info("workers stopped")

    return followers


def create_app(
    settings: Settings,
    role: ProcessRole = LEADER,
    *,
    follower_entry: Callable[..., None] | None = None,
    on_leader_gone: Callable[[], None] | None = None,
) -> web.Application:
    """The server's app; ``role`` says which process of ``--workers N`` it runs in.

    The leader of ``--workers N`` starts its followers with ``follower_entry``;
    a follower stops itself with ``on_leader_gone``. Both are handed in by the
    layer that runs processes (``run.serve``), which this module never imports.
    """
    parts = compose(settings, role, on_leader_gone=on_leader_gone)
    app = web.Application(
        # Outermost first: request id, log line and metrics see every outcome, auth errors too.
        middlewares=[front_door],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[AUTH] = parts.auth
    app[WEBHOOKS] = parts.webhooks
    app[CREDENTIAL_FILES] = parts.credential_files
    app[SNAPSHOTS] = parts.holder
    app[SYNC] = parts.sync
    app[VIEWER] = parts.viewer
    app[REPO] = parts.repo
    app[STARTED] = parts.started
    app[FLEET] = parts.fleet
    app[METRICS] = parts.metrics
    app[IN_FLIGHT] = InFlight()
    app[ROLE] = role
    app[BODY_LIMITS] = parts.body_limits
    app[CONNECTIONS] = parts.connections
    if parts.leader is not None:
        app.cleanup_ctx.append(_data_dir_ctx(parts))
    app.cleanup_ctx.append(_threads_ctx(parts))
    app.cleanup_ctx.append(_sync_ctx(parts))
    app.cleanup_ctx.append(_watch_ctx(parts))
    if parts.shared_view is not None:
        app[SHARED] = parts.shared_view
    if parts.shared is not None:
        app.cleanup_ctx.append(_shared_ctx(parts.shared))
    app.cleanup_ctx.append(_credential_files_ctx(parts))
    if parts.leader is not None and settings.workers > 1:
        if follower_entry is None or parts.metrics_dir is None or role.live is None:
            raise RuntimeError("--workers above 1 is started by run.serve.serve")
        pool = FollowerPool(
            settings=settings,
            entry=follower_entry,
            syncer=parts.leader.syncer,
            fleet=parts.fleet,
            metrics_dir=parts.metrics_dir,
            live=role.live,
            shared=parts.shared,
        )
        app[FOLLOWERS] = pool
        app.cleanup_ctx.append(_followers_ctx(pool))
    config_api.add_routes(app)
    operator_api.add_routes(app)
    webhook_api.add_routes(app)
    setup_dashboard(app)
    return app
