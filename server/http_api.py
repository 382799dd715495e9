"""HTTP endpoints: /config for workers; /history, /healthz, /readyz, /status, /fleet and
/metrics for people.

/config reads the current snapshot reference once and answers from it alone,
so every answer comes from exactly one commit. Nothing on this path touches
git or the disk. Request bodies carry the worker's whole environment: they are
parsed, used for rule matching, and dropped; neither they nor env values are
ever logged (only the names of variables a matching rule read), and the fleet
table copies only allow-listed variables out of them.

Every handler is wrapped by the one middleware in ``front_door``: request id,
authorization, JSON errors, one log line and the request's metrics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from .appkeys import (
    ACCESS_FIELDS,
    APP_LABEL,
    AUTH,
    CREDENTIAL,
    FLEET,
    METRICS,
    ROLE,
    SETTINGS,
    SNAPSHOTS,
    STARTED_AT,
    SYNCER,
    WORKER_POOL,
)
from .errors import (
    AccessDenied,
    InvalidAppId,
    InvalidParameter,
    NotReady,
    UnknownApp,
)
from .freshness import freshness
from .logs import Fields
from .metrics import INVALID_APP, app_label
from .repo_format import APP_ID_RE, APP_ID_RULE
from .request_body import parse_body

log = logging.getLogger("server.access")
error_log = logging.getLogger(__name__)


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "code": code, "message": message}}, status=status
    )


HISTORY_DEFAULT_LIMIT = 20
HISTORY_MAX_LIMIT = 200


def parse_app_id(request: web.Request, name: str = "appId") -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidAppId(f"{name} is given more than once")
    if not values or values[0] == "":
        return None
    app_id = values[0]
    if not APP_ID_RE.match(app_id):
        shown = app_id[:64] + ("..." if len(app_id) > 64 else "")
        raise InvalidAppId(f"invalid {name} {shown!r}: app ids are {APP_ID_RULE}")
    return app_id


def parse_limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(HISTORY_DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= HISTORY_MAX_LIMIT:
        raise InvalidParameter(
            f"limit must be a whole number from 1 to {HISTORY_MAX_LIMIT}, got {raw[:20]!r}"
        )
    return limit


async def handle_config(request: web.Request) -> web.Response:
    request[APP_LABEL] = INVALID_APP
    app_id = parse_app_id(request)
    snapshot = request.app[SNAPSHOTS].current
    request[APP_LABEL] = app_label(snapshot, app_id)
    if snapshot is None:
        raise NotReady("no validated commit loaded yet; see /status")
    settings = request.app[SETTINGS]
    plan = snapshot.plan(app_id)
    if settings.strict_apps and not plan.known:
        raise UnknownApp(
            f"no apps/{app_id}.yaml in commit {snapshot.commit.sha[:12]}"
            if app_id
            else "appId is required (--strict-apps)"
        )
    # The body is checked whole even when no rule reads it, so a malformed one is never
    # accepted; current_config is built only when a rule or access condition reads it.
    answer = snapshot.fixed_answer(app_id)
    body = parse_body(await request.read(), settings, need_config=answer is None)
    if answer is None:
        try:
            answer = snapshot.answer(app_id, body.env, body.config())
        except AccessDenied as denied:
            # The message names variables only, never their values.
            log.warning("config app=%s denied: %s", app_id or "-", denied.message)
            raise
    request.app[FLEET].record(
        app_id=app_id,
        env=body.env,
        instance_id=body.instance_id,
        peer=request.remote,
        commit=snapshot.commit.sha,
        now=time.time(),
    )
    if settings.access_log:  # the fields only the access log line reads
        access: Fields = {
            "app": app_id,
            "known": answer.app_known,
            "commit": snapshot.commit.sha[:12],
            "rules": ",".join(answer.applied_rules) or None,
            "env_used": ",".join(answer.env_names_used) or None,
        }
        request[ACCESS_FIELDS] = access
    elif not answer.app_known and snapshot.first_sighting_of_unknown(app_id):
        log.warning(
            "unknown app %s at commit %s: serving the global layer",
            app_id or "-",
            snapshot.commit.sha[:12],
        )
    return web.Response(
        body=answer.body,
        content_type="application/json",
        headers={"X-Config-Version": snapshot.commit.sha},
    )


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
    history = await request.app[SYNCER].history(app_id, snapshot.commit.sha, limit)
    return web.json_response(
        {**history.as_json(), "ref": request.app[SETTINGS].ref},
        dumps=lambda data: json.dumps(data, indent=2),
    )


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def handle_readyz(request: web.Request) -> web.Response:
    snapshot = request.app[SNAPSHOTS].current
    if snapshot is None:
        return web.json_response(
            {"ready": False, "reason": "no validated commit loaded yet"}, status=503
        )
    return web.json_response({"ready": True, "version": snapshot.commit.sha})


async def handle_status(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    syncer = app[SYNCER]
    state = syncer.state
    snapshot = app[SNAPSHOTS].current
    fresh = freshness(
        state, started_at=app[STARTED_AT], stale_after=settings.stale_after, now=time.time()
    )
    if not is_admin_request(request):
        # Without an admin credential: enough for a load balancer or a curious worker.
        return web.json_response(
            {
                "ready": snapshot is not None,
                "version": snapshot.commit.sha if snapshot else None,
                "stale": fresh.stale,
                "detail": "send an admin token for the full status",
            }
        )
    served: dict[str, Any] | None = None
    if snapshot is not None:
        served = {
            **snapshot.commit.as_json(),
            "loaded_at": snapshot.loaded_at,
            "apps": len(snapshot.app_ids),
            "schema": snapshot.schema_source,
        }
    status = {
        "ready": snapshot is not None,
        "stale": fresh.stale,
        "stale_reason": fresh.reason,
        "stale_after": settings.stale_after,
        "seconds_since_last_successful_sync": fresh.since_last_success,
        "repo": syncer.mirror.remote_for_display,
        "git_credentials": syncer.mirror.credentials.describe(),
        "ref": settings.ref,
        "path": settings.path,
        "served": served,
        "last_sync": state.last_sync.as_json() if state.last_sync else None,
        "last_successful_fetch_at": state.last_success_at,
        "consecutive_failures": state.consecutive_failures,
        "backoff_seconds": state.backoff_seconds,
        "next_poll_at": state.next_poll_at,
        "watching": state.watching,
        "coalesced_requests": state.coalesced,
        "last_rejected": state.last_rejection.as_json() if state.last_rejection else None,
        "recent_syncs": [record.as_json() for record in reversed(state.recent)],
        "sync_task_error": state.task_error,
        "started_at": app[STARTED_AT],
        "fleet_instances_tracked": len(app[FLEET]),
        "process": process_status(app),
    }
    return web.json_response(status, dumps=lambda data: json.dumps(data, indent=2))


def process_status(app: web.Application) -> dict[str, Any]:
    """Which process of --workers N answered, and (from the leader) its followers."""
    role = app[ROLE]
    status: dict[str, Any] = {
        "worker": role.index,
        "role": "leader" if role.is_leader else "follower",
        "workers": app[SETTINGS].workers,
        "pid": os.getpid(),
    }
    pool = app.get(WORKER_POOL)
    if pool is not None:
        status["followers"] = pool.alive()
    return status


async def handle_fleet(request: web.Request) -> web.Response:
    """Per app: which workers (as this replica saw them) hold which commit."""
    wanted = request.query.get("app")
    if wanted is not None and not APP_ID_RE.match(wanted):
        raise InvalidAppId(f"invalid app {wanted[:64]!r}: app ids are {APP_ID_RULE}")
    snapshot = request.app[SNAPSHOTS].current
    report = request.app[FLEET].report(
        served=snapshot.commit.sha if snapshot else None, app_id=wanted
    )
    return web.json_response(report, dumps=lambda data: json.dumps(data, indent=2))


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", "/config", handle_config)
    app.router.add_route("POST", "/config", handle_config)
    app.router.add_get("/history", handle_history)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/status", handle_status)
    app.router.add_get("/fleet", handle_fleet)
    app.router.add_get("/metrics", handle_metrics)
