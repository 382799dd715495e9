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
"behind" for good), counted from its own ``seen_at``: a row merged from another
process or replica expires when it would have there, not a full TTL after it
arrived. Both are ``cachetools.TLRUCache``'s work. Times are the wall clock's,
as they are compared across processes and replicas. It is touched only on the
event loop. Each replica knows the workers that asked *it*; with ``--workers N``
the processes of one replica exchange their sightings (``take_fresh`` and
``merge``), so every process shows the replica's whole table.
"""

from __future__ import annotations

import collections
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from cachetools import Cache, TLRUCache

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


class _Rows(TLRUCache[FleetKey, Sighting, float]):
    """The rows: at most ``capacity``, least recently recorded evicted first, each one
    expiring ``ttl`` seconds after its own ``seen_at``; what is forgotten is counted."""

    def __init__(self, capacity: int, ttl: float | None) -> None:
        life = math.inf if ttl is None else ttl
        # The wall clock, which seen_at is on (it is compared across replicas).
        super().__init__(capacity, lambda _key, row, _now: row.seen_at + life, time.time)
        self.expired = 0
        self.evicted = 0

    def expire(self, time: float | None = None) -> list[tuple[FleetKey, Sighting]]:
        # The cache calls this itself before it stores or evicts a row, so all are counted.
        gone = super().expire(time)
        self.expired += len(gone)
        return gone

    def popitem(self) -> tuple[FleetKey, Sighting]:
        row = super().popitem()  # expired rows went first: this one was still live
        self.evicted += 1
        return row

    # Reading a row through the mapping moves it to the young end (a TLRUCache read is a
    # use): /fleet reads every row, and must not change which one is evicted next.
    def peek(self, key: FleetKey) -> Sighting | None:
        return Cache.__getitem__(self, key) if key in self else None

    def live(self) -> list[tuple[FleetKey, Sighting]]:
        """The rows within their TTL at one moment, in no set order (it varies by version)."""
        with self.timer as now:
            self.expire(now)
            # Every row left is live at ``now``, so the plain dict is read: the cache's own
            # iteration checks each row's time again, three times slower for 10,000 rows.
            return [(key, Cache.__getitem__(self, key)) for key in Cache.__iter__(self)]


_SEEN_AT = operator.attrgetter("seen_at")


class FleetTable:
    def __init__(
        self, *, capacity: int, env_allow_list: Iterable[str], ttl: float | None = None
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.env_allow_list = tuple(env_allow_list)
        self._rows = _Rows(capacity, ttl)
        # Sightings recorded here since the last take_fresh(), for the other processes.
        self._fresh: dict[FleetKey, Sighting] | None = None
        # With --redis: this replica's name on its sightings, and who is told of each one
        # this replica made (a bounded buffer that a background task sends to Redis).
        self.replica: str | None = None
        self.on_sighting: Callable[[Sighting], None] | None = None

    @property
    def expired(self) -> int:
        """Workers forgotten as not seen within the TTL."""
        return self._rows.expired

    @property
    def evicted(self) -> int:
        """Workers forgotten to make room (the table was full)."""
        return self._rows.evicted

    def __len__(self) -> int:
        self._rows.expire()
        return len(self._rows)

    def expire(self, now: float | None = None) -> None:
        """Forget the workers not seen for ``ttl`` seconds before ``now`` (default: now)."""
        self._rows.expire(now)

    def apps_in_use(self) -> dict[str, int]:
        """Workers per app id among those seen within the TTL (apps asked for by name)."""
        counts: collections.Counter[str] = collections.Counter(
            s.app_id for _, s in self._rows.live() if s.app_id is not None
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
        if self.ttl is not None and sighting.seen_at + self.ttl <= rows.timer():
            # Past its TTL already: the worker is forgotten, and counted so. (Done here,
            # as cachetools before 7.1.5 ignores such a store and keeps the older row.)
            rows.pop(key, None)
            rows.expired += 1
            return
        rows[key] = sighting

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
        return sorted(self._rows.live(), key=lambda row: row[1].seen_at)

    def merge(self, rows: list[tuple[FleetKey, Sighting]], *, pass_on: bool = False) -> None:
        """Sightings another process of this replica recorded; not passed on again.

        ``pass_on``: other replicas' sightings (from Redis), which the leader passes on to
        its followers like its own, but never back to Redis. Each keeps its own ``seen_at``,
        so it expires when it would have where it was recorded.
        """
        hook, fresh, table = self.on_sighting, self._fresh, self._rows
        for key, sighting in rows:
            current = table.peek(key)
            if current is None or current.seen_at <= sighting.seen_at:
                self._put(key, sighting)
                if pass_on and fresh is not None:
                    fresh[key] = sighting
                elif hook is not None and sighting.replica == self.replica:
                    hook(sighting)  # a follower's sighting: this replica's, for Redis too

    def sightings(self, app_id: str | None = None) -> list[Sighting]:
        """Newest first (by when each was seen); all apps, or one."""
        rows = [s for _, s in self._rows.live() if app_id is None or s.app_id == app_id]
        return sorted(rows, key=_SEEN_AT, reverse=True)

    def counts(self) -> collections.Counter[tuple[str | None, str]]:
        """Workers per (app, commit)."""
        return collections.Counter((s.app_id, s.commit) for _, s in self._rows.live())

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
