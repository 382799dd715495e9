"""Layer ``shared``: what several replicas of one fleet share, through Redis (``--redis``).

Fan-out of webhooks and refreshes (pub/sub), fleet-wide webhook replay
protection, the replicas' heartbeats and the whole fleet's sightings. Only
the leader process of a replica talks to Redis (its followers relay to it).
Redis is never on the answer path: every call to it runs in a background task
(or, for a webhook's delivery id, under a short timeout with the local check
as the fallback), and a Redis that is down only means replicas poll as they
would alone. Never imports aiohttp. May import ``ops``, ``sync``,
``settings``, ``git``, ``config`` and ``base``. Runs on the event loop.

::

    target.py     where Redis is, this replica's name, the key and channel names
    health.py     whether Redis answers, since when not, and why (redacted)
    rows.py       fleet sightings as Redis rows; the bounded buffer they wait in
    peers.py      one replica's heartbeat: what it serves, its sync health
    replicas.py   the background tasks: heartbeat, fan-out, fleet exchange
    collector.py  the shared-state metrics
"""
