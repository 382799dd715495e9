"""The leader's side of ``--workers N``: starts the followers, feeds them, restarts them.

The leader is the process the command line starts, and the server as it is
with one process: it holds the data dir, runs the one sync loop (fetch,
validate, build), watches the upstream and answers requests. It listens with
``SO_REUSEPORT`` and starts N-1 followers that listen on the same port, so the
kernel spreads connections over all N. A follower answers from a snapshot of
the commit the leader published (``follower``), so there is one fetch, one
decision about what to serve, and every answer still comes from exactly one
validated commit. A new commit goes live in every process at once: the
followers build it first and hold it staged; the leader then stores its
generation in memory the processes share (``channel`` says how). A follower
that dies is started again after a pause that grows while it keeps dying.
The followers' entry point is handed in by the layer that runs processes
(``run.serve``): this module never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import shutil
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

from ..base.errors import ConfigServerError, NotReady
from ..base.tasks import cancel_and_wait, guarded_task
from ..config.snapshot import Snapshot
from ..ops.fleet import FleetTable
from ..ops.metrics_env import remove_old_metrics
from ..settings import Settings
from ..shared.replicas import SharedState
from ..sync.state import GenerationCell
from ..sync.syncer import Syncer
from .channel import (
    SIGHTINGS_INTERVAL,
    Channel,
    DeliveryAnswered,
    DeliveryWanted,
    Following,
    Message,
    PinAnswered,
    PinWanted,
    Prepare,
    Refreshed,
    RefreshWanted,
    Served,
    SharedStatus,
    Sightings,
    Stage,
    Staged,
    SyncWanted,
)

log = logging.getLogger("server.workers")

# A follower that dies is started again after this pause, doubled while it keeps dying.
RESTART_PAUSE = 1.0
MAX_RESTART_PAUSE = 60.0
# A follower that ran this long before dying is restarted after the shortest pause.
HEALTHY_RUN = 60.0
# Beyond --shutdown-timeout: time for a follower to close its connections and exit.
EXIT_GRACE = 5.0
# How long a publish waits for the followers to build the commit. One that takes longer
# serves the old commit until it has built it, and is not waited for again until then:
# one stuck process must not hold every commit back.
STAGE_TIMEOUT = 30.0

# spawn, not fork: the leader has threads (git, watchdog) that a fork would copy half-way.
_SPAWN = multiprocessing.get_context("spawn")

# A follower process's entry point: (settings, its end of the socket pair, its index, the
# generation cell the processes share).
FollowerEntry = Callable[[Settings, socket.socket, int, GenerationCell], None]


def shared_generation() -> GenerationCell:
    """The cell the processes of one replica read the live generation from (shared memory,
    handed to each follower when it is spawned)."""
    cell: GenerationCell = _SPAWN.RawValue(ctypes.c_uint64, 0)
    return cell


@dataclasses.dataclass(kw_only=True)
class _Follower:
    index: int
    process: multiprocessing.process.BaseProcess
    started_at: float
    channel: Channel | None = None
    restarts: int = 0
    following: Following | None = None
    # Set when it did not stage a commit in time: not waited for until it catches up.
    lagging: bool = False
    staging: asyncio.Future[Staged] | None = None


class FollowerPool:
    """The leader's followers: starts them, feeds them, relays their requests, restarts them."""

    def __init__(
        self,
        *,
        settings: Settings,
        entry: FollowerEntry,
        syncer: Syncer,
        fleet: FleetTable,
        metrics_dir: Path,
        live: GenerationCell,
        shared: SharedState | None = None,
    ) -> None:
        self._settings = settings  # handed to each follower, over a pipe
        self._entry = entry
        self._syncer = syncer
        self._fleet = fleet
        self._metrics_dir = metrics_dir
        self._live = live
        self._shared = shared  # --redis: its view is relayed to the followers' pages
        self._staging: int | None = None  # the generation being staged
        self._followers: dict[int, _Follower] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

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
        remove_old_metrics(self._metrics_dir)  # the data dir lock is ours by now
        self._fleet.share()
        self._syncer.listeners.append(self._broadcast_served)
        self._syncer.stage_elsewhere = self.stage
        self._syncer.building_elsewhere = self._prepare
        for index in range(1, self._settings.workers):
            self._start_follower(index, restarts=0)
        self._spawn_task(self._share_sightings(), "fleet exchange")

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
        await cancel_and_wait(self._tasks)
        with contextlib.suppress(ValueError):
            self._syncer.listeners.remove(self._broadcast_served)
        self._syncer.stage_elsewhere = None
        self._syncer.building_elsewhere = None
        shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _spawn_task(self, coro: Coroutine[object, object, None], name: str) -> None:
        guarded_task(coro, name=name, log=log, tasks=self._tasks)

    def _start_follower(self, index: int, *, restarts: int) -> None:
        ours, theirs = socket.socketpair()
        process = _SPAWN.Process(
            target=self._entry,
            args=(self._settings, theirs, index, self._live),
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
        self._spawn_task(self._serve_follower(follower, ours), f"worker {index} channel")

    def _served(self) -> Served:
        snapshot = self._syncer.holder.current
        return Served(
            generation=self._syncer.generation,
            sha=snapshot.commit.sha if snapshot else None,
            state=self._syncer.state,
            secrets=snapshot.resolved_secrets() if snapshot else {},
        )

    def _prepare(self, sha: str) -> None:
        """The leader starts to build ``sha``: the followers build it at the same time."""
        self._send_to_followers(Prepare(sha), skip=None)

    async def stage(self, snapshot: Snapshot, generation: int) -> None:
        """Have every follower build ``snapshot``'s commit and hold it ready; returns once
        all have (or STAGE_TIMEOUT passed). The syncer then makes it live everywhere."""
        loop = asyncio.get_running_loop()
        message = Channel.encode(
            Stage(
                generation=generation,
                sha=snapshot.commit.sha,
                secrets=snapshot.resolved_secrets(),
            )
        )
        waiting: dict[int, asyncio.Future[Staged]] = {}
        for follower in self._followers.values():
            if follower.channel is None:
                continue
            follower.channel.send(message)
            if not follower.lagging:
                follower.staging = waiting[follower.index] = loop.create_future()
        if not waiting:
            return
        started = time.monotonic()
        self._staging = generation
        try:
            done, late = await asyncio.wait(waiting.values(), timeout=STAGE_TIMEOUT)
        finally:
            self._staging = None
            for index in waiting:
                self._followers[index].staging = None
        for index, future in waiting.items():
            if future in late:
                self._followers[index].lagging = True
                log.error(
                    "worker %d has not built %s after %.0fs; it goes live without it (that "
                    "worker serves its previous commit until it has)",
                    index,
                    snapshot.commit.sha[:12],
                    STAGE_TIMEOUT,
                )
            elif (error := future.result().error) is not None:
                log.error(
                    "worker %d could not stage %s: %s", index, snapshot.commit.sha[:12], error
                )
        log.debug(
            "staged %s in %d worker(s) in %.1f ms",
            snapshot.commit.sha[:12],
            len(done),
            (time.monotonic() - started) * 1000,
        )

    def _broadcast_served(self) -> None:
        self._send_to_followers(self._served(), skip=None)

    async def _share_sightings(self) -> None:
        while True:
            await asyncio.sleep(SIGHTINGS_INTERVAL)
            rows = self._fleet.take_fresh()
            if rows:
                self._send_to_followers(Sightings(rows), skip=None)
            if self._shared is not None:
                view = self._shared.status_json(self._syncer.holder.served_sha)
                self._send_to_followers(SharedStatus(view), skip=None)

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
            if follower.staging is not None and not follower.staging.done():
                follower.staging.set_result(Staged(generation=-1, error="the worker is gone"))
            if channel is not None:
                channel.close()
            else:
                sock.close()
        await self._follower_gone(follower)

    def _handle(self, follower: _Follower, channel: Channel, message: Message) -> None:
        if isinstance(message, SyncWanted):
            self._syncer.request_sync(message.trigger)
        elif isinstance(message, RefreshWanted):
            self._spawn_task(self._relay_refresh(channel, message), "relayed refresh")
        elif isinstance(message, PinWanted):
            self._spawn_task(self._relay_pin(channel, message), "relayed pin")
        elif isinstance(message, Sightings):
            self._fleet.merge(message.rows)
            self._send_to_followers(message, skip=follower.index)
        elif isinstance(message, DeliveryWanted):
            self._spawn_task(self._check_delivery(channel, message), "delivery check")
        elif isinstance(message, Staged):
            staging = follower.staging
            if message.generation == self._staging and staging is not None and not staging.done():
                staging.set_result(message)
            if message.error is None and message.generation >= self._syncer.generation:
                follower.lagging = False  # caught up
        elif isinstance(message, Following):
            follower.following = message
            if message.generation == self._syncer.generation and message.error is None:
                follower.lagging = False
        else:
            log.warning("worker %d sent an unexpected %s", follower.index, type(message).__name__)

    async def _check_delivery(self, channel: Channel, wanted: DeliveryWanted) -> None:
        shared = self._shared
        first = await shared.first_delivery(wanted.delivery) if shared is not None else None
        channel.send(DeliveryAnswered(token=wanted.token, first=first))

    async def _relay_refresh(self, channel: Channel, wanted: RefreshWanted) -> None:
        try:
            record = await self._syncer.refresh(wanted.trigger)
        except NotReady as exc:
            channel.send(Refreshed(token=wanted.token, record=None, error=exc.message))
            return
        channel.send(Refreshed(token=wanted.token, record=record))

    async def _relay_pin(self, channel: Channel, wanted: PinWanted) -> None:
        """A pin or unpin that reached a follower: the sync loop decides; errors go back."""
        try:
            if wanted.rev is None:
                change = await self._syncer.unpin(by=wanted.by, reason=wanted.reason)
            else:
                change = await self._syncer.pin(wanted.rev, by=wanted.by, reason=wanted.reason)
        except ConfigServerError as exc:  # a 404, a 409...: the follower answers with it
            channel.send(PinAnswered(token=wanted.token, change=None, error=exc))
            return
        except Exception:  # the follower must get an answer whatever happened
            log.exception("a pin relayed by a worker failed")
            failed = ConfigServerError("the leader could not pin; see the server log")
            channel.send(PinAnswered(token=wanted.token, change=None, error=failed))
            return
        channel.send(PinAnswered(token=wanted.token, change=change))

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
