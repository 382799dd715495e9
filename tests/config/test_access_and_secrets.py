"""Access conditions in the repo, and ${secret:NAME} values kept out of git and logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from server.config.loader import load_config_set
from server.config.schema import load_schema
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, secret_scopes, values

PASSWORD = "planted-cache-password-9d2c"
API_TOKEN = "planted-api-token-71ab"


async def test_access_conditions(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "global.yaml": "access:\n  env:\n    FLEET: lmcache\n",
            "apps/prod.yaml": """
                access:
                  env:
                    LMCACHE_CLUSTER: "prod-*"
                overrides:
                  chunk_size: 1
            """,
        }
    )
    server = await start_server(repo.path)
    ok = {"env_variables": {"FLEET": "lmcache", "LMCACHE_CLUSTER": "prod-eu"}}
    assert (await server.config("prod", ok))[0] == 200
    for env in (
        {"FLEET": "lmcache", "LMCACHE_CLUSTER": "staging-planted-value"},
        {"FLEET": "lmcache"},
        {"LMCACHE_CLUSTER": "prod-eu"},
    ):
        status, answer = await server.config("prod", {"env_variables": env})
        assert (status, answer["error"]["code"]) == (403, "access_denied")
    # global.yaml's access applies to every app, known or not.
    assert (await server.config("other", {"env_variables": {"FLEET": "x"}}))[0] == 403
    assert (await server.config("other", {"env_variables": {"FLEET": "lmcache"}}))[0] == 200
    assert "denied" in caplog.text
    assert "LMCACHE_CLUSTER" in caplog.text
    assert "staging-planted-value" not in caplog.text


def test_access_is_validated() -> None:
    files = {"apps/a.yaml": b"access:\n  env:\n    A: 1\n  cfg: {}\n"}
    _, issues = load_config_set(files, load_schema())
    assert [str(i).split(": error: ")[0] for i in issues] == ["apps/a.yaml:3:8", "apps/a.yaml:4:3"]


async def test_secrets_resolved_only_in_answers(
    tmp_path: Path,
    start_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "cache-password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("LMCACHE_CONFIG_SERVER_SECRET_API_TOKEN", API_TOKEN)
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "apps/a.yaml": """
                overrides:
                  remote_url: "lm://cache:${secret:cache-password}@cache.internal:65432"
                  extra_config:
                    api_token: "${secret:api-token}"
            """
        }
    )
    assert PASSWORD not in (repo.path / "apps" / "a.yaml").read_text()
    server = await start_server(
        repo.path,
        secrets_dir=str(secrets_dir),
        secret_scopes=secret_scopes(tmp_path, {"*": ["*"]}),
    )
    status, answer = await server.config("a")
    assert status == 200
    assert values(answer)["remote_url"] == f"lm://cache:{PASSWORD}@cache.internal:65432"
    assert json.loads(str(values(answer)["extra_config"])) == {"api_token": API_TOKEN}
    full_status = json.dumps(await server.status())
    for secret in (PASSWORD, API_TOKEN):
        assert secret not in full_status
        assert secret not in caplog.text

    # A rotated secret is picked up by the next sync, with no new commit.
    (secrets_dir / "cache-password").write_text("rotated-password\n")
    record = await server.syncer.sync(SyncTrigger.MANUAL)
    assert (record.result, record.new_commit) == ("updated", repo.head())
    assert values((await server.config("a"))[1])["remote_url"] == (
        "lm://cache:rotated-password@cache.internal:65432"
    )
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "unchanged"

    # A reference to a secret the server does not have rejects the commit.
    repo.commit_files({"apps/a.yaml": 'overrides:\n  remote_url: "${secret:missing}"\n'}, "typo")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [
        f"apps/a.yaml:2:1: error: secret 'missing' is not defined on this server "
        f"(no file {secrets_dir / 'missing'}, no variable LMCACHE_CONFIG_SERVER_SECRET_MISSING)"
    ]
    assert values((await server.config("a"))[1])["remote_url"].endswith("@cache.internal:65432")


def test_bad_secret_reference_is_a_validation_error() -> None:
    _, issues = load_config_set(
        {"apps/a.yaml": b'overrides:\n  remote_url: "${secret:../etc/passwd}"\n'}, load_schema()
    )
    assert str(issues[0]).startswith("apps/a.yaml:2:15: error: bad secret reference")
