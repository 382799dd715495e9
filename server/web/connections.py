"""Bounds per connection, below aiohttp: how many at once, and how long a request head may take.

aiohttp waits as long as a client likes for a request head, and accepts as
many connections as the process has file descriptors: a few hundred clients
sending one byte every ten seconds (slowloris) then starve new workers of
connections and the sync of file descriptors. So every connection passes a
guard first:

- beyond ``max_connections`` open at once, a new connection is closed at
  once (and counted), before aiohttp sees it;
- a request head (request line and headers) must be complete within
  ``header_timeout`` seconds of its first byte (for a connection's first
  request: of connecting); otherwise the connection is closed. The body is
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


class _Guard(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol for one connection."""

    def __init__(
        self, inner: asyncio.Protocol, limits: ConnectionLimits, counts: ConnectionCounts
    ) -> None:
        self._inner = inner
        self._limits = limits
        self._counts = counts
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._head = bytearray()
        self._in_head = True  # the first request's head is awaited from the connect
        self._body_left = 0
        self._guarding = True

    # -- asyncio.Protocol, forwarded to aiohttp's protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast(asyncio.Transport, transport)  # a stream server's
        if self._counts.open >= self._limits.max_connections:
            self._counts.refused += 1
            stream.abort()
            return
        self._counts.open += 1
        self._counted = True
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._guarding:
            self._follow(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._counts.open -= 1
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- following request boundaries --

    def _follow(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._guarding:
            if self._body_left:
                taken = min(self._body_left, len(view))
                self._body_left -= taken
                view = view[taken:]
                continue
            if not self._in_head:
                self._in_head = True  # the first byte of the next request
                self._arm()
            start = max(0, len(self._head) - 3)
            self._head += view
            end = self._head.find(_HEAD_END, start)
            if end < 0:
                if len(self._head) > _MAX_HEAD_SEEN:
                    self._stop_guarding()
                return
            head = bytes(self._head[:end])
            rest = self._head[end + len(_HEAD_END) :]
            self._head = bytearray()
            self._in_head = False
            self._disarm()
            if _CHUNKED.search(head):
                self._stop_guarding()
                return
            length = _CONTENT_LENGTH.search(head)
            self._body_left = int(length.group(1)) if length else 0
            view = memoryview(bytes(rest))

    def _stop_guarding(self) -> None:
        self._guarding = False
        self._head = bytearray()
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._limits.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._counts.timed_out += 1
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

    __slots__ = ("_counts", "_limits")

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
        self._limits = limits
        self._counts = counts

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        limits, counts = self._limits, self._counts

        loop = asyncio.get_running_loop()

        def guarded() -> asyncio.Protocol:
            # The handler arguments the runner gave its server (access log off, timeouts).
            handler = _JsonErrors(server, loop=loop, **server._kwargs)
            return _Guard(handler, limits, counts)

        self._server = await loop.create_server(
            guarded, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )
