"""Polling waits: wait for the condition a test is about to assert, never a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], what: str, *, timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; the timeout only bounds a hang, it asserts no speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], object], what: str, *, timeout: float = 30.0, interval: float = 0.02
) -> None:
    """``wait_until`` for tests on the event loop: the loop keeps running while it polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
