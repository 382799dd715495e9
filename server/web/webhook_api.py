"""``POST /webhook`` and ``/webhook/<provider>``: a push at the git host asks for a sync now."""

from __future__ import annotations

import logging

from aiohttp import web

from ..base.errors import (
    BodyTimeout,
    BodyTooLarge,
    Busy,
    MalformedBody,
    Unauthorized,
    WebhookDisabled,
)
from ..ops.metrics import UNKNOWN_PROVIDER
from ..sync.state import SyncTrigger
from .keys import METRICS, SETTINGS, SHARED, SYNC, WEBHOOKS
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


# A refused delivery's outcome label, by the error that refused it (first match wins).
_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (WebhookDisabled, "disabled"),
    (Unauthorized, "bad_signature"),
    (BodyTooLarge, "too_large"),
    (BodyTimeout, "body_timeout"),
    (Busy, "busy"),
    (MalformedBody, "malformed"),
    (web.HTTPNotFound, "unknown_provider"),
)


async def handle_webhook(request: web.Request) -> web.Response:
    """Every delivery counted once, by provider and outcome (``lmcache_config_webhooks_total``)."""
    provider = request.match_info.get("provider") or detect_provider(request.headers)
    label = provider if provider in PROVIDERS else UNKNOWN_PROVIDER
    metrics = request.app[METRICS]
    try:
        outcome, response = await _deliver(request, provider)
    except Exception as exc:
        refused = next((name for kind, name in _REFUSALS if isinstance(exc, kind)), "error")
        metrics.count_webhook(label, refused)
        raise
    metrics.count_webhook(label, outcome)
    return response


async def _deliver(request: web.Request, provider: str | None) -> tuple[str, web.Response]:
    """(outcome, response) of one delivery; raises what refuses it."""
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
        return "replay", web.json_response(
            {"accepted": False, "reason": "delivery already received"}
        )
    if event == "ping":
        return "ping", web.json_response({"accepted": False, "reason": "ping", "pong": True})
    ref = payload.get("ref")
    if isinstance(ref, str) and ref in receiver.wanted_refs():
        request.app[SYNC].request_sync(SyncTrigger.WEBHOOK)
        log.info("webhook (%s): push to %s, sync queued", provider, ref)
        response = web.json_response({"accepted": True, "sync": "queued", "ref": ref}, status=202)
        return "accepted", response
    log.info("webhook (%s): %s event for %s ignored", provider, event or "unknown", ref)
    return "ignored_ref", web.json_response(
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
