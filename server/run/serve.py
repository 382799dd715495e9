"""Running the app as a process: serve until SIGTERM or SIGINT, then drain and stop.

The entry point of a follower process of ``--workers N`` lives here too, and
is handed to the app factory, so that the process pool never imports what
runs it.

aiohttp's ``run_app`` stops reading from every connection as soon as its
shutdown begins, so a worker whose request body is still uploading would lose
its answer (aio-libs/aiohttp#2298). Here shutdown goes in three steps:

1. close the listener: no new connections;
2. wait (up to ``--shutdown-timeout``) until the requests in flight are
   answered, while their connections keep reading; answers given meanwhile
   carry ``Connection: close``;
3. aiohttp's cleanup: close the connections, then the ``cleanup_ctx``
   generators stop the background work (the sync task and its git thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import resource
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from ..base.errors import SettingsError
from ..base.logs import configure_logging
from ..config.schema import load_schema
from ..processes.pool import shared_generation
from ..processes.role import LEADER, ProcessRole
from ..settings import Settings
from ..sync.state import GenerationCell
from ..web.connections import ConnectionLimits, GuardedSite, usable_connections
from ..web.keys import CONNECTIONS, FOLLOWERS, IN_FLIGHT, SYNC
from .app import create_app
from .tls import tls_context

log = logging.getLogger("server")
workers_log = logging.getLogger("server.workers")

# After the drain: time for responses already handed to aiohttp to be written.
FINAL_WRITE_GRACE = 2.0


def disable_core_dumps() -> None:
    """Set RLIMIT_CORE to 0, soft and hard, for this process and those it starts.

    A core dump holds the process's memory: resolved ``${secret:...}`` values,
    the webhook secret, the git token. With the hard limit 0 too, nothing later
    in the process (or a ``ulimit -c unlimited`` shell's setting) brings them back.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def load_schema_quietly() -> None:
    """Import the installed lmcache package (for its schema) before anything else runs.

    lmcache installs stderr handlers of its own and prints torch warnings while
    it is imported; that would break ``--log-format json`` (one object per
    line). Its import-time chatter is silenced, and its loggers then go through
    ours. The sync task logs which schema is in use.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        load_schema()
    finally:
        logging.disable(previous)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] == "lmcache":
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.WARNING)


def shared_listener(settings: Settings, *, first: bool) -> socket.socket:
    """A listening socket on the port the processes of --workers N share (SO_REUSEPORT).

    Every process binds the same one address (``--host``), so none answers on an
    address the others do not. The ``first`` (the leader, which binds before its
    followers start, so that port 0 becomes a real port they can share) checks
    that nothing listens there yet: SO_REUSEPORT would otherwise let it join
    another server's port and split its traffic.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    address = (settings.host, settings.port)
    if first and settings.port:
        with socket.create_server(address, family=family):
            pass  # raises OSError (address in use) when any process listens there
    return socket.create_server(address, family=family, reuse_port=True)


def listen_problem(host: str, port: int, exc: OSError) -> str:
    """Why the port cannot be listened on, and what to do about it (startup: exit 2)."""
    where = f"cannot listen on {address_text(host, port)}"
    other_port = "pick another port: --port N, LMCACHE_CONFIG_SERVER_PORT=N, or make run PORT=N"
    if exc.errno == errno.EADDRINUSE:
        # Which process holds it is not ours to find out (it may be another user's).
        return f"{where}: the port is already in use (by what is not known here); {other_port}"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges); {other_port}"
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return (
            f"{where}: {host} is not an address of this machine ({exc.strerror}); "
            "set --host (or LMCACHE_CONFIG_SERVER_HOST): 127.0.0.1, or 0.0.0.0 for every address"
        )
    return f"{where}: {exc.strerror or exc}"


def address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listening(make: Callable[[], socket.socket], settings: Settings) -> socket.socket:
    """The socket ``make`` binds; a bind error as a SettingsError that names its cause."""
    try:
        return make()
    except OSError as exc:
        raise SettingsError(listen_problem(settings.host, settings.port, exc)) from None


def _stop_on(signum: int, stop: asyncio.Event) -> None:
    if signum == signal.SIGHUP and not stop.is_set():
        log.info("SIGHUP: draining and stopping (settings and files are read at startup)")
    stop.set()


