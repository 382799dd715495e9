"""The real LMCache 0.5.6 client fetches and applies its config from a running server.

Each worker is a separate process running the client's own code
(tests/support/lmcache_worker.py), with its own environment, against the real app on a
real loopback port.
"""

from __future__ import annotations

from pathlib import Path

from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.lmcache_client import FINITE, run_worker
from tests.support.servers import ServerFactory


async def test_known_app_override_and_default(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    # The worker sets max_local_cpu_size itself (a default must not change it) and
    # chunk_size itself (an override must).
    result = await run_worker(
        tmp_path,
        server.url,
        {**FINITE, "app_id": "test-app", "max_local_cpu_size": 7.0, "chunk_size": 128},
    )
    assert result["fetched"] is True
    config = result["config"]
    assert config["chunk_size"] == 512  # override: true wins over the worker's own value
    assert config["max_local_cpu_size"] == 7.0  # default: the worker's own value wins
    assert config["local_cpu"] is True
    assert config["pre_caching_hash_algorithm"] == "builtin"
    assert config["extra_config"] == {"tier": "test"}


async def test_default_applies_where_worker_left_the_key_alone(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    result = await run_worker(tmp_path, server.url, {**FINITE, "app_id": "test-app"})
    assert result["config"]["max_local_cpu_size"] == 10.0


async def test_unknown_app_gets_global_layer(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    result = await run_worker(tmp_path, server.url, {**FINITE, "app_id": "no-such-app"})
    config = result["config"]
    assert result["fetched"] is True
    assert config["chunk_size"] == 256
    assert config["max_local_cpu_size"] == 5.0  # LMCache's own default: no app layer
    assert config["extra_config"] is None


async def test_extra_config_merge_and_replace(tmp_path: Path, start_server: ServerFactory) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/merge.yaml": "defaults:\n  extra_config: {server_key: 1, shared: server}\n",
            "apps/replace.yaml": "overrides:\n  extra_config: {server_key: 1}\n",
        }
    )
    server = await start_server(repo.path)
    local = {**FINITE, "extra_config": {"worker_key": "w", "shared": "worker"}}
    merged = await run_worker(tmp_path, server.url, {**local, "app_id": "merge"})
    assert merged["config"]["extra_config"] == {
        "worker_key": "w",
        "server_key": 1,
        "shared": "server",
    }
    replaced = await run_worker(tmp_path, server.url, {**local, "app_id": "replace"})
    assert replaced["config"]["extra_config"] == {"server_key": 1}


async def test_rules_see_the_worker_environment(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/gpu.yaml": """
                overrides:
                  max_local_cpu_size: 10.0
                rules:
                  - name: h100
                    when: {env: {GPU_TYPE: "H100*"}}
                    overrides: {max_local_cpu_size: 40.0, local_cpu_use_hugepages: true}
            """
        }
    )
    server = await start_server(repo.path)
    h100 = await run_worker(
        tmp_path, server.url, {**FINITE, "app_id": "gpu"}, {"GPU_TYPE": "H100-SXM"}
    )
    a10 = await run_worker(tmp_path, server.url, {**FINITE, "app_id": "gpu"}, {"GPU_TYPE": "A10"})
    assert (h100["config"]["max_local_cpu_size"], h100["config"]["local_cpu_use_hugepages"]) == (
        40.0,
        True,
    )
    assert (a10["config"]["max_local_cpu_size"], a10["config"]["local_cpu_use_hugepages"]) == (
        10.0,
        False,
    )


async def test_typed_values_arrive_typed(tmp_path: Path, start_server: ServerFactory) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/types.yaml": """
                overrides:
                  lmcache_worker_ports: [8100, 8101]
                  blend_thresholds: [0.5, 1]
                  save_unfull_chunk: true
                  remote_url: "lm://cache:65432"
                  hidden_states_retrieve_mode: skip_missing_chunks
            """
        }
    )
    server = await start_server(repo.path)
    config = (await run_worker(tmp_path, server.url, {**FINITE, "app_id": "types"}))["config"]
    assert config["lmcache_worker_ports"] == [8100, 8101]
    assert config["blend_thresholds"] == [0.5, 1.0]
    assert config["save_unfull_chunk"] is True
    assert config["remote_url"] == "lm://cache:65432"
    assert config["hidden_states_retrieve_mode"] == "skip_missing_chunks"


async def test_worker_gets_new_commit_after_change(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    config_repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 2048}\n"})
    await server.syncer.sync(SyncTrigger.MANUAL)
    result = await run_worker(tmp_path, server.url, {**FINITE, "app_id": "test-app"})
    assert result["config"]["chunk_size"] == 2048


async def test_default_client_settings_send_nothing(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    """The documented 0.5.6 bug: without a finite pd_allocation_timeout_sec no request is sent."""
    server = await start_server(config_repo.path)
    result = await run_worker(tmp_path, server.url, {"app_id": "test-app"})
    assert result["fetched"] is False
    assert result["config"]["chunk_size"] == 256
