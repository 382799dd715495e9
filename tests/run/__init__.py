"""Tests of ``server/run/`` (and ``server/settings.py``): settings, TLS, SIGTERM, deploy/."""
