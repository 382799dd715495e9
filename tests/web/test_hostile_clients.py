"""Clients that go away, send what no client should, or hold bytes they never finish.

Each gets a clear answer (or none, when it has gone), is counted for what it
was, and costs the server no more than a bounded amount of memory.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.servers import ServerFactory
from tests.support.waiting import wait_until

WEBHOOK_SECRET = "webhook-secret-for-tests"


def _send_head(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


async def test_a_5000_digit_instance_id_is_a_400_on_every_path(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    body = b'{"current_config": {"lmcache_instance_id": ' + b"9" * 5000 + b'}, "env_variables": {}}'
    # test-app has no rules: its answer does not read the request (the fast path).
    for app_id in ("test-app", "no-such-app"):
        response = await server.client.get(
            "/config",
            params={"appId": app_id},
            data=body,
            headers={"Content-Type": "application/json"},
        )
        error = (await response.json())["error"]
        assert (response.status, error["code"]) == (400, "malformed_body")
        assert error["message"] == (
            "request body is not valid JSON: a number has more than 4,300 digits"
        )


def test_a_client_gone_mid_upload_is_a_499_without_a_traceback(
    tmp_path: Path, config_repo: ConfigRepo
) -> None:
    server = ServerProcess(
        tmp_path, "gone", "--repo", str(config_repo.path), "--log-format", "json"
    )
    try:
        server.wait_ready()
        sock = _send_head(
            server.port,
            "GET /config?appId=test-app HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n"
            "X-Request-Id: gone-1\r\n\r\n",
            b'{"env_variables": {',
        )
        sock.close()
        wait_until(lambda: '"gone-1"' in server.log(), "the request's log line")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines()]
    gone = [line for line in lines if line.get("id") == "gone-1"]
    assert [(line["event"], line["status"]) for line in gone] == [("request", 499)]
    assert not [line for line in lines if line["level"] == "error" or "exception" in line]


def test_webhook_bodies_are_refused_before_they_are_read(
    tmp_path: Path, config_repo: ConfigRepo
) -> None:
    off = ServerProcess(tmp_path, "hooks-off", "--repo", str(config_repo.path))
    on = ServerProcess(
        tmp_path,
        "hooks-on",
        "--repo",
        str(config_repo.path),
        env={"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    try:
        off.wait_ready()
        on.wait_ready()
        five_mb = "Content-Length: 5242880\r\n"
        # Webhooks off (the default): 403 at once, with 5 MB declared and none of it sent.
        sock = _send_head(
            off.port,
            f"POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n{five_mb}\r\n",
        )
        assert _status_line(sock) == "HTTP/1.1 403 Forbidden"
        sock.close()
        # Webhooks on, but no signature header: 401 at once.
        sock = _send_head(
            on.port,
            f"POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n{five_mb}\r\n",
        )
        assert _status_line(sock) == "HTTP/1.1 401 Unauthorized"
        sock.close()
        # A GitLab token is checked before the body too.
        sock = _send_head(
            on.port,
            "POST /webhook/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Push Hook\r\n"
            f"X-Gitlab-Token: wrong\r\n{five_mb}\r\n",
        )
        assert _status_line(sock) == "HTTP/1.1 401 Unauthorized"
        sock.close()
        # Declared bigger than any push: 413 at once.
        sock = _send_head(
            on.port,
            "POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
            "X-Hub-Signature-256: sha256=00\r\nContent-Length: 50000000\r\n\r\n",
        )
        assert _status_line(sock) == "HTTP/1.1 413 Request Entity Too Large"
        sock.close()
        # Signed-looking bodies that never finish: the bytes held for all of them together
        # are bounded (20 MB); the sender that would pass the bound gets a 503 at once.
        chunk = b"x" * (3 * 1024 * 1024)
        held = []
        for _ in range(8):
            held.append(
                _send_head(
                    on.port,
                    "POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
                    f"X-Hub-Signature-256: sha256=00\r\n{five_mb}\r\n",
                    chunk,
                )
            )
        refused = 0
        for sock in held:
            sock.settimeout(2)
            try:
                line = _status_line(sock)
            except TimeoutError:
                continue  # still being read, within the bound
            assert line == "HTTP/1.1 503 Service Unavailable"
            refused += 1
        assert refused >= 2
        for sock in held:
            sock.close()
        assert on.json("/readyz")[0] == 200
    finally:
        off.stop()
        on.stop()


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed too
    return True


def test_slow_heads_are_cut_and_workers_still_answered(
    tmp_path: Path, config_repo: ConfigRepo
) -> None:
    server = ServerProcess(
        tmp_path, "slowloris", "--repo", str(config_repo.path), "--header-timeout", "1"
    )
    try:
        server.wait_ready()
        slow = [
            _send_head(server.port, "GET /config?appId=test-app HTTP/1.1\r\nHost")
            for _ in range(50)
        ]
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        assert server.json("/config?appId=test-app")[0] == 200  # a worker meanwhile
        for sock in slow:
            assert _closed_by_server(sock, within=5)
            sock.close()
        # A connection that has sent nothing is given a minute: under a burst the server
        # may read a head long after it was sent.
        for sock in silent:
            assert not _closed_by_server(sock, within=0.1)
            sock.close()
        _, _, metrics = server.request("/metrics")
        assert "lmcache_config_connections_timed_out_total 50.0" in metrics.decode()
    finally:
        server.stop()


def test_connections_beyond_the_limit_are_closed_at_once(
    tmp_path: Path, config_repo: ConfigRepo
) -> None:
    server = ServerProcess(
        tmp_path, "limit", "--repo", str(config_repo.path), "--max-connections", "20"
    )
    try:
        server.wait_ready()
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        wait_until(
            lambda: not _closed_by_server(held[-1], within=0.2), "the 20 connections to be held"
        )
        extra = socket.create_connection(("127.0.0.1", server.port))
        assert _closed_by_server(extra, within=5)
        extra.close()
        for sock in held:
            sock.close()
        wait_until(lambda: server.json("/readyz")[0] == 200, "room for a new connection")
        _, _, metrics = server.request("/metrics")
        refused = [
            float(line.split()[1])
            for line in metrics.decode().splitlines()
            if line.startswith("lmcache_config_connections_refused_total ")
        ]
        assert len(refused) == 1
        assert refused[0] >= 1
    finally:
        server.stop()


def test_a_slow_body_is_a_408(tmp_path: Path, config_repo: ConfigRepo) -> None:
    server = ServerProcess(
        tmp_path, "slowbody", "--repo", str(config_repo.path), "--body-timeout", "1"
    )
    try:
        server.wait_ready()
        sock = _send_head(
            server.port,
            "GET /config?appId=test-app HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            b'{"env_variables"',
        )
        assert _status_line(sock) == "HTTP/1.1 408 Request Timeout"
        sock.close()
        assert server.json("/config?appId=test-app")[0] == 200
    finally:
        server.stop()


def test_what_aiohttp_cannot_parse_is_a_json_400_logged_once(
    tmp_path: Path, config_repo: ConfigRepo
) -> None:
    server = ServerProcess(
        tmp_path, "parse", "--repo", str(config_repo.path), "--log-format", "json"
    )
    try:
        server.wait_ready()
        for raw in (
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",  # a bad method
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a line too long
        ):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
            assert b"Content-Type: application/json" in head
            error = json.loads(body)["error"]
            assert (error["status"], error["code"]) == (400, "bad_request")
            assert error["message"].startswith("the request could not be read: ")
        assert server.json("/readyz")[0] == 200
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines()]
    bad = [line for line in lines if line.get("event") == "request" and line["status"] == 400]
    assert len(bad) == 2
    assert not [line for line in lines if "exception" in line or line["level"] == "error"]
