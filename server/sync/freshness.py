"""Whether the served config may be out of date: the honest health signal.

A replica keeps serving its last good commit while git is unreachable; that is
the right thing for workers, but an operator must be told. The served config
is *stale* when no sync has succeeded for longer than ``--stale-after``
seconds (counted from startup when none has succeeded yet). Staleness shows in
``/status`` and ``/metrics``; it does not make ``/readyz`` fail, because taking
every replica out of service while git is down would leave workers with no
config at all.
"""

from __future__ import annotations

import dataclasses

from ..base.clock import Moment
from .state import SyncState


@dataclasses.dataclass(frozen=True, kw_only=True)
class Freshness:
    stale: bool
    # Seconds since the last successful sync; None when none has succeeded yet.
    since_last_success: float | None
    reason: str | None


def freshness(state: SyncState, *, started: Moment, stale_after: float, now: Moment) -> Freshness:
    """Measured on the monotonic clock: a wall clock stepped back must not hide an outage."""
    last = state.last_success
    since = None if last is None else last.seconds_until(now)
    waited = since if since is not None else started.seconds_until(now)
    if waited <= stale_after:
        return Freshness(stale=False, since_last_success=since, reason=None)
    if last is None:
        reason = f"no successful sync since startup {waited:.0f} s ago"
    else:
        reason = f"no successful sync for {waited:.0f} s"
    reason += f" (--stale-after {stale_after:g} s)"
    if state.task_error:
        reason += f"; the sync task crashed: {state.task_error}"
    elif state.last_sync is not None and state.last_sync.error:
        reason += f"; last error: {state.last_sync.error}"
    return Freshness(stale=True, since_last_success=since, reason=reason)
