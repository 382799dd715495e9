"""The editors' JSON Schema agrees with the server's validation, and the shipped files are current.

Each verdict is taken twice: by the server's own loader (``load_config_set``, as
``validate`` and every commit) and by the ``jsonschema`` package on the same YAML
read as the server reads it (YAML 1.1). Only what the schema claims is compared:
what it says it cannot check (``NOT_CHECKED``) is tested as such.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from server.base.errors import ValueProblem
from server.config.json_schema import (
    NOT_CHECKED,
    FileKind,
    repository_file_schema,
    schema_text,
)
from server.config.loader import load_config_set, load_directory
from server.config.names import GLOBAL_FILE
from server.config.schema import FieldSpec, Schema, bundled_versions, schema_for_versions
from server.config.versions import declared_versions
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config-repo-example"
SCHEMA_DIR = EXAMPLE / ".schema"
REGENERATE = (
    "lmcache-config-server schema config-repo-example --output-dir config-repo-example/.schema"
)
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)
# Always beside the file under test, so that an include of it is valid.
FRAGMENT = "profiles/p.yaml"
# A fragment under test: validation reads it where an app includes it.
TESTED_FRAGMENT = "profiles/tested.yaml"


@cache
def validator(versions: tuple[str, ...], kind: FileKind) -> Draft7Validator:
    return Draft7Validator(repository_file_schema(versions, kind))


def kind_of(path: str) -> FileKind:
    return FileKind.GLOBAL if path == GLOBAL_FILE else FileKind.APP_OR_FRAGMENT


def schema_errors(
    path: str, text: str, versions: tuple[str, ...] = ("0.5.6",)
) -> list[tuple[Any, ...]]:
    """The paths (in the document) of the JSON Schema's errors; an empty file is {}."""
    document = yaml.safe_load(text)
    errors = validator(versions, kind_of(path)).iter_errors({} if document is None else document)
    return sorted((tuple(error.absolute_path) for error in errors), key=repr)


def server_issues(
    path: str, text: str, versions: tuple[str, ...] = ("0.5.6",)
) -> list[tuple[int, str]]:
    """(line, message) of each issue the server's loader reports for the file (line 0: in
    another file because of it, such as an include cycle)."""
    files = {FRAGMENT: b"defaults: {local_cpu: true}\n"}
    if path == TESTED_FRAGMENT:
        files["apps/a.yaml"] = f"include: [{TESTED_FRAGMENT}]\n".encode()
    files[path] = text.encode()
    config_set, issues = load_config_set(files, schema_for_versions(versions))
    assert (config_set is None) == bool(issues)
    return [(issue.line, issue.message) for issue in issues if issue.path == path] + [
        (0, str(issue)) for issue in issues if issue.path != path
    ]


# -- the schema itself --


@pytest.mark.parametrize("versions", [(v,) for v in bundled_versions()] + [("0.4.7", "0.5.6")])
@pytest.mark.parametrize("kind", list(FileKind))
def test_schema_is_valid_draft_07(versions: tuple[str, ...], kind: FileKind) -> None:
    schema = repository_file_schema(versions, kind)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)
    # Deterministic: the same input gives the same bytes, in any order of versions.
    assert schema_text(schema) == schema_text(repository_file_schema(versions[::-1], kind))


def test_committed_schemas_are_what_the_generator_makes() -> None:
    versions, issues = declared_versions(GLOBAL_FILE, (EXAMPLE / GLOBAL_FILE).read_bytes())
    assert (issues, versions) == ([], ("0.5.6",))
    for kind in FileKind:
        committed = (SCHEMA_DIR / kind.file_name).read_text("utf-8")
        expected = schema_text(repository_file_schema(versions, kind))
        assert committed == expected, (
            f"config-repo-example/.schema/{kind.file_name} is out of date: run {REGENERATE}"
        )


def example_yaml_files() -> list[Path]:
    """Every YAML file of the example that is config (hidden tools' files are not)."""
    return sorted(
        path
        for path in EXAMPLE.rglob("*.y*ml")
        if not any(part.startswith(".") for part in path.relative_to(EXAMPLE).parts)
    )


