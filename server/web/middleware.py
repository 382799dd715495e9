"""The one middleware every request passes through.

In order: a request id (an incoming ``X-Request-Id`` kept when it looks like
one), authorization (``authorize.authorize``), the handler, the exception
hierarchy mapped to JSON errors, then one log line and the request's metrics,
whatever the outcome. It is one middleware rather than three because each
middleware layer costs a measurable share of /config throughput.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..base.errors import BodyTooLarge, ConfigServerError, Unauthorized
from ..base.logs import REQUEST_ID_HEADER, log_event, request_id_from
from .auth import REALM
from .authorize import authorize
from .keys import (
    ACCESS_LOG_FIELDS,
    APP_LABEL,
    CREDENTIAL,
    IN_FLIGHT,
    METRICS,
    REQUEST_ID,
    SETTINGS,
)
from .params import json_error

log = logging.getLogger("server.access")
error_log = logging.getLogger("server.http_api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapes arrive every few seconds from every kubelet and Prometheus:
# their lines go to debug so that they do not drown the answers to workers.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Status for an answer cut short because the client went away (nginx's convention).
CLIENT_GONE = 499


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the JSON error for what it raised."""
    try:
        authorize(request)
        return await handler(request)
    except ConfigServerError as exc:
        response = json_error(exc.status, exc.code, exc.message, exc.details())
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
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away while its request was read (a worker killed mid-upload):
        # nothing to answer and nothing wrong here. Counted and logged as 499.
        response = json_error(CLIENT_GONE, "client_closed_request", "the client went away")
        response.force_close()
        return response
    except Exception:
        error_log.exception(
            "unexpected error answering %s %s (request id %s)",
            request.method,
            request.path[:100],
            request.get(REQUEST_ID),
        )
        return json_error(500, "internal", "internal server error; see the server log")


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        response = await _answer(request, handler)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        if tracker.draining:
            response.force_close()  # shutting down: no further requests on this connection
        elif status >= 400 and request.body_exists and not request.content.at_eof():
            # Refused before its body was read: close rather than read the rest to keep
            # the connection (an unauthenticated sender's bytes are never taken in).
            response.force_close()
        return response
    except web.HTTPException as exc:  # redirects and the like (below 400)
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
    fields.update(request.get(ACCESS_LOG_FIELDS, {}))
    log_event(log, logging.DEBUG if path in QUIET_PATHS else logging.INFO, "request", fields)
