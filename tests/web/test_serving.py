"""/config answers from a real repository, over a real loopback port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory


def items(answer: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    return {item["key"]: (item["value"], item["override"]) for item in answer["configs"]}


async def test_known_app_gets_layered_answer(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    status, answer = await server.config("test-app")
    assert status == 200
    assert answer["version"] == config_repo.head()
    assert answer["app_known"] is True
    assert items(answer) == {
        "chunk_size": (512, True),
        "extra_config": ('{"tier":"test"}', True),
        "local_cpu": (True, False),
        "max_local_cpu_size": (10.0, False),
        "pre_caching_hash_algorithm": ("builtin", True),
    }
    assert [item["key"] for item in answer["configs"]] == sorted(items(answer))


async def test_version_header_matches_body(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    response = await server.client.get("/config", params={"appId": "test-app"})
    body = await response.json()
    assert response.headers["X-Config-Version"] == body["version"] == config_repo.head()
    assert response.content_type == "application/json"


async def test_post_is_answered_like_get(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    get = await server.client.get("/config", params={"appId": "test-app"}, json={})
    post = await server.client.post("/config", params={"appId": "test-app"}, json={})
    assert get.status == post.status == 200
    assert await get.read() == await post.read()


async def test_unknown_and_missing_app_get_global_layer(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    for app_id in ("no-such-app", None):
        status, answer = await server.config(app_id)
        assert status == 200
        assert answer["app_known"] is False
        assert "global layer only" in answer["note"]
        assert items(answer) == {
            "chunk_size": (256, False),
            "local_cpu": (True, False),
            "pre_caching_hash_algorithm": ("builtin", True),
        }


async def test_strict_apps_turns_unknown_app_into_404(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, strict_apps=True)
    status, answer = await server.config("no-such-app")
    assert status == 404
    assert answer["error"]["code"] == "unknown_app"
    assert (await server.config("test-app"))[0] == 200


async def test_rules_match_env_and_config(tmp_path: Path, start_server: ServerFactory) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "global.yaml": """
                defaults:
                  max_local_cpu_size: 5.0
                rules:
                  - name: eu-clusters
                    when:
                      env:
                        LMCACHE_CLUSTER: "prod-eu-*"
                    overrides:
                      remote_url: "lm://eu-cache:65432"
            """,
            "apps/app.yaml": """
                overrides:
                  remote_url: "lm://app-cache:65432"
                rules:
                  - name: h100
                    when:
                      env:
                        GPU_TYPE: "H100*"
                      config:
                        chunk_size: 256
                    overrides:
                      max_local_cpu_size: 40.0
                  - name: blend
                    when:
                      config:
                        remote_serde: "cache*"
                    defaults:
                      enable_blending: true
            """,
        }
    )
    server = await start_server(repo.path)
    body: dict[str, dict[str, Any]] = {
        "env_variables": {"GPU_TYPE": "H100-SXM", "LMCACHE_CLUSTER": "prod-eu-west"},
        "current_config": {"chunk_size": 256, "remote_serde": "naive"},
    }
    status, answer = await server.config("app", body)
    assert status == 200
    # The app layer comes after global's rules, so the app's remote_url wins.
    assert items(answer)["remote_url"] == ("lm://app-cache:65432", True)
    assert items(answer)["max_local_cpu_size"] == (40.0, True)
    assert "enable_blending" not in items(answer)
    assert answer["applied_rules"] == ["eu-clusters", "h100"]

    # Every condition of a rule must hold: chunk_size 512 does not match rule h100.
    body["current_config"]["chunk_size"] = 512
    status, answer = await server.config("app", body)
    assert items(answer)["max_local_cpu_size"] == (5.0, False)
    assert answer["applied_rules"] == ["eu-clusters"]

    # Unknown apps still get global.yaml's matching rules.
    status, answer = await server.config("other", body)
    assert items(answer)["remote_url"] == ("lm://eu-cache:65432", True)


async def test_extra_config_merges_across_layers(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "global.yaml": """
                defaults:
                  extra_config: {owner: platform, tier: default}
            """,
            "apps/app.yaml": """
                overrides:
                  extra_config: {tier: gold, region: eu}
            """,
        }
    )
    server = await start_server(repo.path)
    _, answer = await server.config("app")
    value, override = items(answer)["extra_config"]
    assert json.loads(value) == {"owner": "platform", "tier": "gold", "region": "eu"}
    assert override is True


async def test_malformed_requests_get_json_4xx(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    cases = [
        ({"appId": "test-app"}, b"{not json", "malformed_body"),
        ({"appId": "test-app"}, b"[1, 2]", "malformed_body"),
        ({"appId": "test-app"}, b'{"env_variables": [1]}', "malformed_body"),
        ({"appId": "test-app"}, b'{"current_config": "x"}', "malformed_body"),
        ({"appId": "../../etc/passwd"}, b"{}", "invalid_app_id"),
        ({"appId": "a" * 200}, b"{}", "invalid_app_id"),
        ({"appId": "app id"}, b"{}", "invalid_app_id"),
    ]
    for params, body, code in cases:
        response = await server.client.get(
            "/config", params=params, data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400, (params, body)
        error = (await response.json())["error"]
        assert error["code"] == code
        assert error["message"]


async def test_oversized_body_gets_413(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, max_body_bytes=4096)
    response = await server.client.post(
        "/config", params={"appId": "test-app"}, data=b"{" + b" " * 10_000 + b"}"
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


async def test_unknown_route_and_method_are_json(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    response = await server.client.get("/nope")
    assert response.status == 404
    assert (await response.json())["error"]["status"] == 404
    response = await server.client.delete("/config")
    assert response.status == 405
    assert (await response.json())["error"]["status"] == 405


async def test_health_endpoints(config_repo: ConfigRepo, start_server: ServerFactory) -> None:
    server = await start_server(config_repo.path)
    healthz = await server.client.get("/healthz")
    assert healthz.status == 200
    readyz = await server.client.get("/readyz")
    assert readyz.status == 200
    assert (await readyz.json())["version"] == config_repo.head()
    status = await server.status()
    assert status["served"]["sha"] == config_repo.head()
    assert status["served"]["subject"] == "initial"
    assert status["last_sync"]["result"] == "updated"
    assert status["last_rejected"] is None
