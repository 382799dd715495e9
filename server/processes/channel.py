"""The channel between the leader and a follower of one replica, and what they say on it.

Length-prefixed pickles over a socket pair, one message at a time:

- leader to follower: ``Prepare`` when the leader starts to build a commit
  (build it too, meanwhile), ``Stage`` before a publish (hold this commit,
  built with these secrets, ready), ``Served`` after every sync (the publish
  generation, the commit, its secrets, and the sync state that /status,
  /metrics and the dashboard show), ``Refreshed`` (the answer to a relayed
  refresh), ``PinAnswered`` (to a relayed pin or unpin) and ``Sightings``;
- follower to leader: ``Staged`` (the staged commit is ready, or why not),
  ``SyncWanted`` (a webhook reached the follower), ``RefreshWanted``
  (``/admin/refresh`` did), ``PinWanted`` (``/admin/pin`` or ``/admin/unpin``
  did: the leader's sync loop decides), ``Following`` (the commit it serves after each
  attempt) and ``Sightings`` (the workers it answered, so that every process
  shows the whole fleet table).

A publish goes in two phases: the leader sends ``Stage`` and waits until
every follower answers ``Staged``; only then does it store the new generation
in the cell the processes share (``sync.state.GenerationCell``), which makes
the commit live in all of them at once, and sends ``Served``. Secrets travel
with the commit (over this socket pair only, between the processes of one
replica) so that every process answers one commit with one content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import socket
import struct
from typing import Any

from ..base.errors import ConfigServerError
from ..ops.fleet import FleetKey, Sighting
from ..sync.state import PinChange, SyncRecord, SyncState, SyncTrigger

_HEADER = struct.Struct("!I")
# How often the processes exchange the fleet sightings they recorded.
SIGHTINGS_INTERVAL = 0.5


@dataclasses.dataclass(frozen=True)
class Prepare:
    sha: str


@dataclasses.dataclass(frozen=True)
class Stage:
    generation: int
    sha: str
    secrets: dict[str, str] = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Staged:
    generation: int
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Served:
    generation: int
    sha: str | None
    state: SyncState
    secrets: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class SharedStatus:
    """--redis: the leader's view of the replicas and of Redis, for a follower's pages."""

    view: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DeliveryWanted:
    """--redis: has any replica seen this webhook delivery? (only the leader asks Redis)"""

    token: int
    delivery: str


@dataclasses.dataclass(frozen=True)
class DeliveryAnswered:
    token: int
    first: bool | None


@dataclasses.dataclass(frozen=True)
class SyncWanted:
    trigger: SyncTrigger


@dataclasses.dataclass(frozen=True)
class RefreshWanted:
    token: int
    trigger: SyncTrigger


@dataclasses.dataclass(frozen=True)
class Refreshed:
    token: int
    record: SyncRecord | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class PinWanted:
    """A pin (``rev`` set) or an unpin (``rev`` None) that reached a follower."""

    token: int
    rev: str | None
    by: str
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class PinAnswered:
    """The leader's answer: what changed, or the error to answer with (a 404, a 409...)."""

    token: int
    change: PinChange | None
    error: ConfigServerError | None = None


@dataclasses.dataclass(frozen=True)
class Sightings:
    rows: list[tuple[FleetKey, Sighting]]


@dataclasses.dataclass(frozen=True)
class Following:
    """A follower's report after each attempt to take up the leader's commit."""

    generation: int
    sha: str | None
    error: str | None = None


Message = (
    Prepare
    | Stage
    | Staged
    | Served
    | SyncWanted
    | RefreshWanted
    | Refreshed
    | PinWanted
    | PinAnswered
    | Sightings
    | Following
    | SharedStatus
    | DeliveryWanted
    | DeliveryAnswered
)


class Channel:
    """Length-prefixed pickles over a socket pair between two processes of one replica."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @staticmethod
    def encode(message: Message) -> bytes:
        """A message as sent: made once when it goes to several followers."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        return _HEADER.pack(len(data)) + data

    def send(self, message: Message | bytes) -> None:
        """Queue one message (or its encoding); never blocks (the transport buffers what the
        peer has not read)."""
        if not self._writer.is_closing():
            self._writer.write(message if isinstance(message, bytes) else self.encode(message))

    async def receive(self) -> Message | None:
        """The next message, or None once the other process has gone."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            data = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        # Only this replica's own processes hold the other end of the pair.
        message: Message = pickle.loads(data)  # noqa: S301
        return message

    def close(self) -> None:
        self._writer.close()
