"""Tests of ``server/base/``: log lines and credential redaction, seen from real servers."""
