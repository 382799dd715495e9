"""The one app factory, used by the CLI, ``python -m server`` and the tests alike."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from .appkeys import SETTINGS, SNAPSHOTS, STARTED_AT, SYNCER
from .http_api import add_routes, error_middleware
from .settings import Settings
from .snapshot import SnapshotHolder
from .sync import Syncer


async def sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the git sync loop with the server; stop it (and its git thread) on shutdown."""
    syncer = app[SYNCER]
    await syncer.start()
    yield
    await syncer.stop()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    holder = SnapshotHolder()
    app[SETTINGS] = settings
    app[SNAPSHOTS] = holder
    app[SYNCER] = Syncer(settings, holder)
    app[STARTED_AT] = time.time()
    app.cleanup_ctx.append(sync_ctx)
    add_routes(app)
    return app
