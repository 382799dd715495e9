"""Guardrails: the key policy, secret scopes and LMCache's own validation, on real commits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.base.errors import SettingsError
from server.config.engine_check import BundledRules, InstalledLMCache
from server.config.policy import load_policy
from server.config.schema import bundled_schema
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, secret_scopes, values

GOOD = {"apps/a.yaml": "overrides: {chunk_size: 512}\n"}


async def _rejected(server: Any, repo: ConfigRepo, files: dict[str, str]) -> list[str]:
    """Commit ``files``; assert the commit is rejected and the last good one still served."""
    served = server.served_sha
    repo.commit_files(files, "hostile change")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert record.result == "rejected", record
    assert server.served_sha == served
    status = await server.status()
    errors: list[str] = status["last_rejected"]["errors"]
    return errors


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    config = ConfigRepo(tmp_path / "repo")
    config.commit_files(GOOD, "good")
    return config


async def test_a_combination_that_crashes_the_engine_is_rejected(
    repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(repo.path)
    errors = await _rejected(
        server, repo, {"apps/a.yaml": "overrides:\n  chunk_size: 512\n  enable_controller: true\n"}
    )
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "apps/a.yaml:3:1: error: LMCache would refuse this config for app 'a'"
    )
    assert "controller_pull_url is required when enable_controller=True" in errors[0]
    assert "(set at apps/a.yaml:3)" in errors[0]
    assert "installed lmcache 0.5.6" in errors[0]

    # A rule that turns it on for some workers is checked as the workers that match get it.
    errors = await _rejected(
        server,
        repo,
        {
            "apps/a.yaml": """
                overrides: {chunk_size: 512}
                rules:
                  - name: controller-canary
                    when: {env: {CANARY: "1"}}
                    overrides: {enable_controller: true, controller_pull_url: "tcp://c:1"}
            """
        },
    )
    assert "(when rule 'controller-canary' matches)" in errors[0], errors
    assert "controller_reply_url is required" in errors[0]

    # The whole set is fine: served.
    repo.commit_files(
        {
            "apps/a.yaml": """
                overrides:
                  enable_controller: true
                  controller_pull_url: "tcp://controller:8300"
                  controller_reply_url: "tcp://controller:8400"
                  lmcache_worker_ports: [8500]
            """
        }
    )
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert values((await server.config("a"))[1])["enable_controller"] is True


async def test_a_global_clash_is_reported_once_for_every_app(
    repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(repo.path)
    errors = await _rejected(
        server,
        repo,
        {"global.yaml": "overrides: {enable_pd: true}\n", "apps/b.yaml": "defaults: {}\n"},
    )
    assert errors == [
        "global.yaml:1:1: error: LMCache would refuse this config for the global layer and "
        "apps 'a', 'b': requires self.pd_role is not None (set at global.yaml:1) "
        "[installed lmcache 0.5.6]; a worker given it fails to start"
    ]
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("run_script_api_enabled: true", "run code sent to it"),
        ("script_allowed_imports: [os]", "(os, subprocess: anything)"),
        ('internal_api_server_host: "0.0.0.0"', "GET /env"),
        ('remote_config_url: "http://elsewhere:8088"', "config source"),
        ('app_id: "prod-app"', "another app's"),
        ('lmcache_instance_id: "w1"', "identity of its own"),
        ("runtime_plugin_locations: [/opt/plugins]", "plugin program"),
    ],
)
async def test_the_key_policy_refuses_keys_that_open_or_redirect_a_worker(
    repo: ConfigRepo, start_server: ServerFactory, setting: str, reason: str
) -> None:
    server = await start_server(repo.path)
    errors = await _rejected(
        server, repo, {"apps/a.yaml": f"overrides:\n  chunk_size: 256\n  {setting}\n"}
    )
    assert len(errors) == 1, errors
    assert errors[0].startswith("apps/a.yaml:3:1: error: '"), errors
    assert "(key policy)" in errors[0]
    assert reason in errors[0]


async def test_allowed_values_and_an_operators_policy_file(
    tmp_path: Path, repo: ConfigRepo, start_server: ServerFactory
) -> None:
    # Loopback and off are what the built-in policy allows.
    repo.commit_files(
        {
            "apps/a.yaml": """
                overrides:
                  internal_api_server_host: "127.0.0.1"
                  run_script_api_enabled: false
                  script_allowed_imports: null
            """
        }
    )
    server = await start_server(repo.path)
    assert server.served_sha == repo.head()

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "allow: [internal_api_server_host]\n"
        "deny:\n"
        "  max_local_cpu_size: {only: [5.0, 10.0], reason: sized for our nodes}\n"
    )
    repo.commit_files(
        {"apps/a.yaml": 'overrides:\n  internal_api_server_host: "0.0.0.0"\n  chunk_size: 256\n'}
    )
    lifted = await start_server(repo.path, key_policy=str(policy))
    assert lifted.served_sha == repo.head()
    errors = await _rejected(
        lifted, repo, {"apps/a.yaml": "overrides: {max_local_cpu_size: 6.0}\n"}
    )
    assert errors == [
        "apps/a.yaml:1:1: error: 'max_local_cpu_size' may only be 5.0, 10.0 here, not 6.0 "
        "(key policy): sized for our nodes"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a mapping"),
        ("allow: [chunk_size]\n", "lifts no built-in rule"),
        ("deny: {chunk_sise: {reason: x}}\n", "is not an LMCache config key"),
        ("deny: {chunk_size: {only: [1]}}\n", "needs a 'reason'"),
    ],
)
def test_a_bad_policy_file_is_a_settings_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        load_policy(str(path), bundled_schema().fields)
    assert message in raised.value.message


async def test_secrets_are_served_only_to_the_apps_they_are_scoped_to(
    tmp_path: Path, repo: ConfigRepo, start_server: ServerFactory
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "prod-db-password").write_text("prod-only\n")
    (secrets / "cache-password").write_text("shared\n")
    repo.commit_files(
        {
            "apps/prod-app.yaml": 'overrides:\n  remote_url: "lm://u:${secret:prod-db-password}@db:1"\n',
            "global.yaml": 'overrides:\n  extra_config: {cache: "${secret:cache-password}"}\n',
        }
    )
    scopes = secret_scopes(tmp_path, {"prod-db-password": ["prod-*"], "cache-password": ["*"]})
    server = await start_server(repo.path, secrets_dir=str(secrets), secret_scopes=scopes)
    assert server.served_sha == repo.head()
    assert "prod-only" in str(values((await server.config("prod-app"))[1])["remote_url"])

    # Another team adds the prod secret to its own app: rejected, the prod secret stays put.
    errors = await _rejected(
        server,
        repo,
        {
            "apps/team-app.yaml": 'overrides:\n  remote_url: "lm://u:${secret:prod-db-password}@x:1"\n'
        },
    )
    assert errors == [
        "apps/team-app.yaml:2:1: error: secret 'prod-db-password' would be served to app "
        f"'team-app', but it is allowed for prod-* only (--secret-scopes {scopes})"
    ]
    code, answer = await server.config("team-app")
    assert code == 200
    assert "prod-only" not in str(answer)

    # A secret in the global layer reaches every app id, known or not: it needs "*".
    narrow = secret_scopes(tmp_path / "secrets", {"cache-password": ["prod-*"], "*": ["prod-*"]})
    strict = await start_server(repo.path, secrets_dir=str(secrets), secret_scopes=narrow)
    assert strict.served_sha != repo.head()  # a new replica walks back to a commit that passes
    rejection = (await strict.status())["last_rejected"]["errors"]
    assert any(
        "secret 'cache-password' would be served to every app (it is in the global layer)" in error
        for error in rejection
    ), rejection


async def test_without_scopes_no_app_gets_a_secret(
    tmp_path: Path, repo: ConfigRepo, start_server: ServerFactory
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pw").write_text("x")
    server = await start_server(repo.path, secrets_dir=str(secrets))
    errors = await _rejected(
        server, repo, {"apps/a.yaml": 'overrides:\n  remote_url: "lm://u:${secret:pw}@h:1"\n'}
    )
    assert errors == [
        "apps/a.yaml:2:1: error: secret 'pw' would be served to app 'a', but no app may have it "
        "(no --secret-scopes: no secret is served to any app)"
    ]


CONFIGS: list[dict[str, Any]] = [
    {},
    {"min_retrieve_tokens": -1},
    {"enable_controller": True},
    {"enable_controller": True, "controller_pull_url": "a", "controller_reply_url": "b"},
    {
        "enable_controller": True,
        "controller_pull_url": "a",
        "controller_reply_url": "b",
        "lmcache_worker_ports": [1],
    },
    {"enable_p2p": True},
    {"enable_pd": True},
    {"enable_pd": True, "pd_role": "sender", "pd_buffer_size": 1, "pd_buffer_device": "cpu"},
    {
        "enable_pd": True,
        "pd_role": "receiver",
        "pd_buffer_size": 1,
        "pd_buffer_device": "cpu",
        "store_location": "PDBackend",
    },
    {"extra_config": {"enable_nixl_storage": True}},
    {
        "extra_config": {"enable_nixl_storage": True, "nixl_backend": "x", "nixl_pool_size": 1},
        "nixl_buffer_device": "cpu",
    },
    {
        "extra_config": {"enable_nixl_storage": True, "nixl_backend": "x", "nixl_pool_size": 1},
        "nixl_buffer_device": "cpu",
        "nixl_buffer_size": 10,
    },
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_bundled_rules_decide_as_the_installed_lmcache_does(config: dict[str, Any]) -> None:
    installed, bundled = InstalledLMCache(), BundledRules()
    assert (installed.problem(config) is None) == (bundled.problem(config) is None), (
        installed.problem(config),
        bundled.problem(config),
    )
    assert set(config) <= installed.relevant_keys | {"extra_config"}
