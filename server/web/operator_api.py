"""Endpoints for people and their tools: /status, /history, /fleet, /metrics, probes, /admin.

None of them changes what is served: /admin/refresh only asks the sync loop
for a sync now and waits for it. History walks run on the view thread, so
they never delay a sync.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from ..base.clock import Moment
from ..base.errors import InvalidParameter, NotReady
from ..ops.status import StatusView, status_view
from ..sync.state import SyncTrigger
from .keys import (
    AUTH,
    CREDENTIAL,
    FLEET,
    FOLLOWERS,
    METRICS,
    REPO,
    ROLE,
    SETTINGS,
    SNAPSHOTS,
    STARTED,
    SYNC,
    VIEWER,
)
from .params import parse_app_id, parse_limit


def _pretty(data: Any) -> str:
    return json.dumps(data, indent=2)


def is_admin_request(request: web.Request) -> bool:
    """Whether this request may see operator details (always, when auth is off)."""
    if not request.app[AUTH].enabled:
        return True
    credential = request.get(CREDENTIAL)
    return credential is not None and credential.admin


async def handle_history(request: web.Request) -> web.Response:
    """Commits of the served history that changed one app's effective config, newest first."""
    app_id = parse_app_id(request, "app")
    if app_id is None:
        raise InvalidParameter("the app parameter is required: /history?app=<app_id>")
    limit = parse_limit(request)
    snapshot = request.app[SNAPSHOTS].current
    if snapshot is None:
        raise NotReady("no validated commit loaded yet; see /status")
    history = await request.app[VIEWER].history(app_id, snapshot.commit.sha, limit)
    return web.json_response({**history.as_json(), "ref": request.app[SETTINGS].ref}, dumps=_pretty)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def handle_readyz(request: web.Request) -> web.Response:
    snapshot = request.app[SNAPSHOTS].current
    if snapshot is None:
        return web.json_response(
            {"ready": False, "reason": "no validated commit loaded yet"}, status=503
        )
    return web.json_response({"ready": True, "version": snapshot.commit.sha})


def current_status(app: web.Application) -> StatusView:
    """This replica's status now (``ops.status``), as /status and the dashboard show it."""
    return status_view(
        holder=app[SNAPSHOTS],
        state=app[SYNC].state,
        fleet=app[FLEET],
        repo=app[REPO],
        started=app[STARTED],
        stale_after=app[SETTINGS].stale_after,
        now=Moment.now(),
    )


async def handle_status(request: web.Request) -> web.Response:
    view = current_status(request.app)
    if not is_admin_request(request):
        return web.json_response(view.summary_json())
    status = {**view.as_json(), "process": process_status(request.app)}
    return web.json_response(status, dumps=_pretty)


def process_status(app: web.Application) -> dict[str, Any]:
    """Which process of --workers N answered, and (from the leader) its followers."""
    role = app[ROLE]
    status: dict[str, Any] = {
        "worker": role.index,
        "role": "leader" if role.is_leader else "follower",
        "workers": app[SETTINGS].workers,
        "pid": os.getpid(),
    }
    followers = app.get(FOLLOWERS)
    if followers is not None:
        status["followers"] = followers.alive()
    return status


async def handle_fleet(request: web.Request) -> web.Response:
    """Per app: which workers (as this replica saw them) hold which commit."""
    wanted = parse_app_id(request, "app")
    report = request.app[FLEET].report(served=request.app[SNAPSHOTS].served_sha, app_id=wanted)
    return web.json_response(report, dumps=_pretty)


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def handle_refresh(request: web.Request) -> web.Response:
    """Fetch now and answer with the commit served afterwards (authorization: ``authorize``)."""
    record = await request.app[SYNC].refresh(SyncTrigger.MANUAL)
    return web.json_response(
        {"sync": record.as_json(), "served": request.app[SNAPSHOTS].served_sha}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history", handle_history)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/status", handle_status)
    app.router.add_get("/fleet", handle_fleet)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/admin/refresh", handle_refresh)
