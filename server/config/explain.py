"""Why each rule of an app does or does not apply to one worker: for ``render`` and the dashboard.

Both show the same reasons, computed here from the same rules and the same
matching code the answers use, so an explanation can never disagree with an
answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .model import Condition, Rule
from .rollout import BUCKETS, bucket
from .snapshot import AppPlan


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    """One rule of an app for one worker: applied, or the first reason it is not."""

    rule: Rule
    applied: bool
    reason: str | None  # None when applied

    @property
    def at(self) -> str:
        return f"{self.rule.origin.path}:{self.rule.origin.line}"

    @property
    def conditions(self) -> list[str]:
        return [condition_text(condition) for condition in self.rule.conditions]

    @property
    def settings(self) -> list[str]:
        return [f"{setting.key}: {setting.value!r}" for setting in self.rule.settings]


def condition_text(condition: Condition) -> str:
    return f"{condition.source}.{condition.name} = {condition.pattern!r}"


def why_not(rule: Rule, app_id: str, env: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The first reason a rule does not apply to this worker."""
    for condition in rule.conditions:
        values = env if condition.source == "env" else config
        if condition.name not in values:
            return f"{condition.source} {condition.name} is not set"
        if not condition.matches(env, config):
            return (
                f"{condition.source} {condition.name} = {json.dumps(values[condition.name])} "
                f"does not match {json.dumps(condition.pattern)}"
            )
    rollout = rule.rollout
    if rollout is not None:
        identity = rollout.identity(env, config)
        if identity is None:
            return f"no {rollout.by} to place the worker in the {rollout.percent:g}% rollout"
        position = bucket(app_id, rule.name, identity)
        return (
            f"outside the {rollout.percent:g}% rollout "
            f"(position {position / (BUCKETS // 100):.2f}% by {rollout.by})"
        )
    return "does not match"


def rule_outcomes(
    plan: AppPlan, app_id: str, env: Mapping[str, Any], config: Mapping[str, Any]
) -> list[RuleOutcome]:
    """Every rule of the app's layers, in the order they apply, with its outcome."""
    matched = {id(rule) for rule in plan.matched(env, config, app_id)}
    return [
        RuleOutcome(
            rule=rule,
            applied=id(rule) in matched,
            reason=None if id(rule) in matched else why_not(rule, app_id, env, config),
        )
        for config_file in plan.files
        for rule in config_file.rules
    ]
