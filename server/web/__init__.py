"""Layer ``web``: HTTP. aiohttp is imported here and nowhere below.

Handlers read typed app keys (``keys``) and never touch git or the disk: they
answer from the served snapshot, and ask the sync layer (``SyncControl``, the
viewer) for anything else. One middleware maps the error tree to JSON.
May import ``processes``, ``ops``, ``sync``, ``settings``, ``git``, ``config``
and ``base``. Runs on the event loop.
"""
