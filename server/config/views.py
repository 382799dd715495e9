"""What a change does to each app, without a worker: the view behind ``diff`` and /history.

An app's *view* is what no request can change: the merged own sections of its
layers (global.yaml, the app file, their fragments) and its rules as written.
Rules are not evaluated (their conditions depend on each worker), so a diff
shows them as rules: added, removed or changed. Line numbers are not part of a
view's content, so moving a key between lines or into a fragment is no change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .effective import EXTRA_CONFIG, EffectiveSetting, merge
from .model import ConfigSet, Rule

NO_APP_FILE = "(apps without a file)"


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleView:
    """One rule as written, with where it is; ``content`` leaves the location out."""

    rule: Rule
    file: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.file, self.rule.name)

    @property
    def content(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "when": [
                {"source": c.source, "name": c.name, "pattern": c.pattern} for c in rule.conditions
            ],
            "rollout": (
                {"percent": rule.rollout.percent, "by": rule.rollout.by} if rule.rollout else None
            ),
            "sets": [
                {"key": s.key, "value": s.value, "override": s.override} for s in rule.settings
            ],
        }

    def describe(self) -> str:
        rule = self.rule
        conditions = [f"{c.source} {c.name} = {_shown(c.pattern)}" for c in rule.conditions]
        if rule.rollout is not None:
            conditions.append(rule.rollout.describe())
        sets = [
            f"{'override' if s.override else 'default'} {s.key} = {_shown(s.value)}"
            for s in rule.settings
        ]
        return f"when {' and '.join(conditions)}: {', '.join(sets)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.rule.name,
            "file": self.file,
            "line": self.rule.origin.line,
            **self.content,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppView:
    app_id: str | None
    known: bool
    layers: tuple[str, ...]  # display paths, in the order they apply
    settings: Mapping[str, EffectiveSetting]
    rules: tuple[RuleView, ...]

    def content(self) -> dict[str, Any]:
        return {
            "known": self.known,
            "settings": {key: [s.value, s.override] for key, s in sorted(self.settings.items())},
            "rules": [[*view.key, view.content] for view in self.rules],
        }

    def fingerprint(self) -> str:
        """A digest of everything a worker's answer can depend on (locations excluded)."""
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def app_view(config_set: ConfigSet, app_id: str | None) -> AppView:
    layers = config_set.layers(app_id)
    return AppView(
        app_id=app_id,
        known=app_id is not None and app_id in config_set.apps,
        layers=tuple(f.path for f in layers),
        settings=merge(f.settings for f in layers),
        rules=tuple(RuleView(rule=rule, file=f.path) for f in layers for rule in f.rules),
    )


