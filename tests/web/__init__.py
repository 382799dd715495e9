"""Tests of ``server/web/``: the HTTP endpoints, authorization, the dashboard, hostile input."""
