"""Tests of ``server/processes/``: ``--workers N``, a leader and its followers."""
