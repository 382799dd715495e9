"""Run the real LMCache 0.5.6 client's startup config path and print the result as JSON.

It follows ``lmcache.integration.vllm.utils.lmcache_get_or_create_config`` step
by step (that module imports torch, which the test machine does not have):
load LMCACHE_CONFIG_FILE, apply LMCACHE_* env vars, fetch the remote config,
apply it. Prints ``{"fetched": bool, "config": {...}}`` on the last line.
"""

import json
import os
import sys

# lmcache ships no type information (no py.typed, no stubs).
from lmcache.v1.config import LMCacheEngineConfig  # type: ignore[import-untyped]
from lmcache.v1.config_base import (  # type: ignore[import-untyped]
    apply_remote_configs,
    fetch_remote_config,
)

config = LMCacheEngineConfig.from_file(os.environ["LMCACHE_CONFIG_FILE"])
config.update_config_from_env()
response = fetch_remote_config(config.remote_config_url, config.app_id, config)
if response:
    config = apply_remote_configs(config, response)
result = config.to_dict()
sys.stdout.write(json.dumps({"fetched": bool(response), "config": result}, default=str) + "\n")
