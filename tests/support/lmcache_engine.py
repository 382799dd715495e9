"""The real LMCache 0.5.6 engine (``python -m lmcache.v1.standalone``), on CPU, as a process.

It runs from its own venv, ``.venv-engine`` (torch and lmcache with all their
dependencies, about 1.9 GB), which ``make test-engine`` builds; the server under
test keeps running from the project's venv, as in ``make test``. The engine is
read and driven through its internal API, the only window into what it runs with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.gitdaemon import free_port
from tests.support.paths import ROOT

ENGINE_VENV = ROOT / ".venv-engine"
# The Makefile writes the stamp last, so a venv whose install broke halfway has none.
ENGINE_STAMP = ENGINE_VENV / ".installed"
ENGINE_PYTHON = ENGINE_VENV / "bin" / "python"


def engine_python() -> Path:
    """The engine venv's interpreter; a missing venv fails the test, it never skips it."""
    if not (ENGINE_STAMP.exists() and ENGINE_PYTHON.exists()):
        raise AssertionError(
            f"the LMCache engine venv {ENGINE_VENV} is not installed: "
            "`make test-engine` installs it (CPU torch, lmcache 0.5.6) and runs these tests"
        )
    return ENGINE_PYTHON


def worker_config(**settings: Any) -> dict[str, Any]:
    """A worker's own LMCACHE_CONFIG_FILE: what every engine in these tests needs, plus ``settings``."""
    return {
        # 0.1 GB of CPU cache keeps an engine near 0.5 GB of memory.
        "max_local_cpu_size": 0.1,
        # The default (infinity) cannot be sent as JSON: 0.5.6 would never ask the server.
        "pd_allocation_timeout_sec": 30.0,
        "internal_api_server_enabled": True,
        **settings,
    }


class EngineProcess:
    """One engine; its output goes to a file, so a chatty engine never blocks on a pipe."""

    def __init__(self, tmp: Path, name: str, config: dict[str, Any]) -> None:
        python = engine_python()
        # The standalone engine is worker 0: its internal API listens on port_start + 1.
        self.api_port = free_port()
        config = {**config, "internal_api_server_port_start": self.api_port - 1}
        self.config_path = tmp / f"{name}-lmcache.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = tmp / f"{name}.log"
        # The test's own LMCACHE_* variables would override the file; usage tracking would
        # post to the internet.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
        env |= {
            "LMCACHE_CONFIG_FILE": str(self.config_path),
            "LMCACHE_TRACK_USAGE": "false",
            "DO_NOT_TRACK": "1",
            "CUDA_VISIBLE_DEVICES": "",
        }
        self._log = self.log_path.open("w")
        # LMCACHE_CONFIG_FILE, not --config: --config skips the remote fetch.
        self.process = subprocess.Popen(
            [str(python), "-m", "lmcache.v1.standalone"],
            cwd=tmp,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def request(self, method: str, path: str) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        """Block until the internal API answers; an engine that exits fails at once, with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the engine exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                status, _ = self.request("GET", "/conf?names=chunk_size")
            except OSError:
                status = 0
            if status == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"the engine's internal API never answered:\n{self.log()[-4000:]}")

    def conf(self, *names: str) -> dict[str, Any]:
        status, body = self.request("GET", "/conf?names=" + ",".join(names))
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    def store_and_retrieve(self, tokens: int) -> int:
        """Store tokens 0..N-1, then retrieve them: how many the engine kept (num_retrieved)."""
        mock = f"tokens_mock=0,{tokens}"
        status, body = self.request("POST", f"/cache/store?{mock}")
        assert status == 200, body
        status, body = self.request("POST", f"/cache/retrieve?{mock}")
        assert status == 200, body
        return int(body["num_retrieved"])

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
