"""A read-only dashboard for people on call: what is live, who has it, what changed.

Server-rendered HTML (aiohttp-jinja2), no JavaScript and nothing fetched from
elsewhere, so it works offline and behind the same admin token as the other
operator endpoints. Every page is a plain GET whose URL carries the app, the
commit and the chosen env/config, so a link can be shared. Values are shown as
the repository wrote them: ``${secret:NAME}`` references are never resolved here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..base.assignments import parse_assignments
from ..base.errors import AssignmentProblem, MalformedBody, NotReady
from ..config.effective import answer_items
from ..config.explain import rule_outcomes
from ..config.names import is_app_id
from ..config.snapshot import Snapshot
from ..config.views import AppDiff, diff_config_sets
from .keys import FLEET, SHARED, SNAPSHOTS, VIEWER
from .operator_api import current_status
from .params import parse_app_id


def _age(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _pairs(lines: str, *, typed: bool) -> dict[str, Any]:
    """``K=V`` per line into a mapping; config values typed as YAML."""
    try:
        return parse_assignments(lines.splitlines(), typed=typed)
    except AssignmentProblem as problem:
        raise MalformedBody(f"expected KEY=VALUE, got {problem.line!r}") from None


def _snapshot(request: web.Request) -> Snapshot:
    snapshot = request.app[SNAPSHOTS].current
    if snapshot is None:
        raise NotReady("no validated commit loaded yet")
    return snapshot


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    shared = request.app.get(SHARED)
    return {
        "page": "overview",
        "view": current_status(request.app),
        # --redis: the replicas and whether Redis answers (shared.replicas).
        "shared": shared.status_json(request.app[SNAPSHOTS].served_sha) if shared else None,
    }


@aiohttp_jinja2.template("apps.html")
async def apps(request: web.Request) -> dict[str, Any]:
    snapshot = _snapshot(request)
    query = request.query.get("q", "").strip()
    matching = [app for app in snapshot.app_ids if query.lower() in app.lower()]
    rows = []
    for app_id in matching:
        plan = snapshot.plan(app_id)
        rows.append(
            {
                "app_id": app_id,
                "settings": sum(len(f.settings) for f in plan.files),
                "rules": sum(len(f.rules) for f in plan.files),
                "access": bool(plan.access),
            }
        )
    return {"page": "apps", "snapshot": snapshot, "query": query, "rows": rows}


async def _snapshot_for(request: web.Request) -> Snapshot:
    """The served snapshot, or the one of ``?commit=`` (for links to a past state)."""
    served = _snapshot(request)
    commit = request.query.get("commit", "")
    if not commit or served.commit.sha.startswith(commit):
        return served
    return await request.app[VIEWER].snapshot_at(commit)


def _diff_rows(diff: AppDiff) -> dict[str, Any]:
    def cell(setting: Any) -> str:
        if setting is None:
            return "(not set)"
        flag = "override" if setting.override else "default"
        return f"{json.dumps(setting.value, sort_keys=True)} ({flag})"

    return {
        "status": diff.status,
        "keys": [
            {
                "key": change.key,
                "change": change.change + (", override flipped" if change.override_flipped else ""),
                "before": cell(change.before),
                "after": cell(change.after),
            }
            for change in diff.keys
        ],
        "rules": [
            {
                "name": change.name,
                "change": change.change,
                "before": change.before.describe() if change.before else "",
                "after": change.after.describe() if change.after else "",
            }
            for change in diff.rules
        ],
    }


@aiohttp_jinja2.template("app.html")
async def app_detail(request: web.Request) -> dict[str, Any]:
    app_id = request.match_info["app_id"]
    if not is_app_id(app_id):
        raise web.HTTPNotFound()
    served = _snapshot(request)
    snapshot = await _snapshot_for(request)
    viewer = request.app[VIEWER]
    history = await viewer.history(app_id, served.commit.sha, 20)
    diff = None
    diff_from, diff_to = request.query.get("from", ""), request.query.get("to", "")
    if diff_from and diff_to:
        before = await viewer.snapshot_at(diff_from)
        after = await viewer.snapshot_at(diff_to)
        diff = _diff_rows(diff_config_sets(before.config_set, after.config_set, app_id)[0])
    env_text = request.query.get("env", "")
    config_text = request.query.get("config", "")
    env = _pairs(env_text, typed=False)
    config = _pairs(config_text, typed=True)
    plan = snapshot.plan(app_id)
    effective, _ = snapshot.effective(app_id, env, config)
    # Without secrets: references stay as written.
    items = answer_items(effective)
    rows = [
        {**item, "origins": [str(origin) for origin in effective[item["key"]].origins]}
        for item in items
    ]
    return {
        "page": "apps",
        "snapshot": snapshot,
        "served": served,
        "history": history,
        "diff": diff,
        "diff_from": diff_from,
        "diff_to": diff_to,
        "app_id": app_id,
        "known": plan.known,
        "env_text": env_text,
        "config_text": config_text,
        "rows": rows,
        "rules": rule_outcomes(plan, app_id, env, config),
        "access_failed": plan.failed_access(env, config),
    }


@aiohttp_jinja2.template("fleet.html")
async def fleet_view(request: web.Request) -> dict[str, Any]:
    wanted = parse_app_id(request, "app")
    served = request.app[SNAPSHOTS].served_sha
    fleet = request.app[FLEET]
    apps: dict[str, list[Any]] = {}
    for sighting in fleet.sightings(wanted):
        apps.setdefault(sighting.app_id or "(no appId)", []).append(sighting)
    per_commit: dict[str, int] = {}
    for sighting in fleet.sightings(wanted):
        per_commit[sighting.commit] = per_commit.get(sighting.commit, 0) + 1
    bars = sorted(per_commit.items(), key=lambda item: (item[0] != served, -item[1]))
    return {
        "page": "fleet",
        "served": served,
        "wanted": wanted or "",
        "apps": dict(sorted(apps.items())),
        "bars": bars,
        "most": max(per_commit.values(), default=1),
        "tracked": len(fleet),
        "capacity": fleet.capacity,
        "env_names": fleet.env_allow_list,
    }


def setup_dashboard(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("server.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        # Text from git (file names) may hold undecodable bytes: never let one break a page.
        finalize=_printable,
        filters={"age": _age, "clock": _clock},
    )
    pages = {
        "/dashboard": overview,
        "/dashboard/apps": apps,
        "/dashboard/apps/{app_id}": app_detail,
        "/dashboard/fleet": fleet_view,
    }
    for path, handler in pages.items():
        app.router.add_get(path, handler)  # add_get: HEAD too
        app.router.add_get(path + "/", without_slash)
    # A person opening the server's address expects the dashboard.
    app.router.add_get("/", to_dashboard)


async def to_dashboard(request: web.Request) -> web.Response:
    """``/``: the dashboard (302: the root may serve something else one day)."""
    return web.Response(status=302, headers={"Location": "/dashboard"})


async def without_slash(request: web.Request) -> web.Response:
    """A dashboard page asked for with a trailing slash: the same page (308), query kept."""
    location = request.rel_url.raw_path.rstrip("/")  # as sent: an app id's escapes kept
    if request.rel_url.raw_query_string:
        location += "?" + request.rel_url.raw_query_string
    return web.Response(status=308, headers={"Location": location})
