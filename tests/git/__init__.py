"""Tests of ``server/git/``: fetching over HTTP and ssh, signed commits, the fast readers."""
