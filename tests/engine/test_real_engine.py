"""The real LMCache 0.5.6 engine against a real server process (``make test-engine``).

The engine (``python -m lmcache.v1.standalone``, CPU torch) fetches its config from
``python -m server serve`` on a real port, serving a real git repository; what it
runs with is read back through its internal API. A commit that would crash the
engine is refused by the server, and an engine started after it still starts.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepo import ConfigRepo
from tests.support.lmcache_engine import EngineProcess, worker_config
from tests.support.procs import ServerProcess

pytestmark = pytest.mark.engine

APP = "engine-app"
APP_FILE = f"apps/{APP}.yaml"

GLOBAL = """
defaults:
  extra_config: {fleet: gitops-ci}
"""

GOOD_APP = """
defaults:
  blocking_timeout_secs: 17     # the worker leaves it at its default (10): changed
  max_local_cpu_size: 2.0       # the worker sets 0.1 itself: kept
overrides:
  chunk_size: 512
  lookup_timeout_ms: 1234
"""

# LMCache's own validation refuses this (controller_pull_url, controller_reply_url and
# lmcache_worker_ports are required), but served values skip that validation: an engine
# that received it would crash at startup.
CRASHING_APP = """
defaults:
  blocking_timeout_secs: 17
  max_local_cpu_size: 2.0
overrides:
  chunk_size: 512
  lookup_timeout_ms: 1234
  enable_controller: true
"""

SERVED = {
    "chunk_size": 512,
    "lookup_timeout_ms": 1234,
    "blocking_timeout_secs": 17,
    "max_local_cpu_size": 0.1,
    "extra_config": {"fleet": "gitops-ci"},
    "enable_controller": False,
}


def _push(work: ConfigRepo, files: dict[str, str], message: str) -> str:
    sha = work.commit_files(files, message)
    work.git("push", "--quiet", "origin", "main")
    return sha


def _engine_for(tmp: Path, name: str, server: ServerProcess) -> EngineProcess:
    engine = EngineProcess(
        tmp,
        name,
        worker_config(remote_config_url=f"{server.base}/config", app_id=APP),
    )
    engine.wait_ready()
    return engine


def _runs_with_the_served_values(engine: EngineProcess) -> None:
    assert engine.conf(*SERVED) == SERVED, engine.log()[-4000:]
    # A partial chunk is not stored (save_unfull_chunk is off): 300 tokens are under one
    # 512-token chunk and none are kept, 512 are exactly one chunk and all are. With the
    # local default (256) the engine would keep 256 of the 300.
    assert engine.store_and_retrieve(300) == 0
    assert engine.store_and_retrieve(512) == 512


def test_the_engine_runs_with_the_served_commit_and_never_gets_a_crashing_one(
    tmp_path: Path,
) -> None:
    upstream = tmp_path / "upstream.git"
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(upstream)], check=True
    )
    work = ConfigRepo(tmp_path / "work")
    work.git("remote", "add", "origin", str(upstream))
    good = _push(work, {"global.yaml": GLOBAL, APP_FILE: GOOD_APP}, "engine app: chunk 512")

    server = ServerProcess(tmp_path, "server", "--repo", str(upstream), "--ref", "main")
    engines: list[EngineProcess] = []
    try:
        assert server.wait_ready() == good
        engines.append(_engine_for(tmp_path, "engine-1", server))
        _runs_with_the_served_values(engines[0])
        engines[0].stop()

        bad = _push(work, {APP_FILE: CRASHING_APP}, "turn the controller on, without its URLs")
        code, refreshed = server.json("/admin/refresh", method="POST")
        assert code == 200, refreshed
        code, status = server.json("/status")
        assert code == 200
        rejected: dict[str, Any] | None = status["last_rejected"]
        assert rejected is not None, (
            f"the server served a commit that crashes LMCache: {status['served']}"
        )
        assert rejected["commit"]["sha"] == bad
        line = CRASHING_APP.lstrip("\n").splitlines().index("  enable_controller: true") + 1
        errors: list[str] = rejected["errors"]
        assert [e for e in errors if re.match(rf"{re.escape(APP_FILE)}:{line}:\d+: ", e)], errors
        assert any("enable_controller" in e for e in errors), errors
        assert status["served"]["sha"] == good
        code, answer = server.json(f"/config?appId={APP}")
        assert (code, answer["version"]) == (200, good)

        # A worker (re)started now gets the last good commit and runs with it.
        engines.append(_engine_for(tmp_path, "engine-2", server))
        _runs_with_the_served_values(engines[1])
    finally:
        for engine in engines:
            engine.stop()
        server.stop()


def test_the_crashing_config_given_to_the_engine_itself_stops_it(tmp_path: Path) -> None:
    """What the server's rejection guards against: the engine does not survive this config."""
    engine = EngineProcess(tmp_path, "engine", worker_config(enable_controller=True))
    try:
        code = engine.wait_exit(timeout=120)
    finally:
        engine.stop()
    log = engine.log()
    tail = log[-4000:]
    # The standalone starter's own catch-all: the error logged, exit status 1.
    assert code == 1, tail
    assert "Fatal error: controller_pull_url is required when enable_controller=True" in log, tail
