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
import logging
from collections.abc import Callable, Coroutine
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
