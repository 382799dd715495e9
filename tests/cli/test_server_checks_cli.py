"""``validate`` and ``render`` decide what the server decides: its policy, secrets and scopes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.sync.state import SyncTrigger
from tests.support.clirun import call, spawn
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, secret_scopes

VERSIONS = 'lmcache_versions: ["0.5.6"]\n'


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "tree"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_validate_applies_the_key_policy_and_lmcache_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tree(
        tmp_path,
        {
            "global.yaml": VERSIONS,
            "apps/a.yaml": "overrides:\n  run_script_api_enabled: true\n  enable_controller: true\n",
        },
    )
    result = call(capsys, "validate", str(root))
    assert result.code == 1, result
    lines = result.out.splitlines()
    assert any("apps/a.yaml:2:1: error: 'run_script_api_enabled'" in line for line in lines)
    assert any(
        "apps/a.yaml:3:1: error: LMCache would refuse this config for app 'a'" in line
        and "controller_pull_url is required" in line
        and "the bundled rules of LMCache 0.5.6" in line
        for line in lines
    ), lines

    policy = tmp_path / "policy.yaml"
    policy.write_text("allow: [run_script_api_enabled]\n")
    (root / "apps/a.yaml").write_text("overrides:\n  run_script_api_enabled: true\n")
    assert call(capsys, "validate", str(root)).code == 1
    allowed = call(capsys, "validate", str(root), "--key-policy", str(policy))
    assert allowed.code == 0, allowed


def test_validate_checks_secrets_and_scopes_when_given_the_servers_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tree(
        tmp_path,
        {
            "global.yaml": VERSIONS,
            "apps/team.yaml": 'overrides:\n  remote_url: "lm://u:${secret:prod-db}@db:1"\n',
        },
    )
    # Without the server's files: valid, and it says what it could not check.
    plain = call(capsys, "validate", str(root))
    assert plain.code == 0, plain
    assert (
        "not checked here, only on the server: 1 secret(s) used: whether the server defines "
        "them (pass --secrets-dir or --secret-names)"
    ) in plain.err
    assert "not checked here, only on the server: secret scopes (pass --secret-scopes)" in plain.err
    report = json.loads(call(capsys, "validate", str(root), "--format", "json").out)
    assert len(report["not_checked"]) == 3

    undefined = call(capsys, "validate", str(root), "--secret-names", "other")
    assert undefined.code == 1
    assert "apps/team.yaml:2:1: error: secret 'prod-db' is not defined on the server" in (
        undefined.out
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "prod-db").write_text("never read by validate")
    scopes = secret_scopes(tmp_path, {"prod-db": ["prod-*"]})
    scoped = call(
        capsys, "validate", str(root), "--secrets-dir", str(secrets), "--secret-scopes", scopes
    )
    assert scoped.code == 1
    assert "secret 'prod-db' would be served to app 'team', but it is allowed for prod-* only" in (
        scoped.out
    )
    assert "never read" not in scoped.out + scoped.err
    render = call(capsys, "render", "team", "--repo", str(root), "--secret-scopes", scopes)
    assert render.code == 1
    assert "the server would not serve it" in render.err


async def test_validate_and_the_server_reject_the_same_commit(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"global.yaml": VERSIONS, "apps/a.yaml": "overrides: {chunk_size: 512}\n"})
    server = await start_server(repo.path)
    repo.commit_files(
        {"apps/a.yaml": 'overrides:\n  internal_api_server_host: "0.0.0.0"\n  enable_pd: true\n'}
    )
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    served = (await server.status())["last_rejected"]["errors"]
    cli = spawn("validate", str(repo.path), "--ref", "HEAD", cwd=tmp_path)
    assert cli.code == 1, cli
    cli_errors = [line for line in cli.out.splitlines() if ": error: " in line]
    # The same files, lines and policy reasons; LMCache's verdict from its own validation on
    # the server and from the bundled rules here.
    assert [e.split(": error: ")[0] for e in cli_errors] == [
        e.split(": error: ")[0] for e in served
    ]
    assert cli_errors[0] == served[0]  # the key policy's line, word for word


def test_diff_says_when_a_removal_is_not_declared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {"global.yaml": VERSIONS, "apps/a.yaml": "defaults: {}\n", "apps/b.yaml": "defaults: {}\n"}
    )
    repo.remove("apps/b.yaml")
    repo.commit("drop b")
    text = call(capsys, "diff", "HEAD~1", "HEAD", "--repo", str(repo.path))
    assert text.code == 0, text
    assert "**Removes app(s) b** without a `Removes-Apps: b` trailer" in text.out
    repo.git("commit", "--quiet", "--amend", "-m", "drop b\n\nRemoves-Apps: b")
    report = json.loads(
        call(capsys, "diff", "HEAD~1", "HEAD", "--repo", str(repo.path), "--format", "json").out
    )
    assert (report["removed_apps"], report["removals_not_declared"]) == (["b"], [])
