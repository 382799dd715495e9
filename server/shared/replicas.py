"""The replica's background work with Redis: heartbeat, fan-out and the fleet exchange.

Four tasks, each started by :meth:`SharedState.start` (the app's cleanup_ctx)
and each retrying with backoff while Redis is down, so that nothing on the
answer path ever waits for it:

- *heartbeat*: every ``--redis-interval`` (and after each sync) writes this
  replica's :class:`Heartbeat` with a TTL and reads everyone's;
- *publisher*: a webhook or refresh this replica was asked for is published on
  the fleet's channel (``Syncer.requested``);
- *subscriber*: another replica's message asks this replica's syncer for a sync
  with the same trigger. It is asked while ``_relaying`` is set, so that the
  request is not published again: no message ever loops. A pin or unpin made
  at any replica is kept in Redis and announced the same way; each replica
  applies it through its own syncer (which checks the commit validates here),
  and every heartbeat compares the kept pin with its own, so a replica that
  missed a message or restarted catches up;
- *fleet exchange*: this replica's sightings (from a bounded buffer) are written
  to Redis, rows older than ``--fleet-ttl`` are swept, and rows other replicas
  wrote since the last pull are merged into the local fleet table.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..base.clock import Moment
from ..base.errors import ConfigServerError, PinUnreadable
from ..base.tasks import cancel_and_wait, guarded_task
from ..git.pin_store import Pin
from ..ops.fleet import FleetKey, FleetTable, Sighting, sighting_key
from ..sync.freshness import freshness
from ..sync.state import SyncTrigger
from ..sync.syncer import Syncer
from .health import Health
from .peers import KEY_TTL_INTERVALS, Heartbeat
from .rows import SightingBuffer, decode_row, encode_row, row_id
from .target import DELIVERY_TTL, Keys, RedisTarget

log = logging.getLogger("server.shared")

# Only what a person or a git host asked for is fanned out; every replica polls on its own.
FANNED_OUT = frozenset({SyncTrigger.WEBHOOK, SyncTrigger.MANUAL})
# A webhook waits this long at most for the fleet-wide delivery check, then checks locally.
DELIVERY_TIMEOUT = 0.5
# A slow Redis fails a call after this long (then it counts as down), never hangs a task.
SOCKET_TIMEOUT = 2.0
# What stopping the shared-state tasks may take at most, whatever Redis does.
STOP_TIMEOUT = 3.0
MIN_BACKOFF = 0.2
MAX_BACKOFF = 5.0
# Fan-out messages waiting while Redis is away: one is as good as many (syncs coalesce).
OUTBOX = 8
# A pull re-reads rows seen this long before the last pull: rows are written up to one
# interval after their worker was seen, and replicas' clocks differ a little.
PULL_OVERLAP_INTERVALS = 3
PULL_OVERLAP_SECONDS = 30.0

# Atomic, so that a row another replica just refreshed is never deleted with the old score.
_SWEEP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('HDEL', KEYS[2], unpack(ids))
end
return #ids
"""

Errors = (RedisError, OSError, TimeoutError)


