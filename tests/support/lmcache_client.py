"""The real LMCache 0.5.6 client as a separate process (``lmcache_worker.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("lmcache_worker.py")

# Workers of 0.5.6 must set a finite pd_allocation_timeout_sec or no request is sent.
FINITE = {"pd_allocation_timeout_sec": 30.0}


async def run_worker(
    tmp_path: Path, url: str, local: dict[str, Any], env: dict[str, str] | None = None
) -> dict[str, Any]:
    config_file = tmp_path / f"worker-{len(list(tmp_path.glob('worker-*')))}.yaml"
    config_file.write_text(json.dumps({"remote_config_url": url, **local}))  # JSON is YAML
    worker_env = {key: value for key, value in os.environ.items() if not key.startswith("LMCACHE_")}
    worker_env.update(env or {})
    worker_env["LMCACHE_CONFIG_FILE"] = str(config_file)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        env=worker_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(stdout.decode().splitlines()[-1])
    return result
