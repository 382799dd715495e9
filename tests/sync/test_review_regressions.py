"""Regression tests for defects found in review: none of these may stop syncing or leak."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from server.config.loader import RepoLimits
from server.config.schema import load_schema
from server.git.mirror import GitMirror, MirrorReader
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, secret_scopes, values


async def test_deeply_nested_yaml_is_rejected_and_syncing_goes_on(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    good = server.served_sha
    config_repo.commit_files(
        {"apps/b.yaml": "overrides:\n  extra_config: " + "[" * 5000 + "]" * 5000 + "\n"}
    )
    assert (await server.syncer.refresh(SyncTrigger.MANUAL)).result == "rejected"
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors[0].startswith("apps/b.yaml:")
    assert server.served_sha == good
    fixed = config_repo.commit_files({"apps/b.yaml": "overrides: {chunk_size: 3}\n"}, "fix")
    assert (await server.syncer.refresh(SyncTrigger.MANUAL)).result == "updated"
    assert server.served_sha == fixed
    assert (await server.status())["sync_task_error"] is None


async def test_unreadable_secret_is_a_rejection_not_a_crash(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pw").write_text("good")
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": 'overrides:\n  remote_url: "lm://u:${secret:pw}@h:1"\n'})
    server = await start_server(
        repo.path, secrets_dir=str(secrets), secret_scopes=secret_scopes(tmp_path, {"pw": ["a"]})
    )
    (secrets / "pw").write_bytes(b"\xc3rotated-binary")
    record = await server.syncer.refresh(SyncTrigger.MANUAL)
    assert record.result == "rejected"
    status = await server.status()
    assert status["sync_task_error"] is None
    assert "not UTF-8 text" in status["last_rejected"]["errors"][0]
    assert "rotated-binary" not in json.dumps(status)
    assert values((await server.config("a"))[1])["remote_url"] == "lm://u:good@h:1"
    (secrets / "pw").write_text("rotated")
    assert (await server.syncer.refresh(SyncTrigger.MANUAL)).result == "updated"
    assert values((await server.config("a"))[1])["remote_url"] == "lm://u:rotated@h:1"


async def test_commit_rejected_for_a_missing_secret_serves_once_it_exists(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": 'overrides:\n  remote_url: "${secret:pw}"\n'})
    server = await start_server(
        repo.path, secrets_dir=str(secrets), secret_scopes=secret_scopes(tmp_path, {"pw": ["a"]})
    )
    assert server.served_sha is None
    (secrets / "pw").write_text("lm://cache:1")
    assert (await server.syncer.refresh(SyncTrigger.MANUAL)).result == "updated"
    assert values((await server.config("a"))[1])["remote_url"] == "lm://cache:1"


async def test_restart_with_another_ref_does_not_restore_the_old_refs_commit(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 111}\n"}, "main config")
    repo.git("branch", "release")
    repo.git("checkout", "--quiet", "release")
    release = repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 222}\n"}, "release config")
    data_dir = tmp_path / "data"
    first = await start_server(repo.path, data_dir=data_dir)
    await first.client.close()
    away = repo.path.with_name("away")
    repo.path.rename(away)  # the remote is down for the restart
    second = await start_server(repo.path, data_dir=data_dir, ref="release")
    # The mirror's own copy of release (validated), never main's recorded commit.
    assert second.served_sha == release
    assert values((await second.config("a"))[1])["chunk_size"] == 222


def test_blobs_over_the_limits_are_never_read(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/small.yaml": "defaults: {}\n", "apps/big.yaml": "# x\n" * 5000})
    big = repo.git("rev-parse", "HEAD:apps/big.yaml")
    mirror = GitMirror(
        remote=str(repo.path), path=tmp_path / "data" / "mirror.git", ref="main", timeout=30
    )
    mirror.ensure()
    mirror.fetch()
    reader = MirrorReader(mirror)
    _, config_set, issues = reader.load_commit(
        mirror.resolve(), "", load_schema(), RepoLimits(max_file_bytes=1000)
    )
    assert config_set is None
    assert [str(i) for i in issues] == [
        "apps/big.yaml:1:1: error: file is 20000 bytes; the limit is 1000"
    ]
    assert big not in reader._blobs._kept  # refused by its size in the tree, never read


async def test_lone_surrogates_cannot_break_the_dashboard(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    body = b'{"current_config": {"lmcache_instance_id": "w\\ud800x"}, "env_variables": {"HOSTNAME": "h\\udc00"}}'
    response = await server.client.get("/config", params={"appId": "test-app"}, data=body)
    assert response.status == 200
    page = await server.client.get("/dashboard/fleet")
    assert page.status == 200
    assert "w?x" in await page.text()


async def test_webhook_with_a_non_string_ref_is_ignored(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path, webhook_secret="s")
    body = json.dumps({"ref": ["refs/heads/main"]}).encode()
    signature = hmac.new(b"s", body, hashlib.sha256).hexdigest()
    response = await server.client.post(
        "/webhook/github",
        data=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}"},
    )
    assert response.status == 202
    assert (await response.json())["accepted"] is False


def test_history_memo_is_bounded_by_fingerprints() -> None:
    from server.git.history import FingerprintMemo

    memo = FingerprintMemo(max_trees=100, max_fingerprints=25)
    for tree in range(10):
        memo.put(f"tree{tree}", {f"app{i}": "x" for i in range(10)})
    assert [memo.get(f"tree{t}")[0] for t in range(10)] == [False] * 8 + [True] * 2