def test_every_example_file_names_its_schema_and_validates() -> None:
    files = example_yaml_files()
    assert {path.relative_to(EXAMPLE).as_posix() for path in files} == {
        "global.yaml",
        "apps/test-app.yaml",
        "apps/production-app.yaml",
        "profiles/h100.yaml",
    }
    for path in files:
        text = path.read_text("utf-8")
        relative = path.relative_to(EXAMPLE).as_posix()
        # The modeline leads the file: yaml-language-server reads it among the comments
        # before the document only.
        match = MODELINE.match(text)
        assert match, f"{relative} does not start with a yaml-language-server modeline"
        target = (path.parent / match.group(1)).resolve()
        assert target == (SCHEMA_DIR / kind_of(relative).file_name).resolve(), relative
        schema = json.loads(target.read_text("utf-8"))
        errors = list(Draft7Validator(schema).iter_errors(yaml.safe_load(text)))
        assert errors == [], f"{relative}: {[e.message for e in errors]}"
    # ...and the server still takes the repository, .schema/ and .vscode/ included.
    config_set, issues = load_directory(EXAMPLE, schema_for_versions(("0.5.6",)))
    assert issues == []
    assert config_set is not None
    assert config_set.warnings == ()


def test_vscode_settings_map_the_same_schemas() -> None:
    settings = json.loads((EXAMPLE / ".vscode" / "settings.json").read_text("utf-8"))
    schemas = settings["yaml.schemas"]
    assert set(schemas) == {f"./.schema/{kind.file_name}" for kind in FileKind}
    assert schemas["./.schema/global.schema.json"] == "/global.yaml"
    # The server reads YAML 1.1 (yes/no/on/off are booleans): so must the editor.
    assert settings["yaml.yamlVersion"] == "1.1"


# -- agreement with the server, case by case --

