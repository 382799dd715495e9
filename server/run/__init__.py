"""Layer ``run``: wiring and entry points; the composition root.

``compose`` builds every shared collaborator once from the settings and hands
each part only the small values it needs; ``app`` is the one app factory;
``serve`` runs a process until SIGTERM and is the followers' entry point.
May import every layer below ``cli``. Runs on the event loop.
"""
