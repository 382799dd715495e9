"""Which process of one replica this is: the leader, or one of its followers (``--workers N``).

"Workers" in this project are LMCache workers, the server's clients; the
server's own processes are the *leader* (index 0, the process the command
line starts) and its *followers* (1 to N-1).
"""

from __future__ import annotations

import dataclasses
import socket

from ..sync.state import GenerationCell


@dataclasses.dataclass(frozen=True)
class ProcessRole:
    """Which process of the replica this is: 0 is the leader."""

    index: int = 0
    # A follower's end of its socket pair to the leader; None in the leader.
    leader_link: socket.socket | None = None
    # With --workers N: the generation cell the processes share (sync.state); else None.
    live: GenerationCell | None = None

    @property
    def is_leader(self) -> bool:
        return self.leader_link is None


LEADER = ProcessRole()
