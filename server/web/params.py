"""What handlers share to read a request and to answer an error: parameters, JSON errors,
and the HTML error page of the dashboard's routes.

The middleware, authorization and every handler use these, so no part of the
web layer imports a handler module for its helpers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping
from http import HTTPStatus
from typing import TypeVar

import aiohttp_jinja2
from aiohttp import web

from ..base.errors import BodyTimeout, InvalidAppId, InvalidParameter
from ..config.names import check_app_id

T = TypeVar("T")

HISTORY_DEFAULT_LIMIT = 20
HISTORY_MAX_LIMIT = 200


def json_error(
    status: int, code: str, message: str, details: Mapping[str, object] | None = None
) -> web.Response:
    error = {"status": status, "code": code, "message": message, **(details or {})}
    return web.json_response({"error": error}, status=status)


def is_page(path: str) -> bool:
    """Whether ``path`` is one a person opens in a browser (the dashboard): its errors are
    pages; everything else is an API, whose errors stay JSON."""
    return path in ("/", "/dashboard") or path.startswith("/dashboard/")


def error_page(
    request: web.Request, status: int, code: str, message: str, retry_after: str | None = None
) -> web.Response:
    """An error as a dashboard page (the same status, code and message as the JSON one)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:  # 499: nginx's, not the standard's
        reason = ""
    context = {
        "page": "",
        "status": status,
        "reason": reason,
        "code": code,
        "message": message,
        "retry_after": retry_after,
    }
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


def retry_after(poll_interval: float) -> str:
    """Retry-After for a 503, in seconds: what ends it (a first sync, a busy moment) comes
    within a poll; bounded to 1-60 so no client spins, nor waits out --poll-interval 3600."""
    return str(min(60, max(1, math.ceil(poll_interval))))


def parse_app_id(request: web.Request, name: str = "appId") -> str | None:
    """The app id in query parameter ``name``; None when absent or empty; 400 when bad."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidAppId(f"{name} is given more than once")
    if not values or values[0] == "":
        return None
    return check_app_id(values[0], name)


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


async def body_within(seconds: float, reading: Awaitable[T]) -> T:
    """The body, read within ``seconds`` (--body-timeout); a client too slow gets a 408."""
    try:
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {seconds:g} s (--body-timeout)"
        ) from None


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The whole body within ``seconds``; no timer when it has all arrived (the common case)."""
    if request.content.is_eof():
        return await request.read()
    return await body_within(seconds, request.read())
