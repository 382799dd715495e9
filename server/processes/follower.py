"""A follower's side of ``--workers N``: serve what the leader serves, relay what reaches us.

A follower shares the leader's mirror read-only and takes no data dir lock; it
never fetches, never records the last good commit and never checks
signatures (the leader did, before it served the commit). It composes the
same :class:`~server.sync.builder.SnapshotBuilder` the leader's sync loop
uses, on a thread of its own, to build each commit the leader publishes, with
the secrets the leader resolved (so one commit has one content in every
process). A commit the leader stages is built and held ready; it goes live
when the leader stores its generation in the cell the processes share. A
follower whose leader is gone stops: it could only go on serving a commit
that no longer advances.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..base.errors import NotReady
from ..base.logs import log_event
from ..base.tasks import OneThread, cancel_and_wait, guarded_task
from ..config.snapshot import Snapshot
from ..ops.fleet import FleetTable
from ..sync.builder import SnapshotBuilder
from ..sync.secrets import SentSecrets
from ..sync.state import (
    PinChange,
    Rejection,
    SnapshotHolder,
    SyncRecord,
    SyncState,
    SyncTrigger,
)
from .channel import (
    SIGHTINGS_INTERVAL,
    Channel,
    DeliveryAnswered,
    DeliveryWanted,
    Following,
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

# A webhook at a follower waits this long for the leader's fleet-wide delivery check.
DELIVERY_WAIT = 1.0
# A follower that could not take up the leader's commit tries again this often.
BUILD_RETRY = 5.0


class LeaderFollower:
    """Serves the leader's commits in a follower process; provides ``sync.control.SyncControl``."""

    def __init__(
        self,
        *,
        builder: SnapshotBuilder,
        holder: SnapshotHolder,
        build_thread: OneThread,
        link: socket.socket,
        fleet: FleetTable,
        on_leader_gone: Callable[[], None],
    ) -> None:
        self.holder = holder
        self.state = SyncState()  # the leader's, as it last sent it
        self.first_attempt_done = asyncio.Event()
        self.generation = 0  # of the leader's publish this process serves
        self._builder = builder
        self._thread = build_thread
        self._link = link
        self._fleet = fleet
        self._on_leader_gone = on_leader_gone
        self._task: asyncio.Task[None] | None = None
        self._channel: Channel | None = None
        self._refreshes: dict[int, asyncio.Future[Refreshed]] = {}
        self._pin_answers: dict[int, asyncio.Future[PinAnswered]] = {}
        self._tokens = itertools.count(1)
        # --redis: the leader's view of the replicas, and its answers on webhook deliveries.
        self.shared_view: dict[str, Any] | None = None
        self._deliveries: dict[int, asyncio.Future[bool | None]] = {}
        self._latest: Served | None = None  # the leader's latest word
        self._following = asyncio.Lock()
        self._staged: int | None = None  # the generation last staged here
        # The commit the leader is building, and this process's build of it meanwhile.
        self._prepared: tuple[str, asyncio.Future[Snapshot | None]] | None = None

    # -- lifecycle --

    def start(self) -> None:
        self._task = guarded_task(self._run(), name="leader follower", log=log)

    async def stop(self) -> None:
        self._fail_refreshes("this worker is stopping")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
        await self._thread.run(self._builder.prepare)
        channel = self._channel = await Channel.open(self._link)
        self._fleet.share()
        helpers = [
            guarded_task(self._share_sightings(channel), name="fleet exchange", log=log),
            guarded_task(self._retry_failed_builds(), name="build retry", log=log),
        ]
        try:
            while (message := await channel.receive()) is not None:
                if isinstance(message, Prepare):
                    self._prepare(message.sha)
                elif isinstance(message, Stage):
                    await self._stage(message)
                elif isinstance(message, Served):
                    self._latest = message
                    await self._follow(message)
                elif isinstance(message, Refreshed):
                    waiter = self._refreshes.pop(message.token, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message)
                elif isinstance(message, PinAnswered):
                    answer = self._pin_answers.pop(message.token, None)
                    if answer is not None and not answer.done():
                        answer.set_result(message)
                elif isinstance(message, Sightings):
                    self._fleet.merge(message.rows)
                elif isinstance(message, SharedStatus):
                    self.shared_view = message.view
                elif isinstance(message, DeliveryAnswered):
                    asked = self._deliveries.pop(message.token, None)
                    if asked is not None and not asked.done():
                        asked.set_result(message.first)
        finally:
            await cancel_and_wait(helpers)
            if self._prepared is not None:
                self._prepared[1].cancel()
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

    def _prepare(self, sha: str) -> None:
        """Build ``sha`` while the leader does, with this process's own secrets; ``_stage``
        uses the result only if the leader's secrets turn out the same."""
        if self._prepared is not None and self._prepared[0] == sha:
            return
        self._prepared = (sha, asyncio.ensure_future(self._build_quietly(sha)))

    async def _build_quietly(self, sha: str) -> Snapshot | None:
        """A build the leader may yet reject: nothing to log either way."""
        try:
            outcome = await self._thread.run(self._builder.build, sha)
        except Exception:  # the leader's Stage, if it comes, builds again and says why
            return None
        return outcome if isinstance(outcome, Snapshot) else None

    async def _stage(self, stage: Stage) -> None:
        """Hold the commit the leader is about to publish ready to go live: the one built
        meanwhile when its secrets are the leader's, else built now with the leader's."""
        async with self._following:
            outcome: Snapshot | str | None = None
            prepared, self._prepared = self._prepared, None
            if prepared is not None and prepared[0] == stage.sha:
                early = await prepared[1]
                if early is not None and early.resolved_secrets() == stage.secrets:
                    outcome = early
            if outcome is None:
                outcome = await self._build(stage.sha, stage.secrets)
            if isinstance(outcome, Snapshot):
                self.holder.stage(stage.generation, outcome)
                self._staged = stage.generation
            self._report(Staged(generation=stage.generation, error=_error(outcome)))

    async def _follow(self, served: Served) -> None:
        """Take the leader's sync state; serve its commit when it published anew (staged
        already, as a rule; built now when this process missed the stage)."""
        async with self._following:  # the message loop and the retry task, one at a time
            if served is self._latest:
                self.state = served.state
            # A Served ends the leader's sync: a commit built meanwhile and not staged by now
            # was rejected (or superseded); its snapshot need not be kept.
            self._prepared = None
            self.holder.settle()
            if served.sha is None or served.generation == self.generation:
                return
            if self._staged == served.generation:
                outcome: Snapshot | str | None = None  # live since the leader's store
            else:
                outcome = await self._build(served.sha, served.secrets)
                if isinstance(outcome, Snapshot):
                    self.holder.current = outcome
            error = _error(outcome)
            if error is None:
                log.info("serving %s, as the leader does", served.sha[:12])
                if served is self._latest:
                    self.generation = served.generation
                    self.first_attempt_done.set()
            self._report(
                Following(generation=self.generation, sha=self.holder.served_sha, error=error)
            )

    async def _build(self, sha: str, secrets: dict[str, str]) -> Snapshot | str:
        """``sha``'s snapshot with the leader's secrets; the reason when that fails (this
        process keeps serving the last one)."""
        try:
            outcome = await self._thread.run(self._builder.build, sha, SentSecrets(secrets))
        except Exception as exc:  # retried by _retry_failed_builds
            log.exception("cannot load commit %s that the leader serves", sha[:12])
            return f"cannot load {sha[:12]}: {type(exc).__name__}"
        if isinstance(outcome, Rejection):
            log_event(
                log,
                logging.ERROR,
                "leader_commit_invalid_here",
                {"commit": sha[:12], "errors": [str(issue) for issue in outcome.issues]},
            )
            return f"{sha[:12]} does not validate here ({len(outcome.issues)} error(s))"
        return outcome

    def _report(self, message: Following | Staged) -> None:
        if self._channel is not None:
            self._channel.send(message)

    # -- what the web layer asks (sync.control.SyncControl) --

    def request_sync(self, trigger: SyncTrigger) -> None:
        if self._channel is not None:
            self._channel.send(SyncWanted(trigger))

    async def first_delivery(self, delivery_id: str) -> bool | None:
        """Ask the leader (which asks Redis) whether any replica saw this delivery."""
        channel = self._channel
        if channel is None or not delivery_id:
            return None
        token = next(self._tokens)
        asked: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._deliveries[token] = asked
        channel.send(DeliveryWanted(token=token, delivery=delivery_id))
        try:
            return await asyncio.wait_for(asked, DELIVERY_WAIT)
        except TimeoutError:
            return None  # the local check answers, as when Redis is down
        finally:
            self._deliveries.pop(token, None)

    async def refresh(self, trigger: SyncTrigger) -> SyncRecord:
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

    async def pin(self, rev: str, *, by: str, reason: str) -> PinChange:
        return await self._relay_pin(PinWanted(token=0, rev=rev, by=by, reason=reason))

    async def unpin(self, *, by: str, reason: str = "") -> PinChange:
        return await self._relay_pin(PinWanted(token=0, rev=None, by=by, reason=reason))

    async def _relay_pin(self, wanted: PinWanted) -> PinChange:
        """The leader pins (its sync loop decides what is served); its answer, or its error."""
        channel = self._channel
        if channel is None:
            raise NotReady("this worker is not connected to the leader process yet")
        token = next(self._tokens)
        waiter: asyncio.Future[PinAnswered] = asyncio.get_running_loop().create_future()
        self._pin_answers[token] = waiter
        channel.send(dataclasses.replace(wanted, token=token))
        reply = await waiter
        if reply.error is not None:
            raise reply.error
        if reply.change is None:
            raise NotReady("the leader did not answer the pin")
        # The leader's Served (with the pin) came before this reply, and was followed.
        return reply.change

    def _fail_refreshes(self, reason: str) -> None:
        for waiter in self._refreshes.values():
            if not waiter.done():
                waiter.set_exception(NotReady(reason))
        self._refreshes.clear()
        for answer in self._pin_answers.values():
            if not answer.done():
                answer.set_exception(NotReady(reason))
        self._pin_answers.clear()


def _error(outcome: Snapshot | str | None) -> str | None:
    return outcome if isinstance(outcome, str) else None


class RelayedShared:
    """A follower's :class:`~server.shared.view.SharedView`: the leader's, over the channel."""

    def __init__(self, follower: LeaderFollower) -> None:
        self._follower = follower

    def status_json(self, served: str | None) -> dict[str, Any]:
        view = self._follower.shared_view
        if view is None:
            return {"shared": {"backend": "redis", "available": False,
                               "error": "not received from the leader process yet"}}  # fmt: skip
        return view

    async def first_delivery(self, delivery_id: str) -> bool | None:
        return await self._follower.first_delivery(delivery_id)
