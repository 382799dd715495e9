"""Background tasks that must never die quietly, and the one thread each kind of git work runs on.

Every never-ending task of the server (the sync loop, the follower's channel,
the fleet exchange, the restart of a follower) is started through
:func:`guarded_task`: a crash is logged at once, with its traceback, and
handed to a callback that makes it visible (``/status``), instead of sitting
in a task object until someone awaits it. A task that is cancelled is not a
crash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def guarded_task(
    coro: Coroutine[Any, Any, None],
    *,
    name: str,
    log: logging.Logger,
    on_crash: Callable[[BaseException], None] | None = None,
    tasks: set[asyncio.Task[None]] | None = None,
    crash_message: str | None = None,
) -> asyncio.Task[None]:
    """Start ``coro`` as a task whose crash is logged (and reported) when it happens.

    With ``tasks``, the task is kept in that set while it runs, so that its
    owner can cancel whatever is still running when it stops. ``crash_message``
    is the log line of a crash (default: "task NAME crashed").
    """
    task = asyncio.create_task(coro, name=name)

    def finished(done: asyncio.Task[None]) -> None:
        if tasks is not None:
            tasks.discard(done)
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            return
        log.error("%s", crash_message or f"task {name} crashed", exc_info=error)
        if on_crash is not None:
            on_crash(error)

    if tasks is not None:
        tasks.add(task)
    task.add_done_callback(finished)
    return task


async def cancel_and_wait(tasks: set[asyncio.Task[None]] | list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until each has finished (their errors are already logged)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


class OneThread:
    """One named thread that runs blocking calls in order, so that they never race.

    The server has two: the sync thread, for git work that decides what is
    served, and the view thread, for git work that only shows (history,
    past commits), so that a slow view never delays a sync.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def shutdown(self) -> None:
        """Wait for the call in flight (each git command is bounded by --git-timeout)."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


class Precedence:
    """Work that serves goes first: work that only shows steps aside while it runs.

    The sync and view threads are separate, but Python runs one thread at a time:
    a history walk parsing a big repository on the view thread halves the CPU a
    build on the sync thread gets (a push during a cold walk of 10,000 apps took
    2.6 times as long). A build runs inside :meth:`serving`; the walk calls
    :meth:`step_aside` between files, which waits while a build runs, at most
    ``max_wait`` seconds at a time, so a view never hangs behind a stuck build.
    Fetches are not marked: they wait on git, not on the interpreter.
    """

    def __init__(self, max_wait: float = 10.0) -> None:
        self.max_wait = max_wait
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._serving = 0
        self._stepped_aside = 0.0  # seconds, summed; written by the view thread only

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        with self._lock:
            self._serving += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._serving -= 1
                if not self._serving:
                    self._idle.set()

    def step_aside(self) -> None:
        """Wait while work that serves runs (bounded); return at once otherwise."""
        if self._idle.is_set():
            return
        started = time.monotonic()
        self._idle.wait(self.max_wait)
        self._stepped_aside += time.monotonic() - started

    @property
    def serving_now(self) -> bool:
        return not self._idle.is_set()

    @property
    def stepped_aside(self) -> float:
        """Seconds the work that only shows has waited, in all."""
        return self._stepped_aside

    def clock(self) -> float:
        """A monotonic clock that stands still while the caller steps aside: a walk's own
        time bound counts only the time it ran (view thread)."""
        return time.monotonic() - self._stepped_aside
