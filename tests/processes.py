"""The server as a real process, for tests that need the CLI, signals or TLS."""

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

from tests.gitdaemon import free_port

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """``python -m server serve`` on a free port; ``stop()`` sends SIGTERM and returns stderr."""

    def __init__(
        self, *args: str, scheme: str = "http", ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.ssl_context = ssl_context
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--port", str(self.port), *args],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_CONFIG_SERVER_")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(
                self.base + path, timeout=10, context=self.ssl_context
            ) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.communicate()[1][-2000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=30)
        return stderr