GOOD = {
    "app with every section": """
        include: [profiles/p.yaml]
        defaults: {chunk_size: 256, local_disk: null, blend_thresholds: [0.1, 2]}
        overrides:
          remote_url: "lm://cache:${secret:cache-password}@cache.internal:65432"
          extra_config: {tier: gold, nested: {x: [1, 2.5, null, "${secret:a.b-c_1}"]}}
          lmcache_worker_ports: [8000, 8001]
          hidden_states_retrieve_mode: skip_missing_chunks
        access:
          env: {LMCACHE_CLUSTER: "prod-*"}
        rules:
          - name: h100
            when:
              env: {GPU_TYPE: "H100*"}
              config: {chunk_size: 256, remote_serde: "na*", local_cpu: "t*"}
            overrides: {max_local_cpu_size: 40.0}
          - name: canary
            when: {percent: 10, by: env:HOSTNAME}
            defaults: {remote_serde: cachegen}
          - name: by-field
            when: {percent: 0.5, by: config:lmcache_instance_id}
            overrides: {}
          - name: by-bare-field
            when: {percent: 100, by: lmcache_instance_id, env: {}}
            defaults: {local_cpu: false}
    """,
    "empty file": "",
    "comments only": "# nothing yet\n",
    "condition out of range is fine": """
        rules:
          - when: {config: {chunk_size: 0, lmcache_worker_ports: []}}
            defaults: {local_cpu: true}
    """,
    "condition string for an int field is a glob": """
        rules:
          - when: {config: {chunk_size: "25*"}}
            defaults: {local_cpu: true}
    """,
    "an exclusive bound": "overrides: {pd_allocation_timeout_sec: 0.001}\n",
    "ports at the edges": "overrides: {pd_peer_init_port: [1, 65535]}\n",
    "a float field takes an integer": "overrides: {max_local_cpu_size: 10}\n",
    "access on config": "access: {config: {chunk_size: 256}}\n",
}
GOOD_GLOBAL = {
    "declared versions": """
        lmcache_versions: ["0.5.6"]
        defaults: {chunk_size: 256}
    """,
}
BAD = {
    "unknown key": "defaults: {chunk_sise: 256}\n",
    "deprecated alias": "overrides: {controller_url: 'tcp://c:1'}\n",
    "alias in a rule": """
        rules:
          - when: {percent: 5}
            overrides: {nixl_peer_host: h}
    """,
    "key of older LMCache versions only": "overrides: {cufile_buffer_size: 1}\n",
    "quoted yes for a bool": 'overrides: {local_cpu: "yes"}\n',
    "an integer for a bool": "overrides: {local_cpu: 1}\n",
    "quoted int": 'overrides: {chunk_size: "256"}\n',
    "fraction for an int": "overrides: {chunk_size: 1.5}\n",
    "unquoted no for a string": "overrides: {remote_serde: no}\n",
    "a date for a string": "overrides: {remote_url: 2024-01-01}\n",
    "chunk_size 0": "overrides: {chunk_size: 0}\n",
    "negative size": "overrides: {max_local_cpu_size: -1}\n",
    "port 70000": "overrides: {pd_proxy_port: 70000}\n",
    "port 0 in a list": "overrides: {lmcache_worker_ports: [8000, 0]}\n",
    "empty port list": "overrides: {lmcache_worker_ports: []}\n",
    "exclusive bound itself": "overrides: {pd_allocation_timeout_sec: 0}\n",
    "fraction above 1": "overrides: {lazy_memory_initial_ratio: 1.5}\n",
    "infinity": "overrides: {max_local_cpu_size: .inf}\n",
    "null for a non-nullable field": "overrides: {chunk_size: null}\n",
    "wrong choice": "overrides: {hidden_states_retrieve_mode: loose}\n",
    "a list for a scalar": "overrides: {chunk_size: [1]}\n",
    "a scalar for a list": "overrides: {lmcache_worker_ports: 8000}\n",
    "a wrong list item": "overrides: {blend_check_layers: [1, x]}\n",
    "a list for extra_config": "overrides: {extra_config: [1]}\n",
    "infinity inside extra_config": "overrides: {extra_config: {a: [.inf]}}\n",
    "control character in a URL": 'overrides: {remote_url: "lm://a\\0b"}\n',
    "line separator in a path": 'overrides: {local_disk: "file:///a\\u2028b"}\n',
    "a string too long": f"overrides: {{remote_url: {'x' * 4097}}}\n",
    "secret reference in an int field": 'overrides: {chunk_size: "${secret:size}"}\n',
    "secret reference in a bool field": 'overrides: {local_cpu: "${secret:flag}"}\n',
    "bad secret name": 'overrides: {remote_url: "lm://${secret:}@h"}\n',
    "bad secret name in a list": 'overrides: {storage_plugins: ["${secret:a b}"]}\n',
    "bad secret name in extra_config": 'overrides: {extra_config: {a: {b: "${secret:-x}"}}}\n',
    "unknown section": "defualts: {chunk_size: 256}\n",
    "a list as the file": "- a\n- b\n",
    "null defaults": "defaults:\n",
    "percent 150": """
        rules:
          - name: canary
            when: {percent: 150}
            overrides: {chunk_size: 512}
    """,
    "negative percent": """
        rules:
          - when: {percent: -1}
            overrides: {chunk_size: 512}
    """,
    "percent as a string": """
        rules:
          - when: {percent: "10"}
            overrides: {chunk_size: 512}
    """,
    "percent true": """
        rules:
          - when: {percent: true}
            overrides: {chunk_size: 512}
    """,
    "by without percent": """
        rules:
          - when: {by: env:HOSTNAME, env: {A: b}}
            overrides: {chunk_size: 512}
    """,
    "by of unknown form": """
        rules:
          - when: {percent: 5, by: "host:x"}
            overrides: {chunk_size: 512}
    """,
    "by of an unknown field": """
        rules:
          - when: {percent: 5, by: config:chunk_sise}
            overrides: {chunk_size: 512}
    """,
    "by env without a name": """
        rules:
          - when: {percent: 5, by: "env:"}
            overrides: {chunk_size: 512}
    """,
    "empty when": """
        rules:
          - when: {}
            overrides: {chunk_size: 512}
    """,
    "when with empty conditions": """
        rules:
          - when: {env: {}, config: {}}
            overrides: {chunk_size: 512}
    """,
    "rule without when": """
        rules:
          - name: r
            overrides: {chunk_size: 512}
    """,
    "rule that sets nothing": """
        rules:
          - name: r
            when: {env: {A: b}}
    """,
    "unknown rule key": """
        rules:
          - name: r
            wen: {env: {A: b}}
            overrides: {chunk_size: 512}
    """,
    "unknown condition": """
        rules:
          - when: {envs: {A: b}}
            overrides: {chunk_size: 512}
    """,
    "empty rule name": """
        rules:
          - name: " "
            when: {env: {A: b}}
            overrides: {chunk_size: 512}
    """,
    "rules not a list": "rules: {a: 1}\n",
    "a rule not a mapping": "rules: [x]\n",
    "env condition not a string": """
        rules:
          - when: {env: {GPU: 8}}
            overrides: {chunk_size: 512}
    """,
    "condition of an unknown field": """
        rules:
          - when: {config: {chunk_sizes: 1}}
            overrides: {chunk_size: 512}
    """,
    "condition of the wrong type": """
        rules:
          - when: {config: {chunk_size: true}}
            overrides: {chunk_size: 512}
    """,
    "condition with an alias": """
        rules:
          - when: {config: {controller_url: "tcp://*"}}
            overrides: {chunk_size: 512}
    """,
    "empty access": "access: {}\n",
    "empty rule": "rules:\n  - {}\n",
    "unknown access condition": "access: {percent: 5}\n",
    "include not a list": "include: profiles/p.yaml\n",
    "absolute include": "include: [/profiles/p.yaml]\n",
    "include leaving the root": "include: [../p.yaml]\n",
    "include not .yaml": "include: [profiles/p.yml]\n",
    "include of an app file": "include: [apps/b.yaml]\n",
    "include of global.yaml": "include: [global.yaml]\n",
    "the same include twice": "include: [profiles/p.yaml, profiles/p.yaml]\n",
    "include of a number": "include: [5]\n",
}
BAD_OUTSIDE_GLOBAL = {"lmcache_versions outside global.yaml": 'lmcache_versions: ["0.5.6"]\n'}
BAD_GLOBAL = {
    "unknown LMCache version": 'lmcache_versions: ["0.5.7"]\n',
    "version as a number": "lmcache_versions: [0.5]\n",
    "empty versions": "lmcache_versions: []\n",
    "a version twice": 'lmcache_versions: ["0.5.6", "0.5.6"]\n',
}


