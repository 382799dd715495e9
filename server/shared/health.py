"""Whether Redis answers: since when it does not, and the last error, redacted.

Every background task reports here; ``/status`` and the dashboard read it.
An error's text goes through :func:`~server.base.redact.redact` and has the
password (from a file, so not in any URL) blanked out before it is kept.
"""

from __future__ import annotations

import logging
import time

from ..base.clock import rfc3339
from ..base.redact import redact

log = logging.getLogger("server.shared")


class Health:
    def __init__(self, password: str | None) -> None:
        self._password = password
        self.down_since: float | None = None  # wall clock
        self.error: str | None = None
        self.ever_up = False

    @property
    def available(self) -> bool:
        return self.ever_up and self.down_since is None

    def scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return redact(text)

    def failed(self, what: str, error: BaseException) -> None:
        detail = self.scrub(
            f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        )
        if self.down_since is None:
            self.down_since = time.time()
            log.warning(
                "shared state (Redis) unavailable: %s: %s; replicas poll alone", what, detail
            )
        self.error = f"{what}: {detail}"

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.info("shared state (Redis) available again")
        self.ever_up = True
        self.down_since = None
        self.error = None

    def as_json(self) -> dict[str, object]:
        return {
            "available": self.available,
            "unavailable_since": rfc3339(self.down_since) if self.down_since is not None else None,
            "error": self.error,
        }
