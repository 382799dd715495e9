"""What the web layer reads of the shared state, whichever process it runs in.

The leader process has the :class:`~server.shared.replicas.SharedState` that
talks to Redis; a follower of ``--workers N`` has the leader's view relayed
over its channel (``processes.follower``). Both answer these two calls.
"""

from __future__ import annotations

from typing import Any, Protocol


class SharedView(Protocol):
    def status_json(self, served: str | None) -> dict[str, Any]:
        """``replica``, ``replicas`` and ``shared`` for /status and the dashboard."""
        ...

    async def first_delivery(self, delivery_id: str) -> bool | None:
        """Whether no replica has seen this webhook delivery; None when that is unknown now."""
        ...