def cases(table: dict[str, str], paths: tuple[str, ...]) -> Iterator[Any]:
    for name, text in table.items():
        for path in paths:
            yield pytest.param(path, textwrap.dedent(text).lstrip("\n"), id=f"{path}: {name}")


ALL_KINDS = ("apps/a.yaml", TESTED_FRAGMENT, GLOBAL_FILE)


@pytest.mark.parametrize(
    ("path", "text"), [*cases(GOOD, ALL_KINDS), *cases(GOOD_GLOBAL, (GLOBAL_FILE,))]
)
def test_good_files_pass_both(path: str, text: str) -> None:
    assert (schema_errors(path, text), server_issues(path, text)) == ([], [])


@pytest.mark.parametrize(
    ("path", "text"),
    [
        *cases(BAD, ALL_KINDS),
        *cases(BAD_OUTSIDE_GLOBAL, ALL_KINDS[:2]),
        *cases(BAD_GLOBAL, ALL_KINDS),
    ],
)
def test_bad_files_fail_both(path: str, text: str) -> None:
    issues = server_issues(path, text)
    assert issues, "the server accepts it"
    assert schema_errors(path, text), f"the schema accepts what the server refuses: {issues}"


def test_the_schema_accepts_what_it_says_it_does_not_check() -> None:
    """Each of these the server refuses and the schema lets through, as its description says."""
    description = repository_file_schema(("0.5.6",), FileKind.APP_OR_FRAGMENT)["description"]
    assert all(item in description for item in NOT_CHECKED)
    unchecked = {
        "include paths after normalisation": "include: [profiles/../apps/b.yaml]\n",
        "whether an included fragment exists": "include: [profiles/missing.yaml]\n",
        "a key in both defaults and overrides": "defaults: {chunk_size: 1}\noverrides: {chunk_size: 2}\n",
        "two rules of one name": (
            "rules:\n  - {name: a, when: {percent: 1}, defaults: {}}\n"
            "  - {name: a, when: {percent: 2}, defaults: {}}\n"
        ),
        "an integer written as 256.0": "overrides: {chunk_size: 256.0}\n",
        ".nan": "overrides: {max_local_cpu_size: .nan}\n",
        "string lengths in UTF-8 bytes": f"overrides: {{remote_url: {'é' * 4000}}}\n",
        "extra_config's 64 KB": f"overrides: {{extra_config: {{a: {'x' * 70000}}}}}\n",
    }
    for what, text in unchecked.items():
        assert any(what in item for item in NOT_CHECKED), what
        assert server_issues("apps/a.yaml", text), what
        assert schema_errors("apps/a.yaml", text) == [], what


# -- every field of every bundled version --


def sample(schema: Schema, name: str) -> Any:
    """A value of the field that both validation and the schema should accept."""
    spec = schema.fields[name]
    if spec.choices:
        return spec.choices[0]
    scalars: dict[str, list[Any]] = {
        "bool": [True],
        "int": [1, 0, 8000],
        "float": [0.5, 1.0, 0.0],
        "str": ["x"],
        "dict": [{"k": "v"}],
    }
    candidates = scalars[str(spec.item_kind if spec.kind == "list" else spec.kind)]
    if spec.kind == "list":
        candidates = [[value] for value in candidates]
    for value in candidates:
        try:
            schema.check_value(name, value)
        except ValueProblem:
            continue
        return value
    raise AssertionError(f"no sample value for {name}")


