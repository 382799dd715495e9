"""A real ``redis-server`` (Debian's) on a free loopback port, in a tmp dir: never the system's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.gitdaemon import free_port, wait_for_port


def redis_server_path() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: run `make test-tools`")
    return found


class RedisServer:
    """Started and stopped by the test; ``start`` again after ``kill`` reuses the port."""

    def __init__(
        self, base: Path, *, password: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.tls = tls  # (certificate, key): TLS only, on ``port``
        self.dir = base / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            redis_server_path(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            cert, key = self.tls
            args[args.index("--port") + 1] = "0"  # no plain-text port
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-auth-clients", "no"]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
