"""One replica's heartbeat: who it is, what it serves, how its syncing goes, and when it said so.

Each replica writes its own under a key with a TTL and refreshes it every
``--redis-interval``; every replica reads them all. A heartbeat older than
three intervals marks its replica *stale* (it may be hung or cut off); the
key itself outlives that (``KEY_TTL_INTERVALS``), so a stale replica is shown
as such for a while before it drops out.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

STALE_INTERVALS = 3
KEY_TTL_INTERVALS = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Heartbeat:
    replica: str
    serving: str | None  # the commit it serves
    tip: str | None  # the newest commit it fetched
    last_success_at: float | None  # its last successful sync (wall clock)
    sync_stale: bool  # its own --stale-after verdict
    heartbeat_at: float  # wall clock

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Heartbeat | None:
        try:
            data = json.loads(raw)
            beat = cls(
                replica=str(data["replica"]),
                serving=_sha(data.get("serving")),
                tip=_sha(data.get("tip")),
                last_success_at=_number(data.get("last_success_at")),
                sync_stale=bool(data.get("sync_stale")),
                heartbeat_at=float(data["heartbeat_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return beat

    def as_json(
        self, *, served: str | None, now: float, interval: float, own: str
    ) -> dict[str, Any]:
        return {
            "name": self.replica,
            "self": self.replica == own,
            "serving": self.serving,
            "tip": self.tip,
            "last_successful_sync_at": self.last_success_at,
            "sync_stale": self.sync_stale,
            "heartbeat_at": self.heartbeat_at,
            # Another commit than the one this replica serves (either may be the newer one).
            "behind": self.serving != served,
            "stale": now - self.heartbeat_at > STALE_INTERVALS * interval,
        }


def _sha(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
