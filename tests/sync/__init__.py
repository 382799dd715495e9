"""Tests of ``server/sync/``: commits reaching the served snapshot, and what is never served."""
