"""Fleet sightings as Redis rows, and the bounded buffer they wait in on the answer path.

A row holds exactly what the fleet table holds: app id, instance id, the
allow-listed environment variables (``--fleet-env``), peer, commit, when and
which replica answered. Nothing else of a worker's request ever reaches Redis.
Rows read back are checked field by field: a bad row is skipped, never merged.
"""

from __future__ import annotations

import hashlib
import json

from ..ops.fleet import FleetKey, Sighting, sighting_key


def row_id(key: FleetKey) -> str:
    """A short, stable id for a worker (the hash field and sorted-set member)."""
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:24]


def encode_row(sighting: Sighting) -> str:
    return json.dumps(
        [
            sighting.app_id,
            sighting.instance_id,
            [list(pair) for pair in sighting.env],
            sighting.peer,
            sighting.commit,
            sighting.seen_at,
            sighting.replica,
        ],
        separators=(",", ":"),
    )


def _text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def decode_row(raw: str | bytes) -> Sighting | None:
    """A row written by a replica; None for anything malformed."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, list) or len(data) != 7:
        return None
    app_id, instance_id, env, peer, commit, seen_at, replica = data
    if not (_text_or_none(app_id) and _text_or_none(instance_id) and _text_or_none(peer)):
        return None
    if not (isinstance(commit, str) and isinstance(replica, str)):
        return None
    if not isinstance(seen_at, int | float) or isinstance(seen_at, bool):
        return None
    if not isinstance(env, list):
        return None
    pairs: list[tuple[str, str]] = []
    for pair in env:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            return None
        pairs.append((pair[0], pair[1]))
    return Sighting(app_id, instance_id, tuple(pairs), peer, commit, float(seen_at), replica)


class SightingBuffer:
    """This replica's sightings not yet sent to Redis: the latest per worker, bounded.

    Filled on the answer path (one dict store), drained by the fleet exchange task;
    a new worker that finds it full is dropped and counted, never waited for.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._rows: dict[FleetKey, Sighting] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def offer(self, sighting: Sighting) -> None:
        key = sighting_key(sighting)
        rows = self._rows
        if key in rows or len(rows) < self.capacity:
            rows[key] = sighting
        else:
            self.dropped += 1

    def take(self) -> list[tuple[FleetKey, Sighting]]:
        rows, self._rows = self._rows, {}
        return list(rows.items())

    def restore(self, rows: list[tuple[FleetKey, Sighting]]) -> None:
        """Put back rows that could not be sent, unless a newer sighting took their place."""
        for key, sighting in rows:
            if key not in self._rows and len(self._rows) < self.capacity:
                self._rows[key] = sighting
