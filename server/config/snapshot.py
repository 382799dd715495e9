"""An immutable snapshot of one validated commit, and the answers it gives.

A snapshot is built once per commit, off the event loop, and published by
swapping one reference (``SnapshotHolder.current``); a request reads that
reference once, so it is answered from exactly one commit.

Layering for app A: global.yaml's own sections, then its matching rules, then
apps/A.yaml's own sections, then its matching rules; each file is preceded by
the fragments it includes (``ConfigSet.layers``); ``effective`` merges them.
Answers for an app whose layers hold no rules are serialised once per snapshot;
answers with rules are cached per combination of matched rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..base.errors import AccessDenied
from ..base.issues import ConfigWarning
from .effective import EffectiveSetting, answer_items, merge
from .hints import nearest_app
from .model import Condition, ConfigFile, ConfigSet, Rule, Setting, chosen_layers, same_files

# Bound on cached answers for rule combinations; beyond it answers are built per request.
_MAX_CACHED_RULE_ANSWERS = 4096
# Unknown app ids are logged once per snapshot; this bounds that memory.
_MAX_UNKNOWN_APPS_REMEMBERED = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommitInfo:
    sha: str
    author: str
    authored_at: str  # ISO 8601
    subject: str
    # Apps the commit message says it removes on purpose (``Removes-Apps:`` trailers).
    removes_apps: frozenset[str] = frozenset()

    def as_json(self) -> dict[str, str]:
        return {
            "sha": self.sha,
            "author": self.author,
            "authored_at": self.authored_at,
            "subject": self.subject,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer:
    body: bytes
    app_known: bool
    applied_rules: tuple[str, ...]
    env_names_used: tuple[str, ...]  # env variables the matching rules read (names only)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppPlan:
    app_id: str | None
    known: bool
    files: tuple[ConfigFile, ...]

    @property
    def has_rules(self) -> bool:
        return any(f.rules for f in self.files)

    @property
    def access(self) -> tuple[Condition, ...]:
        return tuple(condition for f in self.files for condition in f.access)

    def failed_access(self, env: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        """The names whose ``access`` conditions this worker does not meet."""
        return [c.name for c in self.access if not c.matches(env, config)]

    def check_access(self, env: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        failed = self.failed_access(env, config)
        if failed:
            raise AccessDenied(
                f"this worker does not meet the access conditions of "
                f"{'app ' + repr(self.app_id) if self.app_id else 'the global layer'} "
                f"on: {', '.join(failed)}"
            )

    def matched(
        self, env: Mapping[str, Any], config: Mapping[str, Any], app_id: str | None = None
    ) -> tuple[Rule, ...]:
        """Rules that apply; ``app_id`` is the id the worker asked with (it seeds rollouts)."""
        return tuple(
            rule for f in self.files for rule in f.rules if rule.matches(env, config, app_id)
        )

    def layers(self, matched: tuple[Rule, ...]) -> list[tuple[Setting, ...]]:
        return chosen_layers(self.files, matched)


class ConfigsMemo:
    """The fixed answers' ``configs`` (serialised) of the last snapshot a builder made, by
    the identity of the files each came from.

    A one-file commit then serialises the one app it changed, not all 10,000: the
    parse memo hands back the same ``ConfigFile`` objects for unchanged files, and
    an app's configs depend on nothing but its files and the secret values (a
    change of any secret starts the memo again). It holds the last build's apps
    only, so removed apps do not stay.
    """

    def __init__(self) -> None:
        # A digest of the secret values the kept configs were made with, not a copy of them.
        self._secrets_digest = _digest({})
        self._kept: dict[str | None, tuple[tuple[ConfigFile, ...], bytes]] = {}
        self._next: dict[str | None, tuple[tuple[ConfigFile, ...], bytes]] = {}

    def start(self, secrets: Mapping[str, str] | None) -> None:
        """Begin a snapshot: what the last one kept is usable if the secrets are the same."""
        digest = _digest(secrets or {})
        if digest != self._secrets_digest:
            self._kept = {}
        self._secrets_digest = digest
        self._next = {}

    def get(self, app_id: str | None, files: tuple[ConfigFile, ...]) -> bytes | None:
        kept = self._kept.get(app_id)
        if kept is None or not same_files(kept[0], files):
            return None
        self._next[app_id] = kept
        return kept[1]

    def put(self, app_id: str | None, files: tuple[ConfigFile, ...], configs: bytes) -> None:
        self._next[app_id] = (files, configs)

    def finish(self) -> None:
        """End a snapshot: what it used is what the next one may reuse."""
        self._kept, self._next = self._next, {}


def _digest(secrets: Mapping[str, str]) -> bytes:
    return hashlib.sha256(json.dumps(sorted(secrets.items())).encode()).digest()


def _configs_json(items: list[dict[str, Any]]) -> bytes:
    return json.dumps(items, separators=(",", ":")).encode()


class Snapshot:
    """What one commit serves. Never mutated after construction, except a bounded memo."""

    def __init__(
        self,
        *,
        commit: CommitInfo,
        config_set: ConfigSet,
        loaded_at: float,
        schema_source: str,
        secrets: Mapping[str, str] | None = None,
        configs_memo: ConfigsMemo | None = None,
    ) -> None:
        """``configs_memo``: the builder's, so that unchanged apps' answers are not
        serialised again (on one thread: the builder's)."""
        self.commit = commit
        # Resolved secret values live only here and in the answer bytes built from them.
        self._secrets = secrets
        self.config_set = config_set
        self.loaded_at = loaded_at
        self.schema_source = schema_source
        self.app_ids: tuple[str, ...] = tuple(sorted(config_set.apps))
        self._plans: dict[str, AppPlan] = {
            app_id: AppPlan(app_id=app_id, known=True, files=config_set.layers(app_id))
            for app_id in config_set.apps
        }
        self._fallback = AppPlan(app_id=None, known=False, files=config_set.layers(None))
        self.warnings: tuple[ConfigWarning, ...] = config_set.warnings
        self._memo: dict[tuple[str | None, tuple[int, ...]], Answer] = {}
        # Unknown app ids asked for, each with its nearest app file (found once: difflib).
        self._unknown_seen: dict[str | None, str | None] = {}
        # The serialised ``configs`` per app and matched rules (the answers' bodies embed them).
        self._configs_by_rules: dict[tuple[str | None, tuple[int, ...]], bytes] = {}
        # Apps without rules never look at the request: serialise their answer now, and
        # answer them with one dict lookup (not those with access conditions to check).
        memo = configs_memo or ConfigsMemo()
        memo.start(secrets)
        self._fixed_answers: dict[str | None, Answer] = {
            app_id: self._fixed_answer(plan, app_id, memo)
            for app_id, plan in self._plans.items()
            if not plan.has_rules and not plan.access
        }
        if not self._fallback.has_rules and not self._fallback.access:
            # Requests without an appId get one fixed answer too.
            self._fixed_answers[None] = self._fixed_answer(self._fallback, None, memo)
        memo.finish()

    def _fixed_answer(self, plan: AppPlan, app_id: str | None, memo: ConfigsMemo) -> Answer:
        configs = memo.get(app_id, plan.files)
        if configs is None:
            configs = _configs_json(answer_items(merge(plan.layers(())), self._secrets))
            memo.put(app_id, plan.files, configs)
        self._configs_by_rules[(plan.app_id, ())] = configs
        return self._answer(plan, app_id, ())

    def plan(self, app_id: str | None) -> AppPlan:
        return self._plans.get(app_id, self._fallback) if app_id else self._fallback

    @property
    def secret_names(self) -> frozenset[str]:
        return frozenset(self._secrets or ())

    def resolved_secrets(self) -> dict[str, str]:
        """The resolved secrets: to tell whether a rotation needs a rebuild, and for the
        leader process to hand to its followers (never to show)."""
        return dict(self._secrets or {})

    def first_sighting_of_unknown(self, app_id: str | None) -> bool:
        """True the first time an unknown app id asks this snapshot (bounded)."""
        if app_id in self._unknown_seen or len(self._unknown_seen) >= _MAX_UNKNOWN_APPS_REMEMBERED:
            return False
        self._unknown_seen[app_id] = nearest_app(app_id, self.app_ids) if app_id else None
        return True

    def unknown_apps_seen(self) -> list[str]:
        """Unknown app ids asked of this snapshot (in this process), first seen first."""
        return [app_id for app_id in self._unknown_seen if app_id]

    def nearest_app(self, app_id: str) -> str | None:
        """The known app ``app_id`` probably means ("did you mean apps/<it>.yaml?")."""
        if app_id in self._unknown_seen:
            return self._unknown_seen[app_id]
        return nearest_app(app_id, self.app_ids)

    def effective(
        self, app_id: str | None, env: Mapping[str, Any], config: Mapping[str, Any]
    ) -> tuple[dict[str, EffectiveSetting], tuple[Rule, ...]]:
        plan = self.plan(app_id)
        matched = plan.matched(env, config, app_id)
        return merge(plan.layers(matched)), matched

    def fixed_answer(self, app_id: str | None) -> Answer | None:
        """The answer when it does not depend on the request (no rules, no access conditions)."""
        return self._fixed_answers.get(app_id)

    def answer(
        self, app_id: str | None, env: Mapping[str, Any], config: Mapping[str, Any]
    ) -> Answer:
        fixed = self._fixed_answers.get(app_id)
        if fixed is not None:
            return fixed
        plan = self.plan(app_id)
        if plan.access:
            plan.check_access(env, config)
        matched = plan.matched(env, config, app_id) if plan.has_rules else ()
        return self._answer(plan, app_id, matched)

    def _answer(self, plan: AppPlan, app_id: str | None, matched: tuple[Rule, ...]) -> Answer:
        # The memo key uses the plan's identity (None for every unknown app) so that
        # unknown app ids cannot grow the memo.
        memo_key = (plan.app_id, tuple(id(rule) for rule in matched))
        cached = self._memo.get(memo_key)
        if cached is not None and plan.known:
            return cached
        configs = self._configs_by_rules.get(memo_key)
        if configs is None:
            # Unknown app ids share their configs (the body names the id, so it is built anew).
            configs = _configs_json(answer_items(merge(plan.layers(matched)), self._secrets))
            if len(self._configs_by_rules) < len(self._plans) + _MAX_CACHED_RULE_ANSWERS:
                self._configs_by_rules[memo_key] = configs
        # The configs come serialised (json.dumps(body) with them in place, byte for byte).
        rest: dict[str, Any] = {
            "version": self.commit.sha,
            "app_id": app_id,
            "app_known": plan.known,
            "applied_rules": [rule.name for rule in matched],
        }
        if not plan.known:
            rest["note"] = (
                f"no apps/{app_id}.yaml in this commit: serving the global layer only"
                if app_id
                else "no appId in the request: serving the global layer only"
            )
        tail = json.dumps(rest, separators=(",", ":")).encode()
        answer = Answer(
            body=b'{"configs":' + configs + b"," + tail[1:],
            app_known=plan.known,
            applied_rules=tuple(rule.name for rule in matched),
            env_names_used=tuple(sorted({name for rule in matched for name in rule.env_names})),
        )
        if plan.known and (
            not matched or len(self._memo) < len(self._plans) + _MAX_CACHED_RULE_ANSWERS
        ):
            self._memo[memo_key] = answer
        return answer
