"""A real smart-HTTP git server on 127.0.0.1: ``git http-backend`` behind basic auth."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from aiohttp import web


class GitHttpServer:
    """Serves the repositories under ``root``; every request needs ``user:token``."""

    def __init__(self, root: Path, user: str, token: str) -> None:
        self.root = root
        self._expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        self.user = user
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def rotate(self, token: str) -> None:
        """From now on only ``token`` opens the repositories (the old one is refused)."""
        self._expected = "Basic " + base64.b64encode(f"{self.user}:{token}".encode()).decode()

    def url(self, name: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._expected:
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_USER": self.user,
            "REMOTE_ADDR": request.remote or "",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        body = await request.read()  # aiohttp has already undone any Content-Encoding
        process = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await process.communicate(body)
        head, _, payload = output.partition(b"\r\n\r\n")
        status = 200
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        return web.Response(status=status, headers=headers, body=payload)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
