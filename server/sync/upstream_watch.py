"""Watch a local upstream repository's refs and ask for a sync the moment one moves.

Used when ``--repo`` is a local path or file:// URL (``git.remote.local_git_dir``).
watchdog calls back on its own thread; the callback only hands the event to the event loop
(``call_soon_threadsafe``), where a short debounce folds a burst of ref
updates (``main.lock`` created, renamed, packed-refs rewritten...) into one
sync request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

log = logging.getLogger("server.upstream_watch")

# Long enough to fold one push's ref writes together, short enough to be unnoticeable.
DEBOUNCE_SECONDS = 0.05
_CHANGE_EVENTS = frozenset({"created", "modified", "moved", "deleted"})


class _RefEvents(FileSystemEventHandler):
    """Runs on watchdog's thread: only hands ref events over to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, watcher: RefWatcher) -> None:
        self._loop = loop
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Opened/closed-without-write events come from readers, our own fetch among
        # them; reacting to those would make every sync trigger the next.
        if event.event_type not in _CHANGE_EVENTS:
            return
        path = str(event.src_path)
        moved_to = str(getattr(event, "dest_path", "") or "")
        if any("/refs/" in p or p.endswith("packed-refs") for p in (path, moved_to)):
            self._loop.call_soon_threadsafe(self._watcher.ref_changed)


class RefWatcher:
    """Calls ``on_change`` (on the loop) once per burst of ref changes in ``git_dir``."""

    def __init__(self, git_dir: Path, on_change: Callable[[], None]) -> None:
        self.git_dir = git_dir
        self._on_change = on_change
        self._observer: BaseObserver | None = None
        self._pending: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        observer = Observer()
        handler = _RefEvents(loop, self)
        # refs/ for loose refs; the git dir itself (not recursively: objects/ is busy
        # during a push) for packed-refs.
        observer.schedule(handler, str(self.git_dir), recursive=False)
        observer.schedule(handler, str(self.git_dir / "refs"), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.info("watching %s for ref changes", self.git_dir)

    def ref_changed(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(DEBOUNCE_SECONDS, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._on_change()

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._observer is not None:
            observer = self._observer
            observer.stop()
            await asyncio.get_running_loop().run_in_executor(None, observer.join)
            self._observer = None
