"""The emergency pin (``POST /admin/pin``) as a value, where it is kept, and its data-dir record.

A :class:`Pin` says which commit an operator put back, who, when and why.
The sync loop (``sync.syncer``) decides what a pin means; a :class:`PinStore`
only keeps it across restarts. :class:`PinFile` keeps it for this replica in
``<data-dir>/pin.json``, next to the last-good record; a store shared by
replicas (Redis) provides the same three calls and says so in ``scope``.

Blocking: a store is loaded, saved and cleared on the sync thread.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..base.clock import rfc3339
from ..base.errors import PinUnreadable
from .data_dir import SHA_RE, write_json_atomically

# Bounds what an operator's reason may cost in logs, /status and the dashboard.
MAX_REASON_CHARS = 500


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pin:
    """One commit served whatever the ref's tip, until it is unpinned."""

    commit: str  # a full sha
    by: str  # the admin credential's name, or "loopback" while auth is off
    at: float  # wall clock: to show
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "by": self.by, "at": rfc3339(self.at), "reason": self.reason}

    @classmethod
    def from_json(cls, data: object) -> Pin:
        """The pin that ``as_json`` wrote; PinUnreadable for anything else."""
        if not isinstance(data, dict):
            raise PinUnreadable("not a JSON object")
        commit, by, at, reason = (data.get(key) for key in ("commit", "by", "at", "reason"))
        if not isinstance(commit, str) or not SHA_RE.match(commit):
            raise PinUnreadable("'commit' is not a full commit id")
        if not isinstance(by, str) or not by or not isinstance(reason, str):
            raise PinUnreadable("'by' and 'reason' must be strings")
        if len(reason) > MAX_REASON_CHARS:
            raise PinUnreadable("'reason' is too long")
        try:
            moment = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise PinUnreadable("'at' is not an RFC 3339 time")
        return cls(commit=commit, by=by, at=moment.timestamp(), reason=reason)


class PinStore(Protocol):
    """Where the pin is kept; blocking, called on the sync thread only."""

    @property
    def scope(self) -> str:
        """Which replicas a pin kept here applies to, as the answer says it."""
        ...

    def load(self) -> Pin | None:
        """The pin kept, or None; PinUnreadable when one is kept but cannot be read."""
        ...

    def save(self, pin: Pin) -> None:
        """Keep ``pin`` (replacing any other); OSError when it could not be kept."""
        ...

    def clear(self) -> None:
        """Forget the pin (there may be none)."""
        ...


class PinFile:
    """The pin of one replica, in its data dir, for one repository and ref (as the last-good
    record is: a pin made for another --repo or --ref never applies)."""

    def __init__(self, path: Path, *, identity: str, ref: str, scope: str = "this replica") -> None:
        # With --redis the pin is also shared (server.shared), and the answer says so.
        self.scope = scope
        self._path = path
        self._identity = identity
        self._ref = ref

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> Pin | None:
        try:
            text = self._path.read_text("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise PinUnreadable(f"{self._path}: {type(exc).__name__}") from None
        try:
            record = json.loads(text)
        except ValueError:
            raise PinUnreadable(f"{self._path}: not JSON") from None
        if not isinstance(record, dict):
            raise PinUnreadable(f"{self._path}: not a JSON object")
        if record.get("identity") != self._identity or record.get("ref") != self._ref:
            raise PinUnreadable(f"{self._path}: made for another repository or --ref")
        try:
            return Pin.from_json(record.get("pin"))
        except PinUnreadable as exc:
            raise PinUnreadable(f"{self._path}: {exc.message}") from None

    def save(self, pin: Pin) -> None:
        record = {"identity": self._identity, "ref": self._ref, "pin": pin.as_json()}
        write_json_atomically(self._path, record)

    def clear(self) -> None:
        self._path.unlink(missing_ok=True)
