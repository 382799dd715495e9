"""The import-order rule that import-linter cannot see (``make lint``).

prometheus_client picks its multiprocess storage when it is imported, so the
command line must set ``PROMETHEUS_MULTIPROC_DIR`` first: importing
``server.cli`` (and the module that prepares the directory) must not import
prometheus_client, nor aiohttp, which the authoring commands never need.
Each check runs in a fresh interpreter, so nothing imported here counts.
"""

from __future__ import annotations

import subprocess
import sys

CHECKS = {
    # asyncio and lmcache too: validate runs as a pre-commit hook, on every commit.
    "server.cli": ("prometheus_client", "aiohttp", "asyncio", "lmcache"),
    "server.ops.metrics_env": ("prometheus_client",),
    "server.cli.authoring": ("prometheus_client", "aiohttp", "watchdog", "lmcache"),
}


def imported_by(module: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}\nprint(' '.join(n for n in {names!r} if n in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def main() -> int:
    failed = False
    for module, forbidden in CHECKS.items():
        found = imported_by(module, forbidden)
        if found:
            failed = True
            print(f"importing {module} imports {', '.join(found)}: keep those imports lazy")
    if not failed:
        print(f"import order: {len(CHECKS)} modules import none of what they must not")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
