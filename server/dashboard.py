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
import yaml
from aiohttp import web

from .appkeys import FLEET, SETTINGS, SNAPSHOTS, STARTED_AT, SYNCER
from .config_diff import AppDiff, diff_config_sets
from .errors import InvalidAppId, MalformedBody, NotReady
from .freshness import freshness
from .repo_format import APP_ID_RE
from .snapshot import Snapshot, answer_items


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
    """``K=V`` per line (or repeated query values) into a mapping; config values typed as YAML."""
    pairs: dict[str, Any] = {}
    for raw in lines.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            raise MalformedBody(f"expected KEY=VALUE, got {line!r}")
        if typed:
            try:
                pairs[key.strip()] = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                pairs[key.strip()] = value
        else:
            pairs[key.strip()] = value
    return pairs


def _snapshot(request: web.Request) -> Snapshot:
    snapshot = request.app[SNAPSHOTS].current
    if snapshot is None:
        raise NotReady("no validated commit loaded yet")
    return snapshot


@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, Any]:
    syncer = request.app[SYNCER]
    state = syncer.state
    snapshot = request.app[SNAPSHOTS].current
    settings = request.app[SETTINGS]
    fleet = request.app[FLEET]
    served = snapshot.commit.sha if snapshot else None
    behind = sum(1 for sighting in fleet.sightings() if sighting.commit != served)
    return {
        "page": "overview",
        "snapshot": snapshot,
        "settings": settings,
        "fresh": freshness(
            state,
            started_at=request.app[STARTED_AT],
            stale_after=settings.stale_after,
            now=time.time(),
        ),
        "instances": len(fleet),
        "behind": behind,
        "repo": syncer.mirror.remote_for_display,
        "state": state,
        "recent": list(reversed(state.recent)),
        "rejection": state.last_rejection,
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
    return await request.app[SYNCER].snapshot_at(commit)


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
    if not APP_ID_RE.match(app_id):
        raise web.HTTPNotFound()
    served = _snapshot(request)
    snapshot = await _snapshot_for(request)
    syncer = request.app[SYNCER]
    history = await syncer.history(app_id, served.commit.sha, 20)
    diff = None
    diff_from, diff_to = request.query.get("from", ""), request.query.get("to", "")
    if diff_from and diff_to:
        before = await syncer.snapshot_at(diff_from)
        after = await syncer.snapshot_at(diff_to)
        diff = _diff_rows(diff_config_sets(before.config_set, after.config_set, app_id)[0])
    env_text = request.query.get("env", "")
    config_text = request.query.get("config", "")
    env = _pairs(env_text, typed=False)
    config = _pairs(config_text, typed=True)
    plan = snapshot.plan(app_id)
    effective, matched = snapshot.effective(app_id, env, config)
    # Without secrets: references stay as written.
    items = answer_items(effective)
    rows = [
        {**item, "origins": [str(origin) for origin in effective[item["key"]].origins]}
        for item in items
    ]
    rules = [
        {
            "name": rule.name,
            "origin": str(rule.origin),
            "conditions": [f"{c.source}.{c.name} = {c.pattern!r}" for c in rule.conditions],
            "matched": rule in matched,
            "settings": [f"{s.key}: {s.value!r}" for s in rule.settings],
        }
        for config_file in plan.files
        for rule in config_file.rules
    ]
    access_failed = [c.name for c in plan.access if not c.matches(env, config)]
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
        "rules": rules,
        "access_failed": access_failed,
    }


@aiohttp_jinja2.template("fleet.html")
async def fleet_view(request: web.Request) -> dict[str, Any]:
    wanted = request.query.get("app") or None
    if wanted is not None and not APP_ID_RE.match(wanted):
        raise InvalidAppId(f"invalid app {wanted[:64]!r}")
    snapshot = request.app[SNAPSHOTS].current
    served = snapshot.commit.sha if snapshot else None
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
        loader=jinja2.PackageLoader("server", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        # Text from git (file names) may hold undecodable bytes: never let one break a page.
        finalize=_printable,
        filters={"age": _age, "clock": _clock},
    )
    app.router.add_get("/dashboard", overview)
    app.router.add_get("/dashboard/apps", apps)
    app.router.add_get("/dashboard/apps/{app_id}", app_detail)
    app.router.add_get("/dashboard/fleet", fleet_view)
