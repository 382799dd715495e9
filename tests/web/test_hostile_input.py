"""Hostile input: every limit gives a clear error, and nothing crashes the parser or loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.base.errors import MalformedBody
from server.config.loader import load_config_set
from server.config.schema import load_schema
from server.sync.state import SyncTrigger
from server.web.request_body import BodyLimits, parse_body, parse_body_fully
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import RunningServer, ServerFactory

BODY_LIMITS = BodyLimits()
SCHEMA = load_schema()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def post_config(server: RunningServer, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await server.client.post(
        "/config",
        params={"appId": "test-app"},
        data=body,
        headers={"Content-Type": "application/json"},
    )
    return response.status, await response.json()


async def test_request_limits(config_repo: ConfigRepo, start_server: ServerFactory) -> None:
    server = await start_server(config_repo.path, max_env_vars=10, max_json_depth=4)
    too_many = {"env_variables": {f"V{i}": "x" for i in range(11)}}
    status, answer = await post_config(server, json.dumps(too_many).encode())
    assert (status, answer["error"]["code"]) == (400, "malformed_body")
    assert "limit is 10" in answer["error"]["message"]

    deep = {"current_config": {"extra_config": {"a": {"b": {"c": {"d": 1}}}}}}
    status, answer = await post_config(server, json.dumps(deep).encode())
    assert status == 400
    assert "nests deeper than 4" in answer["error"]["message"]

    bomb = b'{"current_config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = await post_config(server, bomb)
    assert status in (400, 413)

    status, answer = await post_config(server, b'{"env_variables": {"A": 1}}')
    assert "values must be strings" in answer["error"]["message"]

    ok = {"env_variables": {f"V{i}": "x" for i in range(10)}, "current_config": {"a": {"b": 1}}}
    assert (await post_config(server, json.dumps(ok).encode()))[0] == 200


async def test_repo_limits(tmp_path: Path, start_server: ServerFactory) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 1}\n"})
    server = await start_server(repo.path, max_yaml_file_bytes=200, max_repo_files=3)
    good = repo.head()

    repo.commit_files({"apps/big.yaml": "# padding\n" * 50 + "overrides: {chunk_size: 2}\n"})
    await server.syncer.sync(SyncTrigger.MANUAL)
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == ["apps/big.yaml:1:1: error: file is 527 bytes; the limit is 200"]
    repo.remove("apps/big.yaml")
    repo.commit_files({f"apps/app{i}.yaml": "defaults: {}\n" for i in range(4)})
    await server.syncer.sync(SyncTrigger.MANUAL)
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [".:1:1: error: 5 config files; the limit is 3"]
    assert server.served_sha == good


def test_repo_total_size_limit() -> None:
    from server.config.loader import RepoLimits

    files = {f"apps/a{i}.yaml": b"defaults: {}\n" for i in range(10)}
    config_set, issues = load_config_set(files, SCHEMA, limits=RepoLimits(max_total_bytes=100))
    assert config_set is None
    assert [str(i) for i in issues] == [
        ".:1:1: error: config files total 130 bytes; the limit is 100"
    ]


def _outcome(raw: bytes, *, need_config: bool) -> tuple[object, ...]:
    try:
        body = parse_body(raw, BODY_LIMITS, need_config=need_config)
    except MalformedBody as refusal:
        assert refusal.status == 400
        assert refusal.message
        return ("refused",)
    assert isinstance(body.env, dict)
    if need_config:
        assert isinstance(body.config(), dict)
    return ("accepted", body.env, repr(body.instance_id))


def _parse_or_refuse(raw: bytes) -> None:
    # Without need_config (apps whose answer does not read the body) the fast path
    # accepts and refuses exactly what the full parse does, with the same env and id.
    full = _outcome(raw, need_config=True)
    assert repr(_outcome(raw, need_config=False)) == repr(full), raw
    try:
        reference = parse_body_fully(raw, BODY_LIMITS)
    except MalformedBody:
        assert full == ("refused",)
    else:
        assert full[1] == reference.env


def test_fast_and_full_parse_agree_on_edge_cases() -> None:
    deep = b"[" * 40 + b"]" * 40
    cases = [
        b'{"current_config": {"a": NaN}}',  # the standard library accepts NaN; orjson not
        b'{"current_config": {"a": 123456789012345678901234567890}}',
        b'{"current_config": {"a": 1e999}}',
        b'{"current_config": {"a": "\\ud800"}}',  # an escaped lone surrogate
        b'{"current_config": {"a": "\xff"}}',  # not UTF-8
        b'{"current_config": {"a": ' + deep + b"}}",
        b'{"current_config": {"a": "' + b"[" * 40 + b'"}}',  # brackets inside a string
        b'{"current_config": [1], "env_variables": {}}',
        b'{"current_config": null, "env_variables": null}',
        b'{"env_variables": {"A": 1}}',
        b'{"env_variables": {"A": "1"}, "env_variables": {"B": 2}}',
        b'{"current_config": {"lmcache_instance_id": "w1"}, "current_config": {}}',
        b'{"current_config": {"lmcache_instance_id": {"x": 1}}}',
        b'{"current_config": {"lmcache_instance_id": "a", "lmcache_instance_id": "b"}}',
        b'{"current_config": {"lmcache_instance_id": null}}',
        b'{"current_config": {}} trailing',
        b"[]",
        b'"text"',
    ]
    for raw in cases:
        _parse_or_refuse(raw)


@FUZZ
@given(st.binary(max_size=2048))
def test_parser_survives_any_bytes(raw: bytes) -> None:
    _parse_or_refuse(raw)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["current_config", "env_variables", "other"]), JSON_VALUES, max_size=3
    )
    # Bodies shaped like the client's, with the instance id among other fields.
    | st.fixed_dictionaries(
        {
            "current_config": st.dictionaries(
                st.sampled_from(["a", "x", "lmcache_instance_id", "other"]),
                JSON_VALUES,
                max_size=4,
            ),
            "env_variables": st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
        }
    )
)
def test_parser_survives_any_json_object(body: dict[str, Any]) -> None:
    _parse_or_refuse(json.dumps(body).encode())


def _load_or_report(files: dict[str, bytes]) -> None:
    config_set, issues = load_config_set(files, SCHEMA)
    assert (config_set is None) == bool(issues)
    for issue in issues:
        assert issue.line >= 1
        assert issue.message


@FUZZ
@given(st.text(max_size=400))
def test_loader_survives_any_text(text: str) -> None:
    _load_or_report({"global.yaml": text.encode(), "apps/a.yaml": text.encode()})


SECTION_VALUES = st.dictionaries(
    st.sampled_from(
        ["chunk_size", "local_cpu", "remote_url", "extra_config", "bogus", "blend_thresholds"]
    ),
    JSON_VALUES,
    max_size=4,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "defaults": SECTION_VALUES,
            "overrides": SECTION_VALUES,
            "rules": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": JSON_VALUES,
                        "when": st.dictionaries(
                            st.sampled_from(["env", "config", "x"]), JSON_VALUES
                        ),
                        "overrides": SECTION_VALUES,
                    },
                ),
                max_size=3,
            ),
            "include": JSON_VALUES,
        },
    ),
    st.sampled_from(["apps/a.yaml", "apps/../../etc/passwd.yaml", "global.yaml", "apps/x/y.yaml"]),
)
def test_loader_survives_any_structure(document: dict[str, Any], path: str) -> None:
    _load_or_report({path: yaml.safe_dump(document).encode()})
