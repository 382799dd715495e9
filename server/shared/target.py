"""Where Redis is, who this replica is, and the names of everything it keeps there.

Every key of one fleet starts with a namespace derived from what the replicas
serve (remote, ref and path), so two fleets may share one Redis without
seeing each other's replicas, webhooks or workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

PREFIX = "lmcache-config-server"
# A webhook delivery id is remembered this long: git hosts redeliver by hand, within days.
DELIVERY_TTL = 86400


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """The Redis of ``--redis``; ``url`` and ``password`` are never shown or logged."""

    url: str = dataclasses.field(repr=False)
    password: str | None = dataclasses.field(repr=False)
    ca_file: str | None = None  # rediss:// signed by a private CA
    shown_url: str  # redacted
    replica: str
    namespace: str
    interval: float  # heartbeat and fleet exchange period, seconds
    fleet_ttl: float


@dataclasses.dataclass(frozen=True)
class Keys:
    """The Redis names of one fleet."""

    namespace: str

    @property
    def channel(self) -> str:
        """Pub/sub: one message per webhook or refresh at any replica."""
        return f"{self.namespace}:sync"

    def replica(self, name: str) -> str:
        """One replica's heartbeat (a string with a TTL)."""
        return f"{self.namespace}:replica:{name}"

    @property
    def replica_pattern(self) -> str:
        return f"{self.namespace}:replica:*"

    @property
    def pin(self) -> str:
        """The emergency pin every replica serves (JSON of a Pin; absent when unpinned)."""
        return f"{self.namespace}:pin"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.namespace}:delivery:{delivery_id}"

    @property
    def fleet_rows(self) -> str:
        """Hash: row id -> one sighting (JSON)."""
        return f"{self.namespace}:fleet:rows"

    @property
    def fleet_seen(self) -> str:
        """Sorted set: row id scored by when its worker was seen (expiry and pulls)."""
        return f"{self.namespace}:fleet:seen"


def fleet_namespace(remote: str, ref: str, path: str) -> str:
    """The namespace of the replicas serving this remote (redacted), ref and path."""
    digest = hashlib.sha256(f"{remote}\n{ref}\n{path}".encode()).hexdigest()[:16]
    return f"{PREFIX}:{digest}"


def replica_name(given: str, environ: Mapping[str, str], hostname: str, port: int) -> str:
    """``--replica-name``, else ``$POD_NAME`` or the host name with the port."""
    if given:
        return given
    return f"{environ.get('POD_NAME') or hostname}:{port}"
