"""Tests of ``server/config/``: the config-repository language, its checks and its answers."""
