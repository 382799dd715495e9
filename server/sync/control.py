"""What the web layer may ask of syncing, whichever process it runs in.

The leader's :class:`~server.sync.syncer.Syncer` and a follower's
``processes.follower.LeaderFollower`` both provide it: handlers read the sync
state, ask for a sync (a webhook) or wait for one (``/admin/refresh``), and
never reach further in.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .state import SyncRecord, SyncState, SyncTrigger


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
