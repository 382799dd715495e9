"""Which worker holds which commit: a bounded table of recent /config answers.

Every answer records who asked (``lmcache_instance_id`` from current_config,
the values of an allow-list of environment variables such as HOSTNAME, and the
peer address), for which app, and which commit it was given. Nothing else from
the request is kept: the worker sends its whole environment, secrets included,
and only the allow-listed names are copied out of it.

The table holds at most ``--fleet-size`` workers; recording a worker moves it
to the young end, and the least recently seen worker is forgotten first, so
memory stays bounded however many workers (or forged ids) ask. A worker not
seen for ``--fleet-ttl`` seconds is forgotten too (a deleted pod must not stay
"behind" for good); times are the wall clock's, as they are compared across
processes (and, later, replicas). It is touched
only on the event loop. Each replica knows the workers that asked *it*; with
``--workers N`` the processes of one replica exchange their sightings
(``take_fresh`` and ``merge``), so every process shows the replica's whole table.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..base.clock import rfc3339

# Identity values come from the request; cap their size so that a worker cannot
# make one entry large.
MAX_VALUE_CHARS = 256


def _clip(value: object) -> str | None:
    # The common case first, cheaply: a short ASCII string is kept as it is.
    if type(value) is str and len(value) <= MAX_VALUE_CHARS and value.isascii():
        return value
    if value is None or isinstance(value, dict | list):
        return None
    # Lone surrogates (JSON allows them) cannot be encoded for a page or a log: replace them.
    text = str(value)[:MAX_VALUE_CHARS]
    return text.encode("utf-8", "replace").decode("utf-8")


class Sighting(NamedTuple):
    """One worker's latest answer: who, for which app, which commit, when.

    A NamedTuple rather than a frozen dataclass: one is made per /config answer,
    and a tuple is built in a fraction of a frozen dataclass's time.
    """

    app_id: str | None
    instance_id: str | None
    env: tuple[tuple[str, str], ...]  # allow-listed names only
    peer: str | None
    commit: str
    seen_at: float
    replica: str | None = None  # which replica answered (with --redis only)

    def as_json(self, served: str | None) -> dict[str, Any]:
        answer = {
            "instance_id": self.instance_id,
            "env": dict(self.env),
            "peer": self.peer,
            "commit": self.commit,
            "seen_at": rfc3339(self.seen_at),
            "behind": served is not None and self.commit != served,
        }
        if self.replica is not None:
            answer["replica"] = self.replica
        return answer


# (app id, instance id) for workers that send lmcache_instance_id; else
# (app id, None, peer, allow-listed env): whatever tells workers apart.
FleetKey = tuple[object, ...]


def sighting_key(sighting: Sighting) -> FleetKey:
    """The key :meth:`FleetTable.record` files a sighting under (record inlines it)."""
    if sighting.instance_id:
        return (sighting.app_id, sighting.instance_id)
    return (sighting.app_id, None, sighting.peer, sighting.env)


class FleetTable:
    def __init__(
        self, *, capacity: int, env_allow_list: Iterable[str], ttl: float | None = None
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.expired = 0
        self.env_allow_list = tuple(env_allow_list)
        self.evicted = 0
        self._rows: collections.OrderedDict[FleetKey, Sighting] = collections.OrderedDict()
        # Sightings recorded here since the last take_fresh(), for the other processes.
        self._fresh: dict[FleetKey, Sighting] | None = None
        # With --redis: this replica's name on its sightings, and who is told of each one
        # this replica made (a bounded buffer that a background task sends to Redis).
        self.replica: str | None = None
        self.on_sighting: Callable[[Sighting], None] | None = None

    def __len__(self) -> int:
        self.expire()
        return len(self._rows)

    def expire(self, now: float | None = None) -> None:
        """Forget the workers not seen for ``ttl`` seconds (oldest first, from the old end)."""
        if self.ttl is None:
            return
        oldest = (time.time() if now is None else now) - self.ttl
        rows = self._rows
        while rows:
            key, sighting = next(iter(rows.items()))
            if sighting.seen_at >= oldest:
                break
            del rows[key]
            self.expired += 1

    def apps_in_use(self) -> dict[str, int]:
        """Workers per app id among those seen within the TTL (apps asked for by name)."""
        self.expire()
        counts: collections.Counter[str] = collections.Counter(
            s.app_id for s in self._rows.values() if s.app_id is not None
        )
        return dict(counts)

    def record(
        self,
        *,
        app_id: str | None,
        env: Mapping[str, Any],
        instance_id: object,
        peer: str | None,
        commit: str,
        now: float,
    ) -> Sighting:
        instance = _clip(instance_id)
        kept: list[tuple[str, str]] = []
        for name in self.env_allow_list:
            value = env.get(name)
            if value is not None and (text := _clip(value)) is not None:
                kept.append((name, text))
        env_kept = tuple(kept)
        # Without an instance id, the allow-listed variables and the peer tell workers apart.
        key: FleetKey = (app_id, instance) if instance else (app_id, None, peer, env_kept)
        sighting = Sighting(app_id, instance, env_kept, peer, commit, now, self.replica)
        self._put(key, sighting)
        if self.on_sighting is not None:
            self.on_sighting(sighting)
        fresh = self._fresh
        if fresh is not None:
            fresh[key] = sighting
            if len(fresh) > self.capacity:  # bounded like the table
                del fresh[next(iter(fresh))]
        return sighting

    def _put(self, key: FleetKey, sighting: Sighting) -> None:
        rows = self._rows
        if key in rows:
            rows.move_to_end(key)
        rows[key] = sighting
        if len(rows) > self.capacity:
            rows.popitem(last=False)
            self.evicted += 1

    def share(self) -> None:
        """Start keeping this process's new sightings for take_fresh() (with --workers)."""
        if self._fresh is None:
            self._fresh = {}

    def take_fresh(self) -> list[tuple[FleetKey, Sighting]]:
        """Sightings recorded here since the last call (the latest one per worker)."""
        fresh, self._fresh = self._fresh or {}, {}
        return list(fresh.items())

    def all_rows(self) -> list[tuple[FleetKey, Sighting]]:
        """The whole table, oldest first, for a process that joins late."""
        return list(self._rows.items())

    def merge(self, rows: list[tuple[FleetKey, Sighting]], *, pass_on: bool = False) -> None:
        """Sightings another process of this replica recorded; not passed on again.

        ``pass_on``: other replicas' sightings (from Redis), which the leader passes on to
        its followers like its own, but never back to Redis.
        """
        hook, fresh = self.on_sighting, self._fresh
        for key, sighting in rows:
            current = self._rows.get(key)
            if current is None or current.seen_at <= sighting.seen_at:
                self._put(key, sighting)
                if pass_on and fresh is not None:
                    fresh[key] = sighting
                elif hook is not None and sighting.replica == self.replica:
                    hook(sighting)  # a follower's sighting: this replica's, for Redis too

    def sightings(self, app_id: str | None = None) -> list[Sighting]:
        """Newest first; all apps, or one."""
        self.expire()
        rows = reversed(self._rows.values())
        return [s for s in rows if app_id is None or s.app_id == app_id]

    def counts(self) -> collections.Counter[tuple[str | None, str]]:
        """Workers per (app, commit)."""
        self.expire()
        return collections.Counter((s.app_id, s.commit) for s in self._rows.values())

    def report(self, *, served: str | None, app_id: str | None = None) -> dict[str, Any]:
        """Per app: how many workers hold which commit, and how many are behind ``served``."""
        apps: dict[str, dict[str, Any]] = {}
        for sighting in self.sightings(app_id):
            name = sighting.app_id or "_none"
            entry = apps.setdefault(
                name, {"instances": 0, "behind": 0, "commits": {}, "workers": []}
            )
            entry["instances"] += 1
            entry["commits"][sighting.commit] = entry["commits"].get(sighting.commit, 0) + 1
            worker = sighting.as_json(served)
            entry["behind"] += int(worker["behind"])
            entry["workers"].append(worker)
        return {
            "served_commit": served,
            "tracked": len(self._rows),
            "capacity": self.capacity,
            "evicted": self.evicted,
            "expired": self.expired,
            "ttl_seconds": self.ttl,
            "env_allow_list": list(self.env_allow_list),
            "apps": dict(sorted(apps.items())),
        }
