"""Bounds per connection, below aiohttp: how many at once, and how long a request head may take.

aiohttp waits as long as a client likes for a request head, and accepts as
many connections as the process has file descriptors: a few hundred clients
sending one byte every ten seconds (slowloris) then starve new workers of
connections and the sync of file descriptors. So every connection passes a
guard first:

- beyond ``max_connections`` open at once, a new connection is closed at
  once (and counted), before aiohttp sees it;
- a request head (request line and headers) must be complete within
  ``header_timeout`` seconds of its first byte; a connection that sends
  nothing at all is closed after ``SILENT_SECONDS``. The body is
  bounded by the handlers that read it (``body_timeout``). An idle keep-alive
  connection is aiohttp's to close.

The guard follows request boundaries by Content-Length; a chunked body ends
the guarding of that connection (no client of this server sends one).

Requests so malformed that aiohttp refuses them before any handler runs (a bad
method, an over-long line) are answered here too: a JSON error like every
other, and one log line, instead of aiohttp's plain text and a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import resource
import socket
import ssl
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest

from ..base.issues import printable
from ..base.logs import log_event
from ..ops.metrics import ConnectionCounts
from .params import json_error

log = logging.getLogger("server.access")

_HEAD_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
# aiohttp refuses heads beyond its own limits; past this the guard leaves it to aiohttp.
_MAX_HEAD_SEEN = 128 * 1024
# File descriptors kept for everything that is not a client connection (git, files).
FD_RESERVE = 256
# How often slow heads are looked for: a head is cut between 0 and this late.
SWEEP_SECONDS = 1.0
# A connection that sends no byte at all is closed after this long.
SILENT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    max_connections: int = 10_000
    header_timeout: float = 10.0


def usable_connections(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many file descriptors.

    The soft limit on file descriptors is raised to the hard one first, as
    servers do: the default soft limit (often 1,024) is far below a fleet.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_RESERVE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(16, min(wanted, soft - FD_RESERVE))


class HeadClock:
    """One sweep a second over the connections awaiting a request head.

    Cheaper than a timer per request: a request only notes when its head began;
    the sweep closes those that began more than ``header_timeout`` ago.
    """

    def __init__(self, limits: ConnectionLimits, counts: ConnectionCounts) -> None:
        self.limits = limits
        self.counts = counts
        self.awaiting: dict[_Guard, float] = {}  # connection -> when its head began
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.limits.header_timeout
        for guard in [g for g, began in self.awaiting.items() if began < deadline]:
            self.awaiting.pop(guard, None)
            guard.too_slow()
        self._handle = loop.call_later(SWEEP_SECONDS, self._sweep)


class _Guard(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol for one connection."""

    __slots__ = ("_body_left", "_clock", "_counted", "_guarding", "_head", "_inner", "_transport")

    def __init__(self, inner: asyncio.Protocol, clock: HeadClock) -> None:
        self._inner = inner
        self._clock = clock
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._head = b""  # a head that has begun and not ended
        self._body_left = 0
        self._guarding = True

    # -- asyncio.Protocol, forwarded to aiohttp's protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast(asyncio.Transport, transport)  # a stream server's
        counts = self._clock.counts
        if counts.open >= self._clock.limits.max_connections:
            counts.refused += 1
            stream.abort()
            return
        counts.open += 1
        self._counted = True
        # A connection that sends nothing at all gets longer: under a burst this server
        # may read a head long after it was sent, and bytes not read yet must not count
        # as slow. A slowloris sends its first byte at once and is timed from it.
        self._began(grace=SILENT_SECONDS - self._clock.limits.header_timeout)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._guarding:
            self._follow(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clock.awaiting.pop(self, None)
        if self._counted:
            self._counted = False
            self._clock.counts.open -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- following request boundaries --

    def _follow(self, data: bytes) -> None:
        position = 0
        size = len(data)
        while position < size:
            if self._body_left:
                taken = min(self._body_left, size - position)
                self._body_left -= taken
                position += taken
                continue
            if not self._head:
                self._began()  # the first byte of a request's head (the connect's grace ends)
            chunk = data[position:] if position else data
            text = self._head + chunk if self._head else chunk
            end = text.find(_HEAD_END, max(0, len(self._head) - 3))
            if end < 0:
                self._head = text
                if len(text) > _MAX_HEAD_SEEN:
                    self._stop_guarding()
                return
            head = text[:end]
            consumed = end + len(_HEAD_END) - len(self._head)  # of this chunk
            self._head = b""
            self._clock.awaiting.pop(self, None)
            if _CHUNKED.search(head):
                self._stop_guarding()
                return
            length = _CONTENT_LENGTH.search(head)
            self._body_left = int(length.group(1)) if length else 0
            position += consumed

    def _began(self, grace: float = 0.0) -> None:
        self._clock.awaiting[self] = asyncio.get_running_loop().time() + max(0.0, grace)

    def _stop_guarding(self) -> None:
        self._guarding = False
        self._head = b""
        self._clock.awaiting.pop(self, None)

    def too_slow(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._clock.counts.timed_out += 1
            self._transport.abort()


class _JsonErrors(web.RequestHandler):
    """aiohttp's protocol, answering what its parser refuses as JSON, logged in one line."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = printable((message or exc.message or "bad request").split("\n", 1)[0])[:200]
        log_event(
            log,
            logging.INFO,
            "request",
            {"id": None, "method": None, "path": None, "status": status, "error": reason},
        )
        response = json_error(status, "bad_request", f"the request could not be read: {reason}")
        response.force_close()
        return response


class GuardedSite(web.SockSite):
    """aiohttp's SockSite, with every connection behind a :class:`_Guard`."""

    __slots__ = ("_clock",)

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        limits: ConnectionLimits,
        counts: ConnectionCounts,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 4096,
    ) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context, backlog=backlog)
        self._clock = HeadClock(limits, counts)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        clock = self._clock
        loop = asyncio.get_running_loop()

        guard = clock.limits.header_timeout > 0

        def guarded() -> asyncio.Protocol:
            # The handler arguments the runner gave its server (access log off, timeouts).
            handler = _JsonErrors(server, loop=loop, **server._kwargs)
            return _Guard(handler, clock) if guard else handler

        self._server = await loop.create_server(
            guarded, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )
        if guard:
            clock.start()

    async def stop(self) -> None:
        self._clock.stop()
        await super().stop()
