"""GitOps config server for LMCache fleets.

Where things live: ``http_api`` answers requests; ``snapshot`` holds one
commit's answers; ``repo_format`` parses and validates a config repository;
``lmcache_schema`` knows LMCache's fields; ``git_mirror`` and ``sync`` keep the
snapshot in step with the remote; ``app`` wires them; ``cli`` and
``lifecycle`` run them. For operators: ``metrics``, ``fleet`` (who holds which
commit), ``freshness`` (the stale signal) and ``logs``.
"""

__version__ = "0.1.0"