def wrong(spec: FieldSpec, variant: int) -> Any:
    """A value of the wrong type for the field (two variants per kind)."""
    values: dict[str, list[Any]] = {
        "bool": ["yes", 1],  # the quoted "yes" the client would read as false
        "int": ["1", 1.5],
        "float": ["1.0", True],
        "str": [True, 5],
        "list": ["x", [True]],  # not a list; an item of the wrong type
        "dict": [[1], "x"],
    }
    return values[spec.kind][variant]


def flagged_keys(versions: tuple[str, ...], values: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The keys the server and the schema refuse, for one file holding every ``values``."""
    keys = sorted(values)
    text = "overrides:\n" + "".join(f"  {key}: {json.dumps(values[key])}\n" for key in keys)
    by_server = {keys[line - 2] for line, _ in server_issues("apps/a.yaml", text, versions)}
    by_schema = {path[1] for path in schema_errors("apps/a.yaml", text, versions)}
    return by_server, by_schema


VERSION_SETS = [(version,) for version in bundled_versions()] + [("0.4.7", "0.5.6")]


@pytest.mark.parametrize("versions", VERSION_SETS, ids=", ".join)
def test_every_field_agrees(versions: tuple[str, ...]) -> None:
    schema = schema_for_versions(versions)
    fields = schema.fields
    assert flagged_keys(versions, {name: sample(schema, name) for name in fields}) == (set(), set())
    for variant in (0, 1):
        values = {name: wrong(spec, variant) for name, spec in fields.items()}
        assert flagged_keys(versions, values) == (set(fields), set(fields)), variant
    nulls = {name: None for name in fields}
    refused = {name for name, spec in fields.items() if not spec.nullable}
    assert flagged_keys(versions, nulls) == (refused, refused)


@pytest.mark.parametrize("versions", VERSION_SETS, ids=", ".join)
def test_every_condition_agrees(versions: tuple[str, ...]) -> None:
    """when: config: takes a value of the field's type (out of range too) or any string."""
    schema = schema_for_versions(versions)
    fields = sorted(schema.fields)

    def flagged(values: dict[str, Any]) -> tuple[set[str], set[str]]:
        text = "rules:\n" + "".join(
            f"  - {{when: {{config: {{{name}: {json.dumps(values[name])}}}}}, defaults: {{}}}}\n"
            for name in fields
        )
        by_server = {fields[line - 2] for line, _ in server_issues("apps/a.yaml", text, versions)}
        by_schema = {fields[path[1]] for path in schema_errors("apps/a.yaml", text, versions)}
        return by_server, by_schema

    assert flagged({name: sample(schema, name) for name in fields}) == (set(), set())
    # A string is a glob whatever the field's type, and a condition is not range-checked.
    assert flagged({name: "glob*" for name in fields}) == (set(), set())
    wrongs = {name: [1] if schema.fields[name].kind in {"int", "float"} else 5 for name in fields}
    assert flagged(wrongs) == (set(fields), set(fields))


def test_keys_of_only_some_declared_versions_are_refused_with_the_server_message() -> None:
    versions = ("0.4.7", "0.5.6")
    both = schema_for_versions(versions)
    newer = schema_for_versions(("0.5.6",))
    only_newer = sorted(set(newer.fields) - set(both.fields))
    assert only_newer
    values = {name: sample(newer, name) for name in only_newer}
    assert flagged_keys(versions, values) == (set(only_newer), set(only_newer))
    settings = repository_file_schema(versions, FileKind.APP_OR_FRAGMENT)["definitions"]["settings"]
    hover = settings["properties"][only_newer[0]]["description"]
    assert "is not a config key of LMCache 0.4.7" in hover, hover


def test_hover_text_says_type_range_and_reason() -> None:
    settings = repository_file_schema(("0.5.6",), FileKind.GLOBAL)["definitions"]["settings"]
    properties = settings["properties"]
    chunk = properties["chunk_size"]
    assert chunk["description"].startswith(
        "int: at least 1 (LMCache splits the KV cache into chunks of this many tokens)."
    )
    assert "LMCACHE_CHUNK_SIZE" in chunk["description"]
    assert chunk["default"] == 256  # what completion inserts
    ports = properties["lmcache_worker_ports"]["description"]
    assert "each item at least 1 and at most 65535 (a TCP port is 1 to 65535)" in ports
    assert "${secret:NAME}" in properties["remote_url"]["description"]
    alias = properties["controller_url"]
    assert alias["not"] == {}
    assert alias["doNotSuggest"] is True
    assert "deprecated alias of 'controller_pull_url'" in alias["deprecationMessage"]
    # Every key the server knows for 0.5.6 is described.
    assert all(properties[name].get("description") for name in properties)
