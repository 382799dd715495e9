"""Endpoints that make the server sync now: push webhooks and ``POST /admin/refresh``."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from .appkeys import AUTH, SNAPSHOTS, SYNCER, WEBHOOKS
from .errors import Forbidden, MalformedBody
from .webhooks import (
    MAX_WEBHOOK_BYTES,
    PROVIDERS,
    check_and_parse,
    delivery_id,
    detect_provider,
    read_limited,
)

log = logging.getLogger(__name__)


async def handle_webhook(request: web.Request) -> web.Response:
    provider = request.match_info.get("provider") or detect_provider(request.headers)
    if provider is None:
        raise MalformedBody(
            "unrecognised webhook: expected an X-GitHub-Event, X-Gitlab-Event or "
            "X-Gitea-Event header (or post to /webhook/<provider>)"
        )
    if provider not in PROVIDERS:
        raise web.HTTPNotFound()
    receiver = request.app[WEBHOOKS]
    body = await read_limited(request, MAX_WEBHOOK_BYTES)
    event, payload = check_and_parse(receiver, provider, request.headers, body)
    if not receiver.first_delivery(delivery_id(provider, request.headers)):
        return web.json_response({"accepted": False, "reason": "delivery already received"})
    if event == "ping":
        return web.json_response({"accepted": False, "reason": "ping", "pong": True})
    ref = payload.get("ref")
    if isinstance(ref, str) and ref in receiver.wanted_refs():
        request.app[SYNCER].request_sync("webhook")
        log.info("webhook (%s): push to %s, sync queued", provider, ref)
        return web.json_response({"accepted": True, "sync": "queued", "ref": ref}, status=202)
    log.info("webhook (%s): %s event for %s ignored", provider, event or "unknown", ref)
    return web.json_response(
        {
            "accepted": False,
            "reason": f"not a push to the served ref ({receiver.served_ref})",
            "ref": ref if isinstance(ref, str) else None,
        },
        status=202,
    )


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def handle_refresh(request: web.Request) -> web.Response:
    """Fetch now and answer with the commit served afterwards."""
    # With authentication on, the middleware has already required an admin credential.
    if not request.app[AUTH].enabled and not _is_loopback(request.remote):
        raise Forbidden(
            "/admin/refresh is only allowed from the server's own host (loopback) while "
            "authentication is off; set --auth-file to allow admins from anywhere"
        )
    record = await request.app[SYNCER].refresh("manual")
    snapshot = request.app[SNAPSHOTS].current
    return web.json_response(
        {"sync": record.as_json(), "served": snapshot.commit.sha if snapshot else None}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/webhook", handle_webhook)
    app.router.add_post("/webhook/{provider}", handle_webhook)
    app.router.add_post("/admin/refresh", handle_refresh)
