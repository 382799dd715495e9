"""Layer ``processes``: ``--workers N``, one replica as a leader and its followers.

Roles, the channel between processes, the leader's pool of followers and a
follower's link to its leader. Never imports aiohttp; the followers' entry
point is handed in from ``run``, never imported. May import ``ops``,
``sync``, ``settings``, ``git``, ``config`` and ``base``. Runs on the event loop.
"""
