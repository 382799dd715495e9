"""The one middleware every request passes through.

In order: a request id (an incoming ``X-Request-Id`` kept when it looks like
one), authorization (``authorize.authorize``), the handler, the exception
hierarchy mapped to JSON errors (HTML pages on the dashboard's routes; aiohttp's
own headers, such as a 405's ``Allow``, kept; ``Retry-After`` on every 503),
then one log line and the request's metrics, whatever the outcome. It is one
middleware rather than three because each middleware layer costs a measurable
share of /config throughput.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

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
from .params import error_page, is_page, json_error, retry_after

log = logging.getLogger("server.access")
error_log = logging.getLogger("server.http_api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapes arrive every few seconds from every kubelet and Prometheus:
# their lines go to debug so that they do not drown the answers to workers.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Status for an answer cut short because the client went away (nginx's convention).
CLIENT_GONE = 499


def _error(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, object] | None = None,
) -> web.Response:
    """The error answer: a page for a person at the dashboard, JSON for every API."""
    # Every 503 says when to come back (clients and browsers honour Retry-After).
    wait = retry_after(request.app[SETTINGS].poll_interval) if status == 503 else None
    try:
        page = error_page(request, status, code, message, wait) if is_page(request.path) else None
    except Exception:  # a page that cannot render must not hide the error: JSON then
        error_log.exception("the error page for %s could not be rendered", request.path[:100])
        page = None
    response = page if page is not None else json_error(status, code, message, details)
    if wait is not None:
        response.headers[hdrs.RETRY_AFTER] = wait
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the error answer for what it raised."""
    try:
        authorize(request)
        return await handler(request)
    except ConfigServerError as exc:
        response = _error(request, exc.status, exc.code, exc.message, exc.details())
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = REALM
        return response
    except web.HTTPRequestEntityTooLarge:
        too_large = BodyTooLarge(
            f"request body is larger than the limit of {request.app[SETTINGS].max_body_bytes} "
            "bytes (--max-body-bytes)"
        )
        return _error(request, too_large.status, too_large.code, too_large.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = _error(
            request, exc.status, code, f"{exc.reason}: {request.method} {request.path}"
        )
        # aiohttp's headers say what its status means (a 405's Allow): kept, but not
        # those describing its plain-text body, which the answer above replaced.
        for name, value in exc.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response
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
        return _error(request, 500, "internal", "internal server error; see the server log")


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
        if status == 503 and hdrs.RETRY_AFTER not in response.headers and not response.prepared:
            # A handler's own 503 (/readyz) says when to come back too.
            response.headers[hdrs.RETRY_AFTER] = retry_after(request.app[SETTINGS].poll_interval)
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