class SharedState:
    """What one replica shares with the others; only the leader process has one."""

    def __init__(
        self,
        *,
        target: RedisTarget,
        syncer: Syncer,
        fleet: FleetTable,
        started: Moment,
        stale_after: float,
    ) -> None:
        self.target = target
        self.keys = Keys(target.namespace)
        self.health = Health(target.password)
        self.buffer = SightingBuffer(fleet.capacity)
        self.peers: dict[str, Heartbeat] = {}
        self.subscribed = False
        self.published = 0
        self.received = 0
        self._syncer = syncer
        self._fleet = fleet
        self._started = started
        self._stale_after = stale_after
        # redis-py types each asyncio method as "value or awaitable" (shared with the
        # blocking client), which mypy cannot await: the client is Any here.
        self._client: Any = None
        self._relaying = False
        self._outbox: collections.deque[SyncTrigger] = collections.deque(maxlen=OUTBOX)
        self._outbox_ready = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pulled_at: float | None = None
        self._was_subscribed = False
        self._stopping = False
        # A pin made here that Redis does not hold yet: (the pin or None for unpinned,).
        self._pin_out: tuple[Pin | None] | None = None
        self._pin_applying: asyncio.Task[None] | None = None
        self._pin_refused: str | None = None  # a shared pin this replica could not apply
        self.pin_problem: str | None = None

    # -- lifecycle (the app's cleanup_ctx) --

    def start(self) -> None:
        tls: dict[str, Any] = {"ssl_ca_certs": self.target.ca_file} if self.target.ca_file else {}
        self._client = Redis.from_url(
            self.target.url,
            password=self.target.password,
            **tls,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            # The tasks retry with their own backoff; a call fails fast and says so.
            retry=Retry(NoBackoff(), 0),
            # Seen in CLIENT LIST; Redis refuses blanks and control characters in it.
            client_name=re.sub(r"[^!-~]", "_", f"lmcache-config-server:{self.target.replica}"),
        )
        self._syncer.requested.append(self._requested)
        self._syncer.pin_made.append(self._pin_made)
        self._syncer.listeners.append(self._beat_now.set)
        self._fleet.on_sighting = self.buffer.offer
        for name, step, pause in (
            ("heartbeat", self._heartbeat, self._until_next_beat),
            ("subscriber", self._subscribe, None),
            ("publisher", self._publish, None),
            ("fleet exchange", self._exchange_fleet, self._interval),
        ):
            guarded_task(
                self._forever(name, step, pause),
                name=f"shared {name}",
                log=log,
                tasks=self._tasks,
                on_crash=self._crash_reporter(name),
            )

    def _crash_reporter(self, name: str) -> Callable[[BaseException], None]:
        return lambda error: self.health.failed(f"{name} task crashed", error)

    async def stop(self) -> None:
        self._stopping = True
        self._fleet.on_sighting = None
        with contextlib.suppress(ValueError):
            self._syncer.requested.remove(self._requested)
        with contextlib.suppress(ValueError):
            self._syncer.listeners.remove(self._beat_now.set)
        try:
            # Bounded: redis-py can turn a cancellation into a connection error, which a
            # task would take for Redis being down; shutdown must never wait on Redis.
            await asyncio.wait_for(cancel_and_wait(self._tasks), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("shared-state tasks did not stop within %gs; leaving them", STOP_TIMEOUT)
        client, self._client = self._client, None
        if client is None:
            return
        # A replica that stops says so at once, rather than going stale for the others.
        with contextlib.suppress(*Errors):
            await asyncio.wait_for(client.delete(self.keys.replica(self.target.replica)), 1.0)
        with contextlib.suppress(*Errors):
            await asyncio.wait_for(client.aclose(), 1.0)

    async def _forever(
        self,
        what: str,
        step: Callable[[], Awaitable[None]],
        pause: Callable[[], Awaitable[None]] | None,
    ) -> None:
        backoff = MIN_BACKOFF
        while not self._stopping:
            try:
                await step()
            except Errors as exc:
                if self._stopping:  # the error of a call cut by stop(), not Redis being down
                    return
                self.health.failed(what, exc)
                # Jitter, so that replicas cut off together do not reconnect in step.
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = MIN_BACKOFF
            if pause is not None:
                await pause()

    async def _interval(self) -> None:
        await asyncio.sleep(self.target.interval)

    async def _until_next_beat(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._beat_now.wait(), self.target.interval)
        self._beat_now.clear()

    # -- heartbeat --

    def own_heartbeat(self) -> Heartbeat:
        state = self._syncer.state
        fresh = freshness(
            state, started=self._started, stale_after=self._stale_after, now=Moment.now()
        )
        return Heartbeat(
            replica=self.target.replica,
            serving=self._syncer.holder.served_sha,
            tip=state.tip,
            last_success_at=state.last_success_at,
            sync_stale=fresh.stale,
            heartbeat_at=time.time(),
        )

    async def _heartbeat(self) -> None:
        client, keys = self._client, self.keys
        ttl_ms = int(KEY_TTL_INTERVALS * self.target.interval * 1000)
        await client.set(
            keys.replica(self.target.replica), self.own_heartbeat().encode(), px=ttl_ms
        )
        names = [name async for name in client.scan_iter(match=keys.replica_pattern, count=200)]
        values: list[str | None] = await client.mget(names) if names else []
        peers: dict[str, Heartbeat] = {}
        for raw in values:
            beat = Heartbeat.decode(raw) if raw is not None else None
            if beat is not None:
                peers[beat.replica] = beat
        self.peers = peers
        if self._pin_out is None:  # a pin of our own goes out first; then Redis decides
            self._reconcile_pin(await client.get(keys.pin))
        self.health.succeeded()

    # -- fan-out --

    def _requested(self, trigger: SyncTrigger) -> None:
        """From ``Syncer.request_sync``: publish a webhook or refresh asked of this replica."""
        if self._relaying or trigger not in FANNED_OUT:
            return
        self._outbox.append(trigger)
        self._outbox_ready.set()

    async def _publish(self) -> None:
        if not self._outbox and self._pin_out is None:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
        if self._pin_out is not None:
            (pin,) = self._pin_out
            kept = _kept_pin(pin)
            await self._client.set(self.keys.pin, kept)
            await self._client.publish(
                self.keys.channel, json.dumps({"from": self.target.replica, "pin": kept})
            )
            if self._pin_out == (pin,):  # not replaced by a newer one meanwhile
                self._pin_out = None
        while self._outbox:
            message = json.dumps({"from": self.target.replica, "trigger": self._outbox[0].value})
            await self._client.publish(self.keys.channel, message)
            self._outbox.popleft()  # only once sent: a failed one waits for Redis
            self.published += 1

    async def _subscribe(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.channel)
            self.subscribed = True
            if self._was_subscribed:
                # Messages sent while we were cut off are lost: fetch once to catch up.
                log.info("fan-out channel subscribed again; syncing once to catch up")
                self._syncer.request_sync(SyncTrigger.POLL)
            self._was_subscribed = True
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._received(message["data"])
        finally:
            self.subscribed = False
            with contextlib.suppress(*Errors):
                await asyncio.wait_for(pubsub.aclose(), 1.0)

    def _received(self, data: object) -> None:
        try:
            message = json.loads(str(data))
            sender = str(message["from"])
            if "pin" in message:
                if sender != self.target.replica:
                    self._reconcile_pin(str(message["pin"]))
                return
            trigger = SyncTrigger(message["trigger"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed message on the fan-out channel")
            return
        if sender == self.target.replica or trigger not in FANNED_OUT:
            return  # our own: this replica is syncing already
        self.received += 1
        self._relaying = True
        try:
            self._syncer.request_sync(trigger)
        finally:
            self._relaying = False

    # -- the emergency pin --

    def _pin_made(self, pin: Pin | None) -> None:
        """From the syncer: an operator pinned or unpinned at this replica; share it."""
        self._pin_out = (pin,)
        self._pin_refused = None
        self._outbox_ready.set()

    def _reconcile_pin(self, raw: str | None) -> None:
        """Make this replica's pin the one Redis keeps: ``raw`` is what it keeps (a pin, or
        the mark an unpin leaves), None when it keeps nothing."""
        current = self._syncer.state.pin
        if raw is None:
            # Nothing kept: no pin was ever made, or Redis lost it (a restart without
            # persistence). Never taken as an unpin: a pin of ours is shared again.
            if current is not None:
                self._pin_made(current)
            return
        try:
            record = json.loads(raw)
            wanted = None if record.get("unpinned") else Pin.from_json(record)
        except (ValueError, AttributeError, PinUnreadable):
            self.pin_problem = "the pin kept in Redis is unreadable; this replica's stands"
            return
        if (wanted is None and current is None) or (
            wanted is not None and current is not None and wanted.commit == current.commit
        ):
            self.pin_problem = None
            return
        if wanted is not None and wanted.commit == self._pin_refused:
            return  # refused here before: said once, in pin_problem and the log
        if self._pin_applying is not None and not self._pin_applying.done():
            return
        self._pin_applying = guarded_task(
            self._apply_pin(wanted), name="shared pin", log=log, tasks=self._tasks
        )

    async def _apply_pin(self, wanted: Pin | None) -> None:
        try:
            if wanted is None:
                await self._syncer.unpin(by="another replica", announce=False)
                log.warning("unpinned: another replica was unpinned (shared through Redis)")
            else:
                await self._syncer.pin(
                    wanted.commit, by=wanted.by, reason=wanted.reason, announce=False
                )
            self.pin_problem = None
        except ConfigServerError as exc:
            if wanted is not None:
                self._pin_refused = wanted.commit
            self.pin_problem = f"the shared pin could not be applied here: {exc.message}"
            log.error("%s", self.pin_problem)

    # -- webhook replay protection --

    async def first_delivery(self, delivery_id: str) -> bool | None:
        """Whether no replica has seen this delivery id; None when Redis cannot say now."""
        if not delivery_id or self._client is None or not self.health.available:
            return None  # down: the local check answers, without waiting for Redis
        try:
            created = await asyncio.wait_for(
                self._client.set(self.keys.delivery(delivery_id), "1", nx=True, ex=DELIVERY_TTL),
                DELIVERY_TIMEOUT,
            )
        except Errors as exc:
            self.health.failed("webhook delivery check", exc)
            return None
        return bool(created)

    # -- the fleet --

    async def _exchange_fleet(self) -> None:
        rows = self.buffer.take()
        if rows:
            try:
                await self._push(rows)
            except Errors:
                self.buffer.restore(rows)  # sent next time, unless newer ones came meanwhile
                raise
        await self._client.eval(
            _SWEEP,
            2,
            self.keys.fleet_seen,
            self.keys.fleet_rows,
            time.time() - self.target.fleet_ttl,
        )
        await self._pull()

    async def _push(self, rows: list[tuple[FleetKey, Sighting]]) -> None:
        keys, ttl = self.keys, int(self.target.fleet_ttl) + 1
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(keys.fleet_rows, mapping={row_id(key): encode_row(s) for key, s in rows})
        pipe.zadd(keys.fleet_seen, {row_id(key): s.seen_at for key, s in rows})
        # The whole fleet's rows go with the last replica that wrote them.
        pipe.expire(keys.fleet_rows, ttl)
        pipe.expire(keys.fleet_seen, ttl)
        await pipe.execute()

    async def _pull(self) -> None:
        pulled_at, keys = time.time(), self.keys
        since: float | str = "-inf"
        if self._pulled_at is not None:
            overlap = PULL_OVERLAP_INTERVALS * self.target.interval + PULL_OVERLAP_SECONDS
            since = self._pulled_at - overlap
        ids: list[str] = await self._client.zrevrangebyscore(
            keys.fleet_seen, "+inf", since, start=0, num=self._fleet.capacity
        )
        if ids:
            values: list[str | None] = await self._client.hmget(keys.fleet_rows, ids)
            oldest = pulled_at - self.target.fleet_ttl
            theirs = [
                sighting
                for raw in values
                if raw is not None
                and (sighting := decode_row(raw)) is not None
                and sighting.replica != self.target.replica
                and sighting.seen_at >= oldest
            ]
            theirs.sort(key=lambda sighting: sighting.seen_at)  # the table is oldest first
            self._fleet.merge([(sighting_key(s), s) for s in theirs], pass_on=True)
        self._pulled_at = pulled_at

    # -- what /status and the dashboard show --

    def status_json(self, served: str | None) -> dict[str, Any]:
        now, own = time.time(), self.own_heartbeat()
        beats = {**self.peers, own.replica: own}
        return {
            "replica": own.replica,
            "replicas": [
                beats[name].as_json(
                    served=served, now=now, interval=self.target.interval, own=own.replica
                )
                for name in sorted(beats)
            ],
            "shared": {
                "backend": "redis",
                "url": self.target.shown_url,
                **self.health.as_json(),
                "subscribed": self.subscribed,
                "fan_out_published": self.published,
                "fan_out_received": self.received,
                "sightings_buffered": len(self.buffer),
                "sightings_dropped": self.buffer.dropped,
                "pin_problem": self.pin_problem,
            },
        }


def _kept_pin(pin: Pin | None) -> str:
    """What Redis keeps: the pin, or after an unpin a mark saying so (a missing key means
    Redis knows nothing, which must not unpin anyone)."""
    if pin is None:
        return json.dumps({"unpinned": True, "at": time.time()})
    return json.dumps(pin.as_json())
