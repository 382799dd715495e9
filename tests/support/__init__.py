"""Helpers shared by the tests: real git servers, real server processes, polling waits.

The rule: test modules and ``conftest.py`` import from here; nothing here imports a
test module or ``conftest.py``. A helper that a second test module needs moves here.
"""
