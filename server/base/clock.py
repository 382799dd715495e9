"""Moments in time, as both clocks see them: the wall clock to show, the monotonic one to measure.

The wall clock can be stepped (NTP, an operator, a VM resumed): a duration
taken from it can come out negative, or an hour short. Every duration the
server acts on or alerts on (is the served config stale?) is measured on the
monotonic clock; the wall clock only labels events for people. The monotonic
clock is one per machine on Linux, so a moment taken in one process of a
replica still measures right in another.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime


@dataclasses.dataclass(frozen=True)
class Moment:
    wall: float  # time.time(): what to show
    monotonic: float  # time.monotonic(): what to measure from

    @classmethod
    def now(cls) -> Moment:
        return cls(wall=time.time(), monotonic=time.monotonic())

    def seconds_until(self, later: Moment) -> float:
        """The time from this moment to ``later``, whatever the wall clock did meanwhile."""
        return max(0.0, later.monotonic - self.monotonic)


def rfc3339(timestamp: float | None) -> str | None:
    """A wall-clock time as RFC 3339 in UTC (``2026-12-01T23:53:38.123Z``): every time the
    server shows; numbers are kept for durations only."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (ValueError, OverflowError, OSError):  # no calendar holds it: say so, never fail
        return f"@{timestamp:.0f}"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
