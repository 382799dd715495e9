"""``--workers N``: one replica as N processes answering on one port.

The leader is the process the CLI starts, and the server as it is with one
process: it holds the data dir, runs the one sync loop (fetch, validate,
build), watches the upstream and answers requests. It listens with
``SO_REUSEPORT`` and starts N-1 followers that listen on the same port, so the
kernel spreads connections over all N. A follower answers from a snapshot of
the commit the leader published: it reads that commit from the shared mirror
(read-only, on its own git thread) and never fetches, so there is one fetch,
one decision about what to serve, and every answer still comes from exactly
one validated commit.

Leader and followers talk over a socket pair, one pickled message at a time:

- leader to follower: ``Served`` after every sync (the publish generation,
  the commit, and the sync state that /status, /metrics and the dashboard
  show), ``Refreshed`` (the answer to a relayed refresh) and ``Sightings``;
- follower to leader: ``SyncWanted`` (a webhook reached the follower),
  ``RefreshWanted`` (``/admin/refresh`` did) and ``Sightings`` (the workers it
  answered, so that every process shows the whole fleet table).

A follower whose leader is gone shuts down: it could only go on serving a
commit that no longer advances. A follower that dies is started again by the
leader after a pause that grows while it keeps dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

from .errors import NotReady, SettingsError
from .fleet import FleetKey, FleetTable, Sighting
from .lmcache_schema import load_schema
from .settings import Settings
from .snapshot import SnapshotHolder
from .sync import Rejection, Syncer, SyncRecord, SyncState

log = logging.getLogger(__name__)

# How often the processes exchange the fleet sightings they recorded.
SIGHTINGS_INTERVAL = 0.5
# A follower that dies is started again after this pause, doubled while it keeps dying.
RESTART_PAUSE = 1.0
MAX_RESTART_PAUSE = 60.0
# A follower that ran this long before dying is restarted after the shortest pause.
HEALTHY_RUN = 60.0
# A follower that could not take up the leader's commit tries again this often.
BUILD_RETRY = 5.0
# Beyond --shutdown-timeout: time for a follower to close its connections and exit.
EXIT_GRACE = 5.0
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_HEADER = struct.Struct("!I")
# spawn, not fork: the leader has threads (git, watchdog) that a fork would copy half-way.
_SPAWN = multiprocessing.get_context("spawn")


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """Which process of the replica this is: 0 is the leader."""

    index: int = 0
    # A follower's end of its socket pair to the leader; None in the leader.
    leader_link: socket.socket | None = None

    @property
    def is_leader(self) -> bool:
        return self.leader_link is None


LEADER = WorkerRole()


@dataclasses.dataclass(frozen=True)
class Served:
    generation: int
    sha: str | None
    state: SyncState


@dataclasses.dataclass(frozen=True)
class SyncWanted:
    trigger: str


@dataclasses.dataclass(frozen=True)
class RefreshWanted:
    token: int
    trigger: str


@dataclasses.dataclass(frozen=True)
class Refreshed:
    token: int
    record: SyncRecord | None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Sightings:
    rows: list[tuple[FleetKey, Sighting]]


@dataclasses.dataclass(frozen=True)
class Following:
    """A follower's report after each attempt to take up the leader's commit."""

    generation: int
    sha: str | None
    error: str | None = None


Message = Served | SyncWanted | RefreshWanted | Refreshed | Sightings | Following


class Channel:
    """Length-prefixed pickles over a socket pair between two processes of one replica."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @staticmethod
    def encode(message: Message) -> bytes:
        """A message as sent: made once when it goes to several followers."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        return _HEADER.pack(len(data)) + data

    def send(self, message: Message | bytes) -> None:
        """Queue one message (or its encoding); never blocks (the transport buffers what the
        peer has not read)."""
        if not self._writer.is_closing():
            self._writer.write(message if isinstance(message, bytes) else self.encode(message))

    async def receive(self) -> Message | None:
        """The next message, or None once the other process has gone."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            data = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        # Only this replica's own processes hold the other end of the pair.
        message: Message = pickle.loads(data)  # noqa: S301
        return message

    def close(self) -> None:
        self._writer.close()


# -- metrics files ---------------------------------------------------------


def prepare_metrics_dir(settings: Settings) -> None:
    """Point prometheus_client's multiprocess mode at a directory of this run's own.

    Called by the CLI before prometheus_client is imported (it picks its value
    class at import). The directory is per leader pid, so a second server that
    is refused the data dir lock cannot disturb the running one's files; the
    leader deletes older runs' directories once it holds the lock.
    """
    if settings.workers < 2:
        # One process counts in memory, whatever the environment says.
        os.environ.pop(METRICS_ENV, None)
        return
    # Always a directory of our own, never an inherited one: it is deleted on stop.
    run_dir = settings.metrics_dir / f"run-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot create {run_dir} for --workers: {exc.strerror}") from None
    os.environ[METRICS_ENV] = str(run_dir)


