"""Logs of real server processes: one line per request and per sync, request ids, JSON
format, and never a body, a query string, an env value or a git credential."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import pytest

from server.base.logs import request_id_from
from tests.support.gitdaemon import free_port
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess
from tests.support.servers import ServerFactory

SECRET = "planted-log-secret-93be"


def planted_request(server: ServerProcess, request_id: str) -> tuple[int, dict[str, str], bytes]:
    body = {
        "current_config": {"lmcache_instance_id": "w-1", "remote_url": f"lm://{SECRET}:1"},
        "env_variables": {"HOSTNAME": "node-1", "HF_TOKEN": SECRET, "GPU_TYPE": "H100"},
    }
    basic = base64.b64encode(f"worker:{SECRET}".encode()).decode()
    return server.request(
        f"/config?appId=test-app&token={SECRET}",
        body=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Basic {basic}",
            "X-Request-Id": request_id,
        },
    )


def test_json_log_has_request_ids_and_no_secrets(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/test-app.yaml": """
                rules:
                  - name: h100
                    when: {env: {GPU_TYPE: "H100*", HF_TOKEN: "planted-*"}}
                    overrides: {chunk_size: 512}
            """
        }
    )
    server = ServerProcess(
        tmp_path, "json", "--repo", str(repo.path), "--log-format", "json", "--log-level", "debug"
    )
    try:
        server.wait_ready()
        status, headers, answer = planted_request(server, "trace-0001")
        assert status == 200
        assert headers["X-Request-Id"] == "trace-0001"
        assert json.loads(answer)["applied_rules"] == ["h100"]
        # An id that could forge a log line or smuggle data is replaced by a fresh one.
        status, headers, _ = planted_request(server, f"{SECRET} forged\tline")
        generated = headers["X-Request-Id"]
        assert generated != f"{SECRET} forged\tline"
        assert SECRET not in generated
        status, headers, _ = server.request("/config?appId=bad%20id")
        assert status == 400
        assert headers["X-Request-Id"]
        assert server.stop() == 0
    finally:
        server.kill()

    text = server.log()
    assert SECRET not in text
    assert base64.b64encode(f"worker:{SECRET}".encode()).decode() not in text
    assert "token=" not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    requests = [line for line in lines if line.get("event") == "request"]
    by_id = {line["id"]: line for line in requests}
    first = by_id["trace-0001"]
    assert first["path"] == "/config"
    assert (first["status"], first["app"], first["rules"], first["env_used"]) == (
        200,
        "test-app",
        "h100",
        "GPU_TYPE,HF_TOKEN",  # names of what a rule read, never the values
    )
    assert first["level"] == "info"
    assert first["logger"] == "server.access"
    assert by_id[generated]["status"] == 200
    assert [line["status"] for line in requests if line["path"] == "/config"] == [200, 200, 400]
    assert any(line["path"] == "/readyz" and line["level"] == "debug" for line in requests)
    syncs = [line for line in lines if line.get("event") == "sync"]
    assert syncs[0]["trigger"] == "startup"
    assert syncs[0]["result"] == "updated"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_git_credentials_never_reach_the_log(tmp_path: Path, log_format: str) -> None:
    url = f"https://deploy:{SECRET}@127.0.0.1:{free_port()}/config.git"
    server = ServerProcess(
        tmp_path, log_format, "--repo", url, "--log-format", log_format, "--git-timeout", "5"
    )
    try:
        server.wait_listening()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, status = server.json("/status")
            if status["last_sync"] is not None:
                break
            time.sleep(0.05)
        assert status["last_sync"]["result"] == "failed"
        assert SECRET not in json.dumps(status)
        assert server.stop() == 0
    finally:
        server.kill()
    text = server.log()
    assert SECRET not in text
    assert "https://***@127.0.0.1" in text  # the URL is still named, without its secret
    if log_format == "json":
        failed = [
            line
            for line in map(json.loads, text.splitlines())
            if line.get("event") == "sync" and line["result"] == "failed"
        ]
        assert failed
        assert "***@127.0.0.1" in failed[0]["error"]
    else:
        assert "sync trigger=startup result=failed" in text


async def test_request_id_on_every_answer(
    config_repo: ConfigRepo, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_server(config_repo.path)
    for path in ("/healthz", "/readyz", "/status", "/fleet", "/metrics", "/nope"):
        response = await server.client.get(path, headers={"X-Request-Id": f"id-{path[1:]}"})
        assert response.headers["X-Request-Id"] == f"id-{path[1:]}"
    response = await server.client.get("/config", params={"appId": "test-app"})
    generated = response.headers["X-Request-Id"]
    assert len(generated) == 32
    assert f"request id={generated} method=GET path=/config status=200" in caplog.text
    assert "request id=id-nope method=GET path=/nope status=404" in caplog.text


async def test_access_log_can_be_turned_off(
    config_repo: ConfigRepo, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_server(config_repo.path, access_log=False)
    await server.config("test-app")
    await server.config("ghost-app")
    assert "request id=" not in caplog.text
    assert "unknown app ghost-app" in caplog.text  # still said once, as a warning


def test_request_id_rules() -> None:
    assert request_id_from("0af7651916cd43dd8448eb211c80319c") == "0af7651916cd43dd8448eb211c80319c"
    assert request_id_from("svc:abc/123+x=") == "svc:abc/123+x="
    for bad in (None, "", "has space", "line\nbreak", "x" * 200, "-leading-dash", 'quote"'):
        generated = request_id_from(bad)
        assert generated != bad
        assert len(generated) == 32
