"""The baseline: the least an aiohttp server can do for /config (read the body, send fixed JSON).

Run as its own process, on the same loop and HTTP stack as the server, so the
ratio of the two throughputs is what the server's own work costs.
"""

from __future__ import annotations

import multiprocessing
import sys

from aiohttp import web

FIXED_ANSWER = (
    b'{"configs":[{"key":"chunk_size","value":512,"override":true}],'
    b'"version":"0000000000000000000000000000000000000000","app_id":"plain-app",'
    b'"app_known":true,"applied_rules":[]}'
)


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=FIXED_ANSWER, content_type="application/json")


def serve(port: int, reuse_port: bool) -> None:
    app = web.Application()
    app.router.add_route("GET", "/config", handle)
    app.router.add_route("GET", "/readyz", handle)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        reuse_port=reuse_port or None,
    )


def main() -> None:
    """``python -m bench.minimal_server [PROCESSES] PORT``: PROCESSES share the port."""
    processes = int(sys.argv[1]) if len(sys.argv) > 2 else 1
    port = int(sys.argv[-1])
    others = [
        multiprocessing.Process(target=serve, args=(port, True), daemon=True)
        for _ in range(processes - 1)
    ]
    for other in others:
        other.start()
    serve(port, processes > 1)


if __name__ == "__main__":
    main()
