"""``POST /webhook`` and ``/webhook/<provider>``: a push at the git host asks for a sync now."""

from __future__ import annotations

import logging

from aiohttp import web

from ..base.errors import MalformedBody
from ..sync.state import SyncTrigger
from .keys import SETTINGS, SHARED, SYNC, WEBHOOKS
from .params import body_within
from .webhooks import (
    MAX_WEBHOOK_BYTES,
    PROVIDERS,
    check_and_parse,
    delivery_id,
    detect_provider,
    read_limited,
)

log = logging.getLogger("server.sync_api")


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
    secret = receiver.check_before_body(provider, request.headers, request.content_length)
    body = await body_within(
        request.app[SETTINGS].body_timeout, read_limited(request, receiver, MAX_WEBHOOK_BYTES)
    )
    event, payload = check_and_parse(secret, provider, request.headers, body)
    delivery = delivery_id(provider, request.headers)
    first = receiver.first_delivery(delivery)
    shared = request.app.get(SHARED)
    if first and shared is not None:
        # --redis: a delivery another replica took is a replay too (None: Redis cannot say).
        first = await shared.first_delivery(delivery) is not False
    if not first:
        return web.json_response({"accepted": False, "reason": "delivery already received"})
    if event == "ping":
        return web.json_response({"accepted": False, "reason": "ping", "pong": True})
    ref = payload.get("ref")
    if isinstance(ref, str) and ref in receiver.wanted_refs():
        request.app[SYNC].request_sync(SyncTrigger.WEBHOOK)
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


def add_routes(app: web.Application) -> None:
    app.router.add_post("/webhook", handle_webhook)
    app.router.add_post("/webhook/{provider}", handle_webhook)
