"""``python -m server``: the same CLI as ``lmcache-config-server``."""

from .cli import main

raise SystemExit(main())
