"""Tests of ``server/ops/``: what operators read (the fleet table, metrics)."""
