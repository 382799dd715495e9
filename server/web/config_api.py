"""``/config``: the endpoint LMCache workers call at startup.

It reads the current snapshot reference once and answers from it alone, so
every answer comes from exactly one commit; nothing on this path touches git
or the disk. Request bodies carry the worker's whole environment: they are
parsed, used for rule matching, and dropped. Neither they nor env values are
ever logged (only the names of variables a matching rule read), and the fleet
table copies only allow-listed variables out of them.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..base.errors import AccessDenied, NotReady, UnknownApp
from ..base.logs import Fields
from ..config.hints import app_file
from ..config.snapshot import Snapshot
from ..ops.metrics import INVALID_APP, app_label
from .keys import ACCESS_LOG_FIELDS, APP_LABEL, BODY_LIMITS, FLEET, METRICS, SETTINGS, SNAPSHOTS
from .params import parse_app_id, read_body
from .request_body import parse_body

log = logging.getLogger("server.access")


async def handle_config(request: web.Request) -> web.Response:
    request[APP_LABEL] = INVALID_APP
    app_id = parse_app_id(request)
    snapshot = request.app[SNAPSHOTS].current
    request[APP_LABEL] = app_label(snapshot, app_id)
    if snapshot is None:
        raise NotReady("no validated commit loaded yet; see /status")
    settings = request.app[SETTINGS]
    plan = snapshot.plan(app_id)
    if app_id and not plan.known:
        _unknown_app(request, snapshot, app_id, refused=settings.strict_apps)
    if settings.strict_apps and not plan.known:
        raise UnknownApp(
            f"no apps/{app_id}.yaml in commit {snapshot.commit.sha[:12]}"
            if app_id
            else "appId is required (--strict-apps)"
        )
    # The body is checked whole even when no rule reads it, so a malformed one is never
    # accepted; current_config is built only when a rule or access condition reads it.
    answer = snapshot.fixed_answer(app_id)
    raw = await read_body(request, settings.body_timeout)
    body = parse_body(raw, request.app[BODY_LIMITS], need_config=answer is None)
    if answer is None:
        try:
            answer = snapshot.answer(app_id, body.env, body.config())
        except AccessDenied as denied:
            # The message names variables only, never their values.
            log.warning("config app=%s denied: %s", app_id or "-", denied.message)
            raise
    if request.method != "HEAD":  # a HEAD is a check (a probe, curl -I), not a worker starting
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
        request[ACCESS_LOG_FIELDS] = access
    return web.Response(
        body=answer.body,
        content_type="application/json",
        headers={"X-Config-Version": snapshot.commit.sha},
    )


def _unknown_app(request: web.Request, snapshot: Snapshot, app_id: str, *, refused: bool) -> None:
    """Counted every time; a warning once per app and commit, whatever the access log says
    (a misnamed app file would otherwise serve the global layer without a word)."""
    request.app[METRICS].count_unknown_app(app_id)
    if not snapshot.first_sighting_of_unknown(app_id):
        return
    near = snapshot.nearest_app(app_id)
    log.warning(
        "unknown app %s at commit %s: no apps/%s.yaml, %s%s",
        app_id,
        snapshot.commit.sha[:12],
        app_id,
        "refused (--strict-apps)" if refused else "serving the global layer only",
        f"; did you mean {app_file(near)}?" if near else "",
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/config", handle_config)  # add_get: HEAD too, answered like GET
    app.router.add_route("POST", "/config", handle_config)