def metrics_dir_in_use() -> Path:
    path = os.environ.get(METRICS_ENV)
    if not path:
        raise SettingsError("--workers above 1 is set up by the command line: run `serve`")
    return Path(path)


def _remove_old_metrics(current: Path) -> None:
    for old in current.parent.glob("run-*"):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


# -- the leader's side -----------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class _Follower:
    index: int
    process: multiprocessing.process.BaseProcess
    started_at: float
    channel: Channel | None = None
    restarts: int = 0
    following: Following | None = None


class WorkerPool:
    """The leader's followers: starts them, feeds them, relays their requests, restarts them."""

    def __init__(self, settings: Settings, syncer: Syncer, fleet: FleetTable) -> None:
        self._settings = settings
        self._syncer = syncer
        self._fleet = fleet
        self._followers: dict[int, _Follower] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._metrics_dir = metrics_dir_in_use()

    def alive(self) -> list[dict[str, object]]:
        """The followers, for /status."""
        return [
            {
                "worker": follower.index,
                "pid": follower.process.pid,
                "alive": follower.process.is_alive(),
                "restarts": follower.restarts,
                "serving": follower.following.sha if follower.following else None,
                "behind": follower.following is None
                or follower.following.generation != self._syncer.generation,
                "error": follower.following.error if follower.following else None,
            }
            for follower in sorted(self._followers.values(), key=lambda f: f.index)
        ]

    async def start(self) -> None:
        _remove_old_metrics(self._metrics_dir)  # the data dir lock is ours by now
        self._fleet.share()
        self._syncer.listeners.append(self._broadcast_served)
        for index in range(1, self._settings.workers):
            self._start_follower(index, restarts=0)
        self._spawn_task(self._share_sightings())

    def begin_shutdown(self) -> None:
        """Ask every follower to drain and stop (SIGTERM), as the leader itself does."""
        self._stopping = True
        for follower in self._followers.values():
            if follower.process.is_alive():
                follower.process.terminate()

    async def stop(self) -> None:
        self.begin_shutdown()
        deadline = time.monotonic() + self._settings.shutdown_timeout + EXIT_GRACE
        loop = asyncio.get_running_loop()
        for follower in self._followers.values():
            wait = max(0.0, deadline - time.monotonic())
            await loop.run_in_executor(None, follower.process.join, wait)
            if follower.process.is_alive():
                log.warning("worker %d did not stop in time; killing it", follower.index)
                follower.process.kill()
                await loop.run_in_executor(None, follower.process.join, EXIT_GRACE)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(ValueError):
            self._syncer.listeners.remove(self._broadcast_served)
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _spawn_task(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_follower(self, index: int, *, restarts: int) -> None:
        ours, theirs = socket.socketpair()
        process = _SPAWN.Process(
            target=follower_main,
            args=(self._settings, theirs, index),
            name=f"lmcache-config-server worker {index}",
        )
        try:
            process.start()  # settings go over a pipe: secrets never on a command line
        except Exception:
            ours.close()
            raise
        finally:
            theirs.close()
        follower = _Follower(
            index=index, process=process, started_at=time.monotonic(), restarts=restarts
        )
        self._followers[index] = follower
        log.info("started worker %d (pid %s)", index, process.pid)
        self._spawn_task(self._serve_follower(follower, ours))

    def _served(self) -> Served:
        snapshot = self._syncer.holder.current
        return Served(
            generation=self._syncer.generation,
            sha=snapshot.commit.sha if snapshot else None,
            state=self._syncer.state,
        )

    def _broadcast_served(self) -> None:
        self._send_to_followers(self._served(), skip=None)

    async def _share_sightings(self) -> None:
        while True:
            await asyncio.sleep(SIGHTINGS_INTERVAL)
            rows = self._fleet.take_fresh()
            if rows:
                self._send_to_followers(Sightings(rows), skip=None)

    def _send_to_followers(self, message: Message, *, skip: int | None) -> None:
        encoded = Channel.encode(message)
        for follower in self._followers.values():
            if follower.channel is not None and follower.index != skip:
                follower.channel.send(encoded)

    async def _serve_follower(self, follower: _Follower, sock: socket.socket) -> None:
        channel: Channel | None = None
        try:
            channel = await Channel.open(sock)
            follower.channel = channel
            channel.send(self._served())
            # A follower started (or restarted) now gets the whole fleet table once.
            channel.send(Sightings(self._fleet.all_rows()))
            while (message := await channel.receive()) is not None:
                try:
                    self._handle(follower, channel, message)
                except Exception:  # one bad message must not cut the follower off
                    log.exception("worker %d: handling its %s failed", follower.index, message)
        except Exception:
            log.exception("worker %d: its channel failed", follower.index)
        finally:
            follower.channel = None
            if channel is not None:
                channel.close()
            else:
                sock.close()
        await self._follower_gone(follower)

    def _handle(self, follower: _Follower, channel: Channel, message: Message) -> None:
        if isinstance(message, SyncWanted):
            self._syncer.request_sync(message.trigger)
        elif isinstance(message, RefreshWanted):
            self._spawn_task(self._relay_refresh(channel, message))
        elif isinstance(message, Sightings):
            self._fleet.merge(message.rows)
            self._send_to_followers(message, skip=follower.index)
        elif isinstance(message, Following):
            follower.following = message
        else:
            log.warning("worker %d sent an unexpected %s", follower.index, type(message).__name__)

    async def _relay_refresh(self, channel: Channel, wanted: RefreshWanted) -> None:
        try:
            record = await self._syncer.refresh(wanted.trigger)
        except NotReady as exc:
            channel.send(Refreshed(token=wanted.token, record=None, error=exc.message))
            return
        channel.send(Refreshed(token=wanted.token, record=record))

    async def _follower_gone(self, follower: _Follower) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, follower.process.join, EXIT_GRACE)
        if follower.process.is_alive():
            # Its channel is gone but it still runs (and holds a place on the port).
            log.error("worker %d lost its channel but still runs; stopping it", follower.index)
            follower.process.kill()
            await loop.run_in_executor(None, follower.process.join, EXIT_GRACE)
        if self._stopping:
            return
        pid = follower.process.pid
        if pid is not None:
            # Imported here: the CLI imports this module before prometheus_client may be.
            from prometheus_client.multiprocess import mark_process_dead  # noqa: PLC0415

            mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
        ran = time.monotonic() - follower.started_at
        restarts = 0 if ran >= HEALTHY_RUN else follower.restarts + 1
        pause = min(RESTART_PAUSE * 2 ** max(0, restarts - 1), MAX_RESTART_PAUSE)
        log.error(
            "worker %d (pid %s) exited with code %s after %.0fs; starting it again in %.0fs",
            follower.index,
            pid,
            follower.process.exitcode,
            ran,
            pause,
        )
        while True:
            await asyncio.sleep(pause)
            if self._stopping:
                return
            try:
                self._start_follower(follower.index, restarts=restarts)
                return
            except Exception:  # e.g. out of processes: keep trying, never give the slot up
                pause = min(pause * 2, MAX_RESTART_PAUSE)
                log.exception(
                    "cannot start worker %d; trying again in %.0fs", follower.index, pause
                )


