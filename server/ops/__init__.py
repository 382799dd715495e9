"""Layer ``ops``: what operators read: the fleet table, metrics, the status view.

Reads the sync state and the served snapshot; never changes what is served
and never imports aiohttp. ``metrics_env`` never imports prometheus_client
(the command line uses it before that import). May import ``sync``,
``settings``, ``git``, ``config`` and ``base``. Runs on the event loop.
"""
