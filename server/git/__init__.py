"""Layer ``git``: the mirror, its data dir and the readers of commits. Blocking, on a git thread.

Never imports ``sync``, ``web``, aiohttp or ``Settings``. May import ``config``
and ``base``. Nothing here decides what is served: it fetches, resolves and
reads what it is asked to.
"""
