"""Tests of ``server/shared/``: several replicas sharing one Redis (``--redis``)."""