# -- the follower's side ---------------------------------------------------


class FollowerSyncer(Syncer):
    """Serves what the leader serves: builds each commit it publishes, relays sync requests.

    It shares the leader's mirror read-only and takes no data dir lock; it never
    fetches, never records the last good commit and never checks signatures
    (the leader did, before it served the commit). ``history`` and
    ``snapshot_at`` work as in the leader, on this process's git thread.
    """

    def __init__(
        self,
        settings: Settings,
        holder: SnapshotHolder,
        *,
        link: socket.socket,
        fleet: FleetTable,
        on_leader_gone: Callable[[], None],
    ) -> None:
        super().__init__(settings, holder)
        self._lock = None
        self._signatures = None
        self._link = link
        self._fleet = fleet
        self._on_leader_gone = on_leader_gone
        self._channel: Channel | None = None
        self._refreshes: dict[int, asyncio.Future[Refreshed]] = {}
        self._tokens = itertools.count(1)
        self._latest: Served | None = None  # the leader's latest word
        self._following = asyncio.Lock()

    def _prepare(self) -> None:
        self._schema = load_schema()

    async def _run(self) -> None:
        try:
            await self._follow_leader()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Going on would serve a commit that no longer follows the leader's: stop, and
            # the leader starts a fresh process.
            log.exception("this worker cannot follow the leader; it stops")
        else:
            log.error("the leader process is gone; this worker stops")
        self._on_leader_gone()

    async def _follow_leader(self) -> None:
        await self._in_git_thread(self._prepare)
        channel = self._channel = await Channel.open(self._link)
        self._fleet.share()
        sharing = asyncio.create_task(self._share_sightings(channel))
        retrying = asyncio.create_task(self._retry_failed_builds())
        try:
            while (message := await channel.receive()) is not None:
                if isinstance(message, Served):
                    self._latest = message
                    await self._follow(message)
                elif isinstance(message, Refreshed):
                    waiter = self._refreshes.pop(message.token, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif isinstance(message, Sightings):
                    self._fleet.merge(message.rows)
        finally:
            sharing.cancel()
            retrying.cancel()
            self._channel = None
            channel.close()
            self._fail_refreshes("the leader process is gone")

    async def _retry_failed_builds(self) -> None:
        """Build the leader's commit again while this process is behind it (a pinned ref
        syncs no more, so no new message would come to retry it)."""
        while True:
            await asyncio.sleep(BUILD_RETRY)
            latest = self._latest
            if latest is not None and latest.generation != self.generation:
                await self._follow(latest)

    async def _share_sightings(self, channel: Channel) -> None:
        while True:
            await asyncio.sleep(SIGHTINGS_INTERVAL)
            rows = self._fleet.take_fresh()
            if rows:
                channel.send(Sightings(rows))

    async def _follow(self, served: Served) -> None:
        """Take the leader's sync state; build and swap in its commit when it published anew."""
        async with self._following:  # the message loop and the retry task, one at a time
            if served is self._latest:
                self.state = served.state
            if served.sha is None or served.generation == self.generation:
                return
            error = await self._take_up(served.sha)
            if error is None and served is self._latest:
                self.generation = served.generation
                self.first_attempt_done.set()
            current = self.holder.current
            self._report(
                Following(
                    generation=self.generation,
                    sha=current.commit.sha if current else None,
                    error=error,
                )
            )

    async def _take_up(self, sha: str) -> str | None:
        """Build ``sha`` and serve it; the reason when that fails (keep serving the last)."""
        try:
            outcome = await self._in_git_thread(self._build, sha)
        except Exception as exc:  # retried by _retry_failed_builds
            log.exception("cannot load commit %s that the leader serves", sha[:12])
            return f"cannot load {sha[:12]}: {type(exc).__name__}"
        if isinstance(outcome, Rejection):
            log.error(
                "commit %s, which the leader serves, does not validate here:\n  %s",
                sha[:12],
                "\n  ".join(str(issue) for issue in outcome.issues),
            )
            return f"{sha[:12]} does not validate here ({len(outcome.issues)} error(s))"
        self.holder.current = outcome
        log.info("serving %s, as the leader does", sha[:12])
        return None

    def _report(self, following: Following) -> None:
        if self._channel is not None:
            self._channel.send(following)

    def request_sync(self, trigger: str) -> None:
        if self._channel is not None:
            self._channel.send(SyncWanted(trigger))

    async def refresh(self, trigger: str) -> SyncRecord:
        channel = self._channel
        if channel is None:
            raise NotReady("this worker is not connected to the leader process yet")
        token = next(self._tokens)
        waiter: asyncio.Future[Refreshed] = asyncio.get_running_loop().create_future()
        self._refreshes[token] = waiter
        channel.send(RefreshWanted(token=token, trigger=trigger))
        reply = await waiter
        if reply.record is None:
            raise NotReady(reply.error or "the leader could not sync")
        # The leader sent its Served before this reply, and it was followed on receipt.
        return reply.record

    def _fail_refreshes(self, reason: str) -> None:
        for waiter in self._refreshes.values():
            if not waiter.done():
                waiter.set_exception(NotReady(reason))
        self._refreshes.clear()

    async def stop(self) -> None:
        self._fail_refreshes("this worker is stopping")
        await super().stop()


def follower_main(settings: Settings, link: socket.socket, index: int) -> None:
    """Entry point of a follower process (run by multiprocessing's spawn)."""
    from .cli import tls_context  # noqa: PLC0415 - the CLI imports this module's users
    from .lifecycle import serve  # noqa: PLC0415
    from .logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format, worker=index)
    try:
        asyncio.run(serve(settings, tls_context(settings), WorkerRole(index, link)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group
        pass
    except OSError as exc:
        log.error("worker %d cannot listen on %s:%d: %s", index, settings.host, settings.port, exc)
        raise SystemExit(1) from None
    except Exception:  # through our log (redacted, in its format), not multiprocessing's
        log.exception("worker %d failed", index)
        raise SystemExit(1) from None


def stop_this_process() -> None:
    """Begin this process's graceful shutdown, as a SIGTERM from outside would."""
    os.kill(os.getpid(), signal.SIGTERM)
