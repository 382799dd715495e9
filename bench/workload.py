"""What the benchmarks send and serve: the real client's request body, generated repositories.

The body is what LMCache 0.5.6 sends: every one of its 108 fields at its default
(``pd_allocation_timeout_sec`` made finite, as a working client must) and an
environment of about 40 variables, about 5 KB of JSON.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
from pathlib import Path
from typing import Any

from bench.common import GIT_ENV, ROOT, git

FIELDS_TSV = ROOT / "server" / "config" / "data" / "lmcache-0.5.6-fields.tsv"
APP_WITHOUT_RULES = "plain-app"
APP_WITH_RULES = "rules-app"

GLOBAL_YAML = """\
defaults:
  chunk_size: 256
  local_cpu: true
  max_local_cpu_size: 10.0
overrides:
  pre_caching_hash_algorithm: builtin
  extra_config:
    fleet: bench
"""

PLAIN_APP_YAML = """\
defaults:
  max_local_disk_size: 100.0
  local_disk: "file:///mnt/nvme/lmcache"
overrides:
  chunk_size: 512
  save_unfull_chunk: true
  extra_config:
    tier: gold
"""

RULES_APP_YAML = """\
defaults:
  max_local_disk_size: 100.0
overrides:
  chunk_size: 512
  extra_config:
    tier: gold
rules:
  - name: big-chunks-on-h100
    when:
      env:
        GPU_TYPE: "H100*"
        REGION: "us-*"
      config:
        chunk_size: 256
    overrides:
      chunk_size: 1024
      remote_serde: naive
  - name: canary
    when:
      env:
        CANARY: "1"
    defaults:
      enable_async_loading: true
"""


def _default_value(kind: str, text: str) -> Any:
    if text == "inf":
        return 60.0  # the client cannot send infinity; working fleets set a finite value
    if text == "None":
        return None
    value = ast.literal_eval(text)
    if "float" in kind and isinstance(value, int):
        return float(value)
    return value


def client_body() -> bytes:
    """The real client's body: every 0.5.6 field at its default, and a worker's environment."""
    config: dict[str, Any] = {}
    for line in FIELDS_TSV.read_text().splitlines()[1:]:
        name, kind, default, _env = line.split("\t")
        config[name] = _default_value(kind, default)
    config["app_id"] = APP_WITH_RULES
    config["remote_config_url"] = "http://config-server.internal:8088/config"
    config["lmcache_instance_id"] = "lmcache_instance_7f3a9c2e"
    assert all(not (isinstance(v, float) and math.isinf(v)) for v in config.values())
    env = {
        "PATH": "/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME": "vllm-worker-7c9f8d6b5-x2k4p",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "GPU_TYPE": "H100-SXM",
        "REGION": "us-east-1",
        "CANARY": "0",
        "CUDA_VERSION": "12.4.1",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NCCL_VERSION": "2.21.5-1",
        "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64:/usr/local/cuda/lib64",
        "VLLM_USAGE_SOURCE": "production-docker-image",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "HF_HOME": "/models/huggingface",
        "HF_TOKEN": "hf_redacted_example_token_0123456789abcdef",
        "LMCACHE_CONFIG_FILE": "/etc/lmcache/lmcache.yaml",
        "LMCACHE_APP_ID": APP_WITH_RULES,
        "LMCACHE_PD_ALLOCATION_TIMEOUT_SEC": "60",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "POD_NAME": "vllm-worker-7c9f8d6b5-x2k4p",
        "POD_NAMESPACE": "inference",
        "POD_IP": "10.244.3.17",
        "NODE_NAME": "gpu-node-a100-017",
        "SERVICE_ACCOUNT": "vllm-worker",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "example/secret/access/key/0123456789abcdefghij",
        "OMP_NUM_THREADS": "8",
        "TOKENIZERS_PARALLELISM": "false",
        "MODEL_NAME": "meta-llama/Llama-3.1-70B-Instruct",
        "TENSOR_PARALLEL_SIZE": "8",
    }
    return json.dumps({"current_config": config, "env_variables": env}).encode()


def app_yaml(index: int) -> str:
    """A realistic app file: a few keys, and a rule or two for two apps in three."""
    lines = [
        "defaults:",
        f"  max_local_cpu_size: {10 + index % 40}.0",
        f'  local_disk: "file:///mnt/nvme/app-{index}"',
        "overrides:",
        f"  chunk_size: {256 * (1 + index % 4)}",
        "  extra_config:",
        f"    team: team-{index % 97}",
    ]
    if index % 3:
        lines += [
            "rules:",
            f"  - name: h100-app-{index}",
            "    when:",
            "      env:",
            '        GPU_TYPE: "H100*"',
            "    overrides:",
            f"      max_local_cpu_size: {40 + index % 10}.0",
        ]
        if index % 2:
            lines += [
                "  - name: canary",
                "    when:",
                "      env:",
                '        CANARY: "1"',
                "      config:",
                "        chunk_size: 256",
                "    defaults:",
                "      enable_async_loading: true",
            ]
    return "\n".join(lines) + "\n"


def generate_repo(path: Path, apps: int) -> str:
    """A git repository with global.yaml, the two named bench apps and ``apps`` generated apps."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=GIT_ENV)
    apps_dir = path / "apps"
    apps_dir.mkdir()
    (path / "global.yaml").write_text(GLOBAL_YAML)
    (apps_dir / f"{APP_WITHOUT_RULES}.yaml").write_text(PLAIN_APP_YAML)
    (apps_dir / f"{APP_WITH_RULES}.yaml").write_text(RULES_APP_YAML)
    for index in range(max(0, apps - 2)):
        (apps_dir / f"app-{index:05d}.yaml").write_text(app_yaml(index))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"{apps} apps")
    return git(path, "rev-parse", "HEAD")


def commit_one_file(path: Path, value: int) -> str:
    """Change one app file and commit: the common case of a config change."""
    (path / "apps" / "app-00001.yaml").write_text(
        app_yaml(1).replace("team-1\n", f"team-{value}\n")
    )
    git(path, "commit", "-q", "-am", f"one-file change {value}")
    return git(path, "rev-parse", "HEAD")
