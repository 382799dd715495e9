"""Poll the credential files of one process and apply their changes on the event loop.

Each process watches its own (``--workers N``: every process its auth file and
webhook secret; the leader also the secret scopes and the secrets dir). Every
:data:`POLL_SECONDS` the stamps are taken on a thread (stat, and a read only
when a stamp moved); what changed is applied on the loop, where a reload is
one reference swap, so a request never waits for a file (``base.reloading``
says why a stat poll rather than inotify: a Kubernetes Secret's ``..data`` swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ..base.reloading import Apply, ReloadStatus, Watched
from ..base.tasks import guarded_task

log = logging.getLogger("server.reload")

# A rotated credential is in force within about this long; a poll is a few stat calls.
POLL_SECONDS = 1.0


class FileWatch:
    """The credential files of this process, polled while the app runs."""

    def __init__(self, watched: Sequence[Watched], interval: float = POLL_SECONDS) -> None:
        self._watched = tuple(watched)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def statuses(self) -> tuple[ReloadStatus, ...]:
        return tuple(watched.status for watched in self._watched)

    def start(self) -> None:
        if not self._watched:
            return
        self._task = guarded_task(
            self._run(),
            name="credential-files",
            log=log,
            crash_message="the credential file watch crashed; changed files are not reloaded",
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval)
            for apply in await loop.run_in_executor(None, self._poll_all):
                apply()

    def _poll_all(self) -> list[Apply]:
        """On a thread: what changed since the last poll applied."""
        return [change for watched in self._watched if (change := watched.poll()) is not None]
