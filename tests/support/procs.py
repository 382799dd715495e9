"""Real ``python -m server serve`` processes on loopback ports, for process-level tests."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.gitdaemon import free_port, wait_for_port
from tests.support.paths import ROOT


class ServerProcess:
    """One server process; its log goes to a file so a chatty server never blocks on a pipe."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.port = free_port()
        self.ssl_context = ssl_context
        self.data_dir = tmp / f"{name}-data"
        self.log_path = tmp / f"{name}.log"
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_CONFIG_")}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *args,
            ],
            cwd=ROOT,
            env={**clean_env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def request(
        self,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            self.base + path, data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, body = self.request(path, **kwargs)
        return status, json.loads(body)

    def wait_listening(self, timeout: float = 30) -> None:
        wait_for_port(self.port, timeout=timeout)

    def wait_ready(self, timeout: float = 30) -> str:
        """Block until /readyz says ready; returns the served commit."""
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.json("/readyz")
            if status == 200:
                return str(body["version"])
            time.sleep(0.05)
        raise AssertionError(f"server on port {self.port} not ready: {self.log()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


def status_of_each(server: ServerProcess, timeout: float = 30) -> dict[int, dict[str, Any]]:
    """/status from both processes (by worker index); the follower listens once it serves."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, status = server.json("/status")
        assert code == 200, status
        seen[status["process"]["worker"]] = status
        if len(seen) == 2:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered: {server.log()}")
