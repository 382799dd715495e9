"""What the web layer may ask of syncing, whichever process it runs in.

The leader's :class:`~server.sync.syncer.Syncer` and a follower's
``processes.follower.LeaderFollower`` both provide it: handlers read the sync
state, ask for a sync (a webhook) or wait for one (``/admin/refresh``), pin
or unpin a commit (``/admin/pin``, ``/admin/unpin``: a follower relays them to
its leader, whose sync loop decides), and never reach further in.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .state import PinChange, SyncRecord, SyncState, SyncTrigger


class SyncControl(Protocol):
    @property
    def state(self) -> SyncState:
        """The sync state to show (a follower shows its leader's)."""
        ...

    @property
    def first_attempt_done(self) -> asyncio.Event:
        """Set once the first sync has ended (a follower: once it serves the leader's commit)."""
        ...

    def request_sync(self, trigger: SyncTrigger) -> None:
        """Ask for a sync soon, without waiting."""
        ...

    async def refresh(self, trigger: SyncTrigger) -> SyncRecord:
        """Ask for a sync and wait for one that started after this call."""
        ...

    async def pin(self, rev: str, *, by: str, reason: str) -> PinChange:
        """Serve commit ``rev`` (in the mirror, valid now) until unpinned.

        UnknownCommit (404) or CommitRejected (409, with its errors) when it cannot be.
        """
        ...

    async def unpin(self, *, by: str, reason: str = "") -> PinChange:
        """Drop the pin and sync at once: the tip is served (or, rejected, the last good)."""
        ...