def app_views(config_set: ConfigSet) -> dict[str | None, AppView]:
    """Every app's view, plus the view of workers whose app has no file (key None)."""
    views: dict[str | None, AppView] = {None: app_view(config_set, None)}
    for app_id in sorted(config_set.apps):
        views[app_id] = app_view(config_set, app_id)
    return views


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyChange:
    key: str
    change: str  # added, removed, changed
    before: EffectiveSetting | None
    after: EffectiveSetting | None

    @property
    def override_flipped(self) -> bool:
        return bool(self.before and self.after and self.before.override != self.after.override)

    def as_json(self) -> dict[str, Any]:
        def side(setting: EffectiveSetting | None) -> dict[str, Any] | None:
            if setting is None:
                return None
            return {
                "value": setting.value,
                "override": setting.override,
                "from": [str(origin) for origin in setting.origins],
            }

        return {
            "key": self.key,
            "change": self.change,
            "override_flipped": self.override_flipped,
            "before": side(self.before),
            "after": side(self.after),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleChange:
    change: str  # added, removed, changed
    before: RuleView | None
    after: RuleView | None

    @property
    def name(self) -> str:
        view = self.after or self.before
        assert view is not None
        return view.rule.name

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "change": self.change,
            "before": self.before.as_json() if self.before else None,
            "after": self.after.as_json() if self.after else None,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppDiff:
    app_id: str | None
    status: str  # added, removed, changed, unchanged
    layers_before: tuple[str, ...]
    layers_after: tuple[str, ...]
    keys: tuple[KeyChange, ...]
    rules: tuple[RuleChange, ...]

    @property
    def label(self) -> str:
        return self.app_id if self.app_id is not None else NO_APP_FILE

    def as_json(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "status": self.status,
            "layers_before": list(self.layers_before),
            "layers_after": list(self.layers_after),
            "keys": [change.as_json() for change in self.keys],
            "rules": [change.as_json() for change in self.rules],
        }


def _same(a: EffectiveSetting, b: EffectiveSetting) -> bool:
    return bool(a.value == b.value and a.override == b.override)


def diff_views(before: AppView, after: AppView) -> AppDiff:
    keys: list[KeyChange] = []
    for key in sorted({*before.settings, *after.settings}):
        old, new = before.settings.get(key), after.settings.get(key)
        if old is None:
            keys.append(KeyChange(key=key, change="added", before=None, after=new))
        elif new is None:
            keys.append(KeyChange(key=key, change="removed", before=old, after=None))
        elif not _same(old, new):
            keys.append(KeyChange(key=key, change="changed", before=old, after=new))
    old_rules = {view.key: view for view in before.rules}
    new_rules = {view.key: view for view in after.rules}
    rules: list[RuleChange] = []
    for view in before.rules:
        if view.key not in new_rules:
            rules.append(RuleChange(change="removed", before=view, after=None))
    for view in after.rules:
        old_view = old_rules.get(view.key)
        if old_view is None:
            rules.append(RuleChange(change="added", before=None, after=view))
        elif old_view.content != view.content:
            rules.append(RuleChange(change="changed", before=old_view, after=view))
    if before.known != after.known:
        status = "added" if after.known else "removed"
    elif keys or rules or before.layers != after.layers:
        status = "changed"
    else:
        status = "unchanged"
    return AppDiff(
        app_id=after.app_id,
        status=status,
        layers_before=before.layers,
        layers_after=after.layers,
        keys=tuple(keys),
        rules=tuple(rules),
    )


def diff_config_sets(
    before: ConfigSet, after: ConfigSet, app_id: str | None = None
) -> list[AppDiff]:
    """One AppDiff per app (every app of either side, or just ``app_id``)."""
    if app_id is not None:
        return [diff_views(app_view(before, app_id), app_view(after, app_id))]
    ids: list[str | None] = [None, *sorted({*before.apps, *after.apps})]
    return [diff_views(app_view(before, each), app_view(after, each)) for each in ids]


def _cell(setting: EffectiveSetting | None) -> str:
    if setting is None:
        return "(not set)"
    value = setting.value
    if setting.key == EXTRA_CONFIG and isinstance(value, dict):
        value = dict(sorted(value.items()))
    flag = "override" if setting.override else "default"
    return f"`{_shown(value)}` ({flag})".replace("|", "\\|")


def _origin(setting: EffectiveSetting | None) -> str:
    return str(setting.origins[-1]) if setting else ""


def diff_markdown(diffs: list[AppDiff], *, title: str) -> str:
    """A PR comment: one section per changed app, unchanged apps named in one line."""
    lines = [f"### {title}", ""]
    changed = [d for d in diffs if d.status != "unchanged"]
    if not changed:
        lines.append("No effective change for any app.")
    for diff in changed:
        lines.append(f"#### `{diff.label}`: {diff.status}")
        lines.append("")
        if diff.layers_before != diff.layers_after:
            lines.append(
                f"Files applied: {', '.join(diff.layers_before) or '(none)'} → "
                f"{', '.join(diff.layers_after) or '(none)'}"
            )
            lines.append("")
        if diff.keys:
            lines += ["| key | change | before | after | set in |", "|---|---|---|---|---|"]
            for change in diff.keys:
                what = change.change + (" (override flipped)" if change.override_flipped else "")
                lines.append(
                    f"| `{change.key}` | {what} | {_cell(change.before)} | {_cell(change.after)} "
                    f"| {_origin(change.after or change.before)} |"
                )
            lines.append("")
        if diff.rules:
            lines.append("Rules (applied only to workers that match them):")
            lines.append("")
            for rule in diff.rules:
                view = rule.after or rule.before
                assert view is not None
                lines.append(
                    f"- {rule.change} rule `{rule.name}` ({view.file}:{view.rule.origin.line}): "
                    f"{view.describe()}"
                )
                if rule.change == "changed" and rule.before is not None:
                    lines.append(f"  - was: {rule.before.describe()}")
            lines.append("")
    unchanged = [d.label for d in diffs if d.status == "unchanged"]
    if unchanged:
        lines.append(f"Unchanged: {', '.join(f'`{label}`' for label in unchanged)}")
    return "\n".join(lines).rstrip() + "\n"
