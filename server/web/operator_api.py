"""Endpoints for people and their tools: /status, /history, /fleet, /metrics, probes, /admin.

Only /admin/pin and /admin/unpin change what is served, and only by asking
the sync loop (which decides, builds and publishes); /admin/refresh asks it
for a sync now and waits for it. History walks run on the view thread, so
they never delay a sync.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from aiohttp import web

from ..base.clock import Moment
from ..base.errors import InvalidParameter, MalformedBody, NotReady
from ..git.pin_store import MAX_REASON_CHARS
from ..ops.status import StatusView, status_view
from ..sync.state import PinChange, SyncTrigger
from .keys import (
    AUTH,
    CREDENTIAL,
    CREDENTIAL_FILES,
    FLEET,
    FOLLOWERS,
    METRICS,
    REPO,
    ROLE,
    SETTINGS,
    SHARED,
    SNAPSHOTS,
    STARTED,
    SYNC,
    VIEWER,
)
from .params import parse_app_id, parse_limit, read_body


def _pretty(data: Any) -> str:
    return json.dumps(data, indent=2)


def is_admin_request(request: web.Request) -> bool:
    """Whether this request may see operator details (always, when auth is off)."""
    if not request.app[AUTH].value.enabled:
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
        credentials=app[CREDENTIAL_FILES].statuses(),
    )


async def handle_status(request: web.Request) -> web.Response:
    view = current_status(request.app)
    if not is_admin_request(request):
        return web.json_response(view.summary_json())
    status = {**view.as_json(), "process": process_status(request.app)}
    if (shared := request.app.get(SHARED)) is not None:
        # --redis: which replica answered, every live replica, and whether Redis answers.
        status.update(shared.status_json(request.app[SNAPSHOTS].served_sha))
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


_COMMIT_ID = re.compile(r"[0-9a-f]{7,40}")
# An operator's words go to logs and pages: printable, on one line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def _pin_body(request: web.Request, *, commit_required: bool) -> tuple[str | None, str]:
    """(commit, reason) of a pin or unpin body; MalformedBody (400) for anything else."""
    raw = await read_body(request, request.app[SETTINGS].body_timeout)
    if not raw.strip():
        if commit_required:
            raise MalformedBody('expected a JSON body: {"commit": "<sha>", "reason": "..."}')
        return None, ""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedBody("request body is not valid JSON") from None
    allowed = {"commit", "reason"} if commit_required else {"reason"}
    if not isinstance(body, dict) or set(body) - allowed:
        raise MalformedBody(f"expected a JSON object with only {' and '.join(sorted(allowed))}")
    commit, reason = body.get("commit"), body.get("reason", "")
    if commit_required and (not isinstance(commit, str) or not _COMMIT_ID.fullmatch(commit)):
        raise MalformedBody("'commit' must be a commit id: 7 to 40 lowercase hex digits")
    if commit_required and (not isinstance(reason, str) or not reason.strip()):
        raise MalformedBody("'reason' must say why (it is shown with the pin)")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or _CONTROL.search(reason):
        raise MalformedBody(
            f"'reason' must be one line of at most {MAX_REASON_CHARS} printable characters"
        )
    return (commit if isinstance(commit, str) else None), reason.strip()


def _pinned_by(request: web.Request) -> str:
    """The admin credential's name; with auth off only loopback reaches /admin/*."""
    credential = request.get(CREDENTIAL)
    return credential.name if credential is not None else "loopback"


def _pin_answer(request: web.Request, change: PinChange) -> web.Response:
    return web.json_response(
        {
            "pinned": change.pin.as_json() if change.pin is not None else None,
            "previous": change.previous.as_json() if change.previous is not None else None,
            # Which replicas the pin applies to: this one, until the pin is shared.
            "scope": change.scope,
            "served": request.app[SNAPSHOTS].served_sha,
            "tip": request.app[SYNC].state.tip,
            "sync": change.record.as_json(),
        },
        dumps=_pretty,
    )


async def handle_pin(request: web.Request) -> web.Response:
    """Serve a known-good commit of the mirror until /admin/unpin (authorization: ``authorize``)."""
    commit, reason = await _pin_body(request, commit_required=True)
    assert commit is not None  # required above
    change = await request.app[SYNC].pin(commit, by=_pinned_by(request), reason=reason)
    return _pin_answer(request, change)


async def handle_unpin(request: web.Request) -> web.Response:
    """Drop the pin and sync at once: the tip is served again (or the last good one)."""
    _, reason = await _pin_body(request, commit_required=False)
    change = await request.app[SYNC].unpin(by=_pinned_by(request), reason=reason)
    return _pin_answer(request, change)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history", handle_history)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/status", handle_status)
    app.router.add_get("/fleet", handle_fleet)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_post("/admin/refresh", handle_refresh)
    app.router.add_post("/admin/pin", handle_pin)
    app.router.add_post("/admin/unpin", handle_unpin)
