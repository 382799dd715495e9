"""Tests of ``server/cli/``: the command line, ``serve`` and ``validate``."""
