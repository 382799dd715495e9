"""Layer ``cli``: the command line (``serve``, ``hash-token``, ``validate``, ``render``, ``diff``,
``schema``).

May import every layer below; nothing imports it. Runs on the main thread.
Importing it never imports aiohttp or prometheus_client: ``serve`` imports
``run`` only once it has prepared the multiprocess metrics directory, and
the authoring commands never do.
"""

from .main import main

__all__ = ["main"]
