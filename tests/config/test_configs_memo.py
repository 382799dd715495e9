"""A rebuild serialises only the apps whose files changed, and answers exactly as a fresh
snapshot would (``config.snapshot.ConfigsMemo``)."""

from __future__ import annotations

import json

from server.config.loader import load_config_set
from server.config.model import ConfigSet
from server.config.parse_memo import ParseMemo
from server.config.schema import load_schema
from server.config.snapshot import CommitInfo, ConfigsMemo, Snapshot

SCHEMA = load_schema()

FILES = {
    "global.yaml": b"include: [fragments/base.yaml]\noverrides:\n  chunk_size: 256\n",
    "fragments/base.yaml": b"defaults:\n  local_cpu: true\n",
    "apps/plain.yaml": b"overrides:\n  max_local_cpu_size: 5.0\n",
    "apps/other.yaml": b"overrides:\n  max_local_cpu_size: 7.0\n",
    "apps/secret.yaml": b'overrides:\n  remote_url: "redis://${secret:REDIS_PASSWORD}@cache:6379"\n',
    "apps/ruled.yaml": (
        b"overrides:\n  max_local_cpu_size: 3.0\nrules:\n  - name: big\n"
        b"    when: {env: {GPU: H100}}\n    overrides:\n      max_local_cpu_size: 30.0\n"
    ),
}
SECRETS = {"REDIS_PASSWORD": "s3cret"}


def snapshot(
    config_set: ConfigSet,
    sha: str,
    memo: ConfigsMemo | None,
    secrets: dict[str, str] | None = None,
) -> Snapshot:
    return Snapshot(
        commit=CommitInfo(sha=sha, author="a", authored_at="2026-12-02T00:00:00Z", subject="s"),
        config_set=config_set,
        loaded_at=0.0,
        schema_source="test",
        secrets=SECRETS if secrets is None else secrets,
        configs_memo=memo,
    )


def loaded(files: dict[str, bytes], parse_memo: ParseMemo) -> ConfigSet:
    config_set, issues = load_config_set(files, SCHEMA, memo=parse_memo)
    assert config_set is not None, issues
    return config_set


def bodies(served: Snapshot) -> dict[str | None, bytes]:
    """Every app's answer, an unknown app's and the one without an appId."""
    env = {"GPU": "H100"}
    asked: list[str | None] = [*served.app_ids, "unknown-app", None]
    return {app_id: served.answer(app_id, env, {}).body for app_id in asked}


def test_rebuilt_answers_are_those_of_a_fresh_snapshot_after_each_kind_of_change() -> None:
    parse_memo, configs_memo = ParseMemo(), ConfigsMemo()
    first = snapshot(loaded(FILES, parse_memo), "a" * 40, configs_memo)
    assert bodies(first) == bodies(snapshot(first.config_set, "a" * 40, None))
    changes: list[tuple[dict[str, bytes], dict[str, str]]] = [
        ({**FILES, "apps/plain.yaml": b"overrides:\n  max_local_cpu_size: 6.0\n"}, SECRETS),
        ({**FILES, "global.yaml": FILES["global.yaml"].replace(b"256", b"512")}, SECRETS),
        ({**FILES, "fragments/base.yaml": b"defaults:\n  local_cpu: false\n"}, SECRETS),
        (FILES, {"REDIS_PASSWORD": "rotated"}),
        ({name: data for name, data in FILES.items() if name != "apps/other.yaml"}, SECRETS),
        (FILES, SECRETS),
    ]
    for index, (files, secrets) in enumerate(changes):
        sha = f"{index:040d}"
        config_set = loaded(files, parse_memo)
        rebuilt = snapshot(config_set, sha, configs_memo, secrets)
        fresh = snapshot(config_set, sha, None, secrets)
        assert bodies(rebuilt) == bodies(fresh), files
        for body in bodies(rebuilt).values():
            # Spliced from serialised parts, it is still json.dumps of the whole, byte for byte.
            assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()
            assert json.loads(body)["version"] == sha


def test_an_app_is_reused_while_its_files_and_the_secrets_are_the_same() -> None:
    parse_memo, configs_memo = ParseMemo(), ConfigsMemo()
    first = loaded(FILES, parse_memo)
    snapshot(first, "a" * 40, configs_memo)
    changed = loaded({**FILES, "apps/plain.yaml": b"overrides:\n  chunk_size: 128\n"}, parse_memo)
    # The parse memo hands back the same objects for unchanged files...
    assert changed.layers("other") == first.layers("other")
    assert all(a is b for a, b in zip(changed.layers("other"), first.layers("other"), strict=True))
    configs_memo.start(SECRETS)
    assert configs_memo.get("other", changed.layers("other")) is not None
    # ...and not for the changed one, whose configs are made again.
    assert configs_memo.get("plain", changed.layers("plain")) is None
    # A rule-less app was kept; the app with rules is answered per request, never kept here.
    assert configs_memo.get("ruled", first.layers("ruled")) is None
    configs_memo.finish()

    # Any other secret value starts again: an app's configs may hold a resolved secret.
    configs_memo.start({"REDIS_PASSWORD": "rotated"})
    assert configs_memo.get("other", changed.layers("other")) is None
    configs_memo.finish()


def test_the_memo_keeps_only_the_apps_of_the_last_snapshot() -> None:
    parse_memo, configs_memo = ParseMemo(), ConfigsMemo()
    first = loaded(FILES, parse_memo)
    snapshot(first, "a" * 40, configs_memo)
    without_other = {name: data for name, data in FILES.items() if name != "apps/other.yaml"}
    snapshot(loaded(without_other, parse_memo), "b" * 40, configs_memo)
    configs_memo.start(SECRETS)
    assert configs_memo.get("other", first.layers("other")) is None  # removed: not kept
    assert configs_memo.get("plain", first.layers("plain")) is not None
