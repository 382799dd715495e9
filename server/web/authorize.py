"""Authorization: which endpoints need which credential (called by the middleware).

With authentication off (no ``--auth-file``) everything is open, except that
/admin/* is accepted from loopback only. With it on:

- /config needs a client or admin credential whose app globs allow the appId;
- /admin/*, /fleet, /history and /dashboard need an admin credential;
- /status answers a summary, and the full status to admins;
- /metrics is open, or admin-only with ``--protect-metrics``;
- /healthz, /readyz stay open; /webhook* checks its own signature.
"""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from ..base.errors import Forbidden
from .auth import authenticate, presented_token, require_admin
from .keys import AUTH, CREDENTIAL
from .params import parse_app_id

log = logging.getLogger("server.access_control")

ADMIN_PREFIXES = ("/admin/", "/fleet", "/history", "/dashboard")


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def authorize(request: web.Request) -> None:
    """Raise Unauthorized/Forbidden unless the request may reach its endpoint."""
    policy = request.app[AUTH].value  # once: a reload swaps the whole policy
    auth = policy.config
    path = request.path
    if auth is None:
        routed = request.match_info.http_exception is None  # a 404/405 stays one
        if routed and path.startswith("/admin/") and not is_loopback(request.remote):
            raise Forbidden(
                f"{path[:100]} is only allowed from the server's own host (loopback) while "
                "authentication is off; set --auth-file to allow admins from anywhere"
            )
        return
    if path == "/config":
        credential = authenticate(auth, request.headers, request.query)
        app_id = parse_app_id(request)
        if not credential.may_read(app_id):
            log.warning("credential %s refused for app %s", credential.name, app_id or "-")
            raise Forbidden(
                f"credential '{credential.name}' may not read app '{app_id or '(none)'}'"
            )
        request[CREDENTIAL] = credential
    elif path.startswith(ADMIN_PREFIXES) or (path == "/metrics" and policy.protect_metrics):
        request[CREDENTIAL] = require_admin(auth, request.headers, request.query)
    elif path == "/status" and presented_token(request.headers, request.query) is not None:
        credential = authenticate(auth, request.headers, request.query)
        if credential.admin:
            request[CREDENTIAL] = credential
