"""SIGTERM: stop accepting, finish the answer in flight, stop the sync task, exit 0."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.git.data_dir import DataDirLock
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.waiting import wait_until


def in_flight(server: ServerProcess) -> float:
    _, _, body = server.request("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "lmcache_config_requests_in_flight":
            return family.samples[0].value
    raise AssertionError("no in-flight gauge")


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, val = line.partition(":")
        headers[name.strip().lower()] = val.strip()
    return status_line, headers, body


def test_sigterm_finishes_a_slow_upload_in_flight(config_repo: ConfigRepo, tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, "server", "--repo", str(config_repo.path), "--log-format", "json"
    )
    try:
        commit = server.wait_ready()
        body = json.dumps(
            {
                "current_config": {"lmcache_instance_id": "slow-worker", "chunk_size": 256},
                "env_variables": {"HOSTNAME": "slow-host", "PAD": "x" * 4000},
            }
        ).encode()
        head = (
            "POST /config?appId=test-app HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-Request-Id: in-flight-1\r\n\r\n"
        ).encode()
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        # Headers and half the body: the handler is now waiting for the rest of the upload.
        slow.sendall(head + body[: len(body) // 2])
        wait_until(lambda: in_flight(server) == 1, "the upload to be in flight")

        server.process.send_signal(15)  # SIGTERM
        wait_until(lambda: refuses_connections(server.port), "the listener to close")
        assert server.process.poll() is None, "exited with an answer still in flight"

        slow.sendall(body[len(body) // 2 :])
        status_line, headers, answer = read_response(slow)
        slow.close()
        assert status_line == "HTTP/1.1 200 OK"
        assert headers["x-request-id"] == "in-flight-1"
        assert json.loads(answer)["version"] == commit
        assert server.stop() == 0
    finally:
        server.kill()

    lines = [json.loads(line) for line in server.log().splitlines()]
    messages = [line.get("message") or line.get("event") for line in lines]
    shutting_down = next(
        i for i, m in enumerate(messages) if m and m.startswith("shutting down: no new connections")
    )
    answered = next(i for i, line in enumerate(lines) if line.get("id") == "in-flight-1")
    assert lines[answered]["status"] == 200
    assert shutting_down < answered < messages.index("sync stopped")
    assert messages[-1] == "stopped cleanly"
    # Background work is gone: the data dir lock is free for the next server.
    lock = DataDirLock(server.data_dir / "lock")
    lock.acquire()
    lock.release()


def test_sighup_drains_like_sigterm(config_repo: ConfigRepo, tmp_path: Path) -> None:
    """Operators reach for SIGHUP to reload: the process drains instead of dying."""
    server = ServerProcess(tmp_path, "hup", "--repo", str(config_repo.path))
    try:
        commit = server.wait_ready()
        body = b'{"current_config": {"lmcache_instance_id": "hup"}, "env_variables": {}}'
        head = (
            "POST /config?appId=test-app HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        slow.sendall(head + body[:10])
        wait_until(lambda: in_flight(server) == 1, "the upload to be in flight")
        server.process.send_signal(1)  # SIGHUP
        wait_until(lambda: refuses_connections(server.port), "the listener to close")
        slow.sendall(body[10:])
        status_line, _, answer = read_response(slow)
        slow.close()
        assert status_line == "HTTP/1.1 200 OK"
        assert json.loads(answer)["version"] == commit
        assert server.stop() == 0
    finally:
        server.kill()
    log = server.log()
    assert "SIGHUP: draining and stopping" in log
    assert log.rstrip().endswith("stopped cleanly")
