"""Authorization: which endpoints need which credential (called by ``front_door``).

With authentication off (no ``--auth-file``) everything is open, except that
/admin/* is accepted from loopback only. With it on:

- /config needs a client or admin credential whose app globs allow the appId;
- /admin/*, /fleet, /history and /dashboard need an admin credential;
- /status answers a summary, and the full status to admins;
- /metrics is open, or admin-only with ``--protect-metrics``;
- /healthz, /readyz stay open; /webhook* checks its own signature.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .appkeys import AUTH, CREDENTIAL
from .auth import authenticate, presented_token, require_admin
from .errors import Forbidden
from .http_api import parse_app_id

log = logging.getLogger(__name__)

ADMIN_PREFIXES = ("/admin/", "/fleet", "/history", "/dashboard")


def authorize(request: web.Request) -> None:
    """Raise Unauthorized/Forbidden unless the request may reach its endpoint."""
    policy = request.app[AUTH]
    auth = policy.config
    if auth is None:
        return
    path = request.path
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
