"""Layer ``sync``: what is served. Its git work runs on the sync thread (the viewer's on
the view thread; both are made by the composition root), and it is the only writer of
the served-snapshot reference (``state.SnapshotHolder``).

``builder`` turns a commit into a snapshot or a rejection; ``syncer`` is the
loop (triggers, coalescing, backoff, records, publish); ``viewer`` does git
work that only shows, on its own thread, so that it never delays a sync.
Blocking work runs on the sync thread (``base.tasks.OneThread``); the rest on
the event loop. Never imports aiohttp or ``Settings``: the composition root
hands it values. May import ``git``, ``config`` and ``base``.
"""
