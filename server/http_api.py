"""HTTP endpoints: /config for workers; /history, /healthz, /readyz, /status, /fleet and
/metrics for people.

/config reads the current snapshot reference once and answers from it alone,
so every answer comes from exactly one commit. Nothing on this path touches
git or the disk. Request bodies carry the worker's whole environment: they are
parsed, used for rule matching, and dropped; neither they nor env values are
ever logged (only the names of variables a matching rule read), and the fleet
table copies only allow-listed variables out of them.

Two middlewares wrap every handler: ``request_middleware`` (outermost) gives
the request its id and writes its one log line and metrics, whatever happened;
``error_middleware`` turns the exception hierarchy into JSON errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .appkeys import (
    ACCESS_FIELDS,
    APP_LABEL,
    AUTH,
    CREDENTIAL,
    FLEET,
    IN_FLIGHT,
    METRICS,
    REQUEST_ID,
    SETTINGS,
    SNAPSHOTS,
    STARTED_AT,
    SYNCER,
)
from .auth import REALM
from .errors import (
    AccessDenied,
    BodyTooLarge,
    ConfigServerError,
    InvalidAppId,
    InvalidParameter,
    MalformedBody,
    NotReady,
    Unauthorized,
    UnknownApp,
)
from .freshness import freshness
from .logs import REQUEST_ID_HEADER, Fields, log_event, request_id_from
from .metrics import INVALID_APP, app_label
from .repo_format import APP_ID_RE, APP_ID_RULE
from .settings import Settings

log = logging.getLogger("server.access")
error_log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapes arrive every few seconds from every kubelet and Prometheus:
# their lines go to debug so that they do not drown the answers to workers.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Status for an answer cut short because the client went away (nginx's convention).
CLIENT_GONE = 499


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "code": code, "message": message}}, status=status
    )


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, then one log line and the metrics of the request, whatever its outcome."""
    started = time.perf_counter()
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    tracker = request.app[IN_FLIGHT]
    tracker.enter()
    gauge = request.app[METRICS].in_flight if request.path == "/config" else None
    if gauge is not None:
        gauge.inc()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        if tracker.draining:
            response.force_close()  # shutting down: no further requests on this connection
        return response
    except web.HTTPException as exc:  # below 400 only: error_middleware answers the rest
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        if gauge is not None:
            gauge.dec()
        tracker.leave()
        _after_request(request, request_id, status, time.perf_counter() - started)


def _after_request(request: web.Request, request_id: str, status: int, seconds: float) -> None:
    app = request.app
    label = request.get(APP_LABEL)
    if label is not None:
        app[METRICS].observe_config(label, status, seconds)
    if not app[SETTINGS].access_log:
        return
    resource = request.match_info.route.resource
    # The route's pattern, not the raw path: never a query string, bounded in size.
    path = resource.canonical if resource is not None else request.path[:100]
    fields: dict[str, str | int | float | bool | None] = {
        "id": request_id,
        "method": request.method,
        "path": path,
        "status": status,
        "ms": round(seconds * 1000, 3),
        "peer": request.remote,
    }
    credential = request.get(CREDENTIAL)
    if credential is not None:
        fields["credential"] = credential.name  # its name from the auth file, never the token
    fields.update(request.get(ACCESS_FIELDS, {}))
    log_event(log, logging.DEBUG if path in QUIET_PATHS else logging.INFO, "request", fields)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the exception hierarchy (and aiohttp's own HTTP errors) to JSON errors."""
    try:
        return await handler(request)
    except ConfigServerError as exc:
        response = json_error(exc.status, exc.code, exc.message)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = REALM
        return response
    except web.HTTPRequestEntityTooLarge:
        too_large = BodyTooLarge(
            f"request body is larger than the limit of {request.app[SETTINGS].max_body_bytes} "
            "bytes (--max-body-bytes)"
        )
        return json_error(too_large.status, too_large.code, too_large.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_error(exc.status, code, f"{exc.reason}: {request.method} {request.path}")
    except Exception:
        error_log.exception(
            "unexpected error answering %s %s (request id %s)",
            request.method,
            request.path[:100],
            request.get(REQUEST_ID),
        )
        return json_error(500, "internal", "internal server error; see the server log")


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


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON containers nest deeper than ``limit`` (iterative: no recursion to abuse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(current, dict):
            stack.extend(
                (item, depth + 1) for item in current.values() if isinstance(item, (dict, list))
            )
        elif isinstance(current, list):
            stack.extend((item, depth + 1) for item in current if isinstance(item, (dict, list)))
    return False


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


_STR_ONLY = frozenset({str})


def _parse_with_stdlib(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedBody(f"request body is not valid JSON: {reason}") from None


def parse_body(raw: bytes, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(env_variables, current_config) from a request body; empty when there is none.

    orjson parses the client's 5 KB body in a third of the stdlib's time. What it
    refuses (NaN, escaped lone surrogates from a non-UTF-8 environment, integers
    beyond 64 bits, very deep nesting) goes to the stdlib parser as before, so no
    body accepted before is refused now, and errors read as they did.
    """
    if not raw.strip():
        return {}, {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _parse_with_stdlib(raw)
    if not isinstance(body, dict):
        raise MalformedBody(
            f"request body must be a JSON object with current_config and env_variables, "
            f"got a JSON {type(body).__name__}"
        )
    env = body.get("env_variables")
    config = body.get("current_config")
    env = {} if env is None else env
    config = {} if config is None else config
    if not isinstance(env, dict):
        raise MalformedBody("env_variables must be a JSON object")
    if not isinstance(config, dict):
        raise MalformedBody("current_config must be a JSON object")
    if len(env) > settings.max_env_vars:
        raise MalformedBody(
            f"env_variables has {len(env)} entries; the limit is {settings.max_env_vars} "
            "(--max-env-vars)"
        )
    # Both checks run at C speed in the common case: the types of the values as a set,
    # and the nesting walk only when the body holds more brackets than the depth limit
    # (the deepest nesting cannot exceed the number of opening brackets).
    if not _STR_ONLY.issuperset(map(type, env.values())):
        raise MalformedBody("env_variables values must be strings")
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > settings.max_json_depth and _nesting_exceeds(config, settings.max_json_depth):
        raise MalformedBody(
            f"current_config nests deeper than {settings.max_json_depth} levels (--max-json-depth)"
        )
    return env, config


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
    # The body is parsed even when no rule reads it, so a malformed one is never accepted.
    env, config = parse_body(await request.read(), settings)
    try:
        answer = snapshot.answer(app_id, env, config)
    except AccessDenied as denied:
        # The message names variables only, never their values.
        log.warning("config app=%s denied: %s", app_id or "-", denied.message)
        raise
    request.app[FLEET].record(
        app_id=app_id,
        env=env,
        config=config,
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
    }
    return web.json_response(status, dumps=lambda data: json.dumps(data, indent=2))


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
