"""Gradual rollout: a rule that applies to a stable N% of an app's workers.

A worker is in the rollout when a hash of (app id, rule name, the worker's
identity) falls below N% of the hash space. The hash is stable, so a worker's
answer never flips between restarts, and raising N only adds workers: the 10%
cohort stays inside the 50% cohort as long as the rule keeps its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

BUCKETS = 10_000  # percent has two decimals of resolution
DEFAULT_IDENTITY = "lmcache_instance_id"


def bucket(app_id: str, rule: str, identity: str) -> int:
    """The worker's stable position in [0, BUCKETS) for one rule of one app."""
    digest = hashlib.sha256(f"{app_id}\0{rule}\0{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def identity_text(value: Any) -> str | None:
    """The text an identity value is hashed as; None (never matches) for empty or odd values."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        text = str(value)
        return text or None
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rollout:
    """``when: {percent: N, by: ...}``: the identity is a current_config field or an env var."""

    percent: float
    source: str  # "config" or "env"
    name: str

    @property
    def by(self) -> str:
        return f"{self.source}:{self.name}"

    def describe(self) -> str:
        return f"{self.percent:g}% of workers by {self.by}"

    def identity(self, env: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
        values = env if self.source == "env" else config
        return identity_text(values.get(self.name))

    def includes(
        self, *, app_id: str | None, rule: str, env: Mapping[str, Any], config: Mapping[str, Any]
    ) -> bool:
        """Whether this worker is in the rollout; a worker without the identity never is."""
        identity = self.identity(env, config)
        if identity is None:
            return False
        return bucket(app_id or "", rule, identity) < round(self.percent * (BUCKETS // 100))