def single_listener(settings: Settings) -> socket.socket:
    """The listening socket of a server of one process."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    return socket.create_server((settings.host, settings.port), family=family)


async def _ready_or_stopped(ready: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``ready``; False when ``stop`` comes first."""
    waits = [asyncio.create_task(ready.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    return ready.is_set() and not stop.is_set()


async def serve(
    settings: Settings, ssl_context: ssl.SSLContext | None = None, role: ProcessRole = LEADER
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully. Startup errors propagate."""
    disable_core_dumps()  # first: before any secret is read into memory
    load_schema_quietly()
    listener: socket.socket | None = None
    if role.is_leader and settings.workers > 1:
        listener = _listening(lambda: shared_listener(settings, first=True), settings)
        settings = dataclasses.replace(settings, port=listener.getsockname()[1])
        role = dataclasses.replace(role, live=shared_generation())
    elif role.is_leader:
        # Bound before the data dir is taken and git is fetched: a taken port fails at once.
        listener = _listening(lambda: single_listener(settings), settings)
    app = create_app(settings, role, follower_entry=follower_main, on_leader_gone=stop_this_process)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=FINAL_WRITE_GRACE
    )
    try:
        await runner.setup()  # runs the cleanup_ctx startups: the data dir lock, the sync task
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGHUP too: operators send it to reload, a closing terminal sends it; either way
        # the process drains like on SIGTERM instead of dying with answers in flight.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, _stop_on, signum, stop)
        # A follower joins the shared port only once it serves the leader's commit: before,
        # the kernel would hand it workers to answer with 503.
        if not role.is_leader and not await _ready_or_stopped(app[SYNC].first_attempt_done, stop):
            return
        if listener is None:  # a follower joins the leader's port only now
            listener = _listening(lambda: shared_listener(settings, first=False), settings)
        limits = ConnectionLimits(
            max_connections=usable_connections(settings.max_connections),
            header_timeout=settings.header_timeout,
        )
        if limits.max_connections < settings.max_connections:
            log.warning(
                "--max-connections %d lowered to %d: the file descriptor limit allows no more",
                settings.max_connections,
                limits.max_connections,
            )
        site = GuardedSite(
            runner, listener, limits=limits, counts=app[CONNECTIONS], ssl_context=ssl_context
        )
        await site.start()
        if role.is_leader:  # only now: a port that cannot be bound is never said to listen
            host, port = listener.getsockname()[:2]
            scheme = "https" if ssl_context else "http"
            log.info("listening on %s://%s", scheme, address_text(host, port))
        await stop.wait()

        followers = app.get(FOLLOWERS)
        if followers is not None:
            followers.begin_shutdown()  # the followers drain at the same time as this process
        in_flight = app[IN_FLIGHT]
        in_flight.draining = True
        log.info(
            "shutting down: no new connections; finishing %d answer(s) in flight (up to %gs)",
            in_flight.count,
            settings.shutdown_timeout,
        )
        await site.stop()
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await in_flight.wait_idle()
        except TimeoutError:
            log.warning(
                "%d answer(s) still in flight after --shutdown-timeout %gs; closing them",
                in_flight.count,
                settings.shutdown_timeout,
            )
    finally:
        await runner.cleanup()
        if listener is not None:
            listener.close()


def follower_main(
    settings: Settings, link: socket.socket, index: int, live: GenerationCell
) -> None:
    """Entry point of a follower process (run by multiprocessing's spawn)."""
    configure_logging(settings.log_level, settings.log_format, worker=index)
    try:
        context = tls_context(settings.tls_cert, settings.tls_key)
        asyncio.run(serve(settings, context, ProcessRole(index, link, live)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group
        pass
    except SettingsError as exc:  # its message names the cause (listen_problem)
        workers_log.error("worker %d: %s", index, exc.message)
        raise SystemExit(1) from None
    except OSError as exc:  # not a listen error (those are SettingsErrors above)
        workers_log.error("worker %d cannot start: %s", index, exc)
        raise SystemExit(1) from None
    except Exception:  # through our log (redacted, in its format), not multiprocessing's
        workers_log.exception("worker %d failed", index)
        raise SystemExit(1) from None


def stop_this_process() -> None:
    """Begin this process's graceful shutdown, as a SIGTERM from outside would."""
    os.kill(os.getpid(), signal.SIGTERM)
