"""Every kind of bad config is reported with its file, line and reason, all at once."""

from __future__ import annotations

import textwrap

import pytest

from server.config.loader import load_config_set
from server.config.schema import bundled_schema, load_schema

SCHEMA = load_schema()


def problems(files: dict[str, str], prefix: str = "") -> list[str]:
    encoded = {path: textwrap.dedent(text).lstrip("\n").encode() for path, text in files.items()}
    config_set, issues = load_config_set(encoded, SCHEMA, display_prefix=prefix)
    assert (config_set is None) == bool(issues)
    return [str(issue) for issue in issues]


def one_problem(files: dict[str, str]) -> str:
    found = problems(files)
    assert len(found) == 1, found
    return found[0]


def test_valid_repo_has_no_problems() -> None:
    assert (
        problems(
            {
                "global.yaml": """
                defaults:
                  chunk_size: 256
                  blend_thresholds: [0.1, 2]
                  lmcache_worker_ports: [8000, 8001]
                overrides:
                  local_disk: null
            """,
                "apps/a.b_c-1.yaml": """
                rules:
                  - name: r
                    when: {env: {HOST: "gpu-*"}, config: {chunk_size: 256, remote_serde: "na*"}}
                    overrides: {extra_config: {nested: {x: [1, 2]}}}
            """,
                "apps/README.md": "notes for authors",
                "README.md": "ignored",
                "profiles/other.yaml": "ignored: true",
            }
        )
        == []
    )


def test_unknown_key_suggests_nearest() -> None:
    assert one_problem({"global.yaml": "defaults:\n  chunk_sise: 256\n"}) == (
        "global.yaml:2:3: error: unknown LMCache config key 'chunk_sise'; did you mean 'chunk_size'?"
    )


def test_deprecated_alias_is_named() -> None:
    message = one_problem({"apps/a.yaml": "overrides:\n  controller_url: x\n"})
    assert message.startswith("apps/a.yaml:2:3: error: 'controller_url' is a deprecated alias")
    assert "'controller_pull_url'" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'local_cpu: "yes"',
            "2:14: error: 'local_cpu' must be true or false, got the string 'yes'",
        ),
        ("local_cpu: 1", "2:14: error: 'local_cpu' must be true or false, got integer 1"),
        (
            'chunk_size: "14"',
            "2:15: error: 'chunk_size' must be an integer, got the string '14'; remove the quotes",
        ),
        ("chunk_size: 1.5", "2:15: error: 'chunk_size' must be an integer, got number 1.5"),
        ("max_local_cpu_size: .inf", "2:23: error: 'max_local_cpu_size' must be a finite number"),
        (
            "remote_serde: no",
            "2:17: error: 'remote_serde' must be a string, got boolean False (YAML reads",
        ),
        ("remote_url: 2024-01-01", "2:15: error: 'remote_url' must be a string, got date"),
        ("lmcache_worker_ports: 8000", "2:25: error: 'lmcache_worker_ports' must be a list of int"),
        (
            "lmcache_worker_ports: [1, x]",
            "2:25: error: item 1 of 'lmcache_worker_ports' must be an integer",
        ),
        ("extra_config: [1]", "2:17: error: 'extra_config' must be a mapping, got list"),
        ("chunk_size: null", "2:15: error: 'chunk_size' cannot be null"),
        (
            "hidden_states_retrieve_mode: loose",
            "2:32: error: 'hidden_states_retrieve_mode' must be one of",
        ),
    ],
)
def test_wrong_types(line: str, expected: str) -> None:
    message = one_problem({"global.yaml": f"defaults:\n  {line}\n"})
    assert message.startswith(f"global.yaml:{expected}"), message


def test_unknown_sections_and_rule_keys() -> None:
    found = problems(
        {
            "apps/a.yaml": """
                default:
                  chunk_size: 1
                rules:
                  - name: r
                    wen: {env: {A: b}}
                    overrides: {chunk_size: 2}
                  - when: {envs: {A: b}}
                    overrides: {chunk_size: 2}
            """
        }
    )
    assert found[0] == (
        "apps/a.yaml:1:1: error: unknown section 'default'; did you mean 'defaults'? "
        "allowed: include, defaults, overrides, rules, access"
    )
    assert any(p.startswith("apps/a.yaml:5:5: error: unknown rule key 'wen'") for p in found)
    assert any(p.startswith("apps/a.yaml:4:5: error: rule 'r' has no 'when'") for p in found)
    assert any(p.startswith("apps/a.yaml:7:12: error: unknown condition 'envs'") for p in found)


def test_an_empty_rule_is_an_error_said_once() -> None:
    found = problems(
        {
            "apps/a.yaml": """
                rules:
                  - {}
                  - {wen: {env: {GPU: "H100*"}}}
                  - just a string
            """
        }
    )
    assert found == [
        "apps/a.yaml:2:5: error: rule 1 is empty: give it a 'when' and what it sets",
        found[1],  # the typo's own message (below), not a second one for the same rule
        "apps/a.yaml:4:5: error: rule 3 must be a mapping",
    ]
    assert found[1].startswith("apps/a.yaml:3:6: error: unknown rule key 'wen'")


def test_rule_problems() -> None:
    found = problems(
        {
            "global.yaml": """
                rules:
                  - name: a
                    when: {env: {GPU: 8}}
                    overrides: {chunk_size: 2}
                  - name: a
                    when: {config: {chunk_sizes: 1}}
                  - name: c
                    when: {config: {local_cpu: "yes please"}}
                    defaults: {local_cpu: false}
                  - name: d
                    when: {config: {chunk_size: true}}
                    defaults: {local_cpu: false}
            """
        }
    )
    assert "global.yaml:3:23: error: env condition 'GPU' must be a string or glob" in found[0]
    assert any(
        "global.yaml:5:5: error: duplicate rule name 'a' (first on line 2)" in p for p in found
    )
    assert any("global.yaml:5:5: error: rule 'a' sets nothing" in p for p in found)
    assert any(
        "global.yaml:6:21: error: unknown LMCache config key 'chunk_sizes'" in p for p in found
    )
    assert any("global.yaml:11:33: error: 'chunk_size' must be an integer" in p for p in found)
    # A string pattern against a bool field is a glob over "true"/"false": allowed.
    assert not any(":8:" in p for p in found)


def test_yaml_syntax_error_has_line() -> None:
    message = one_problem({"apps/a.yaml": "overrides:\n  chunk_size: [1,\n  x: 2\n"})
    assert message.startswith("apps/a.yaml:4:1: error: YAML syntax error: while parsing a flow")
    assert message.endswith("(the construct began on line 2)")
    message = one_problem({"apps/a.yaml": "overrides:\n  chunk_size: 1\n bad: 2\n"})
    assert message.startswith("apps/a.yaml:3:2: error: YAML syntax error:")


def test_duplicate_keys_anywhere() -> None:
    found = problems(
        {
            "global.yaml": """
                defaults:
                  chunk_size: 1
                  chunk_size: 2
                overrides:
                  extra_config:
                    a: 1
                    a: 2
            """
        }
    )
    assert found == [
        "global.yaml:3:3: error: duplicate key 'chunk_size' (first set on line 2); "
        "YAML would silently keep only the last one",
        "global.yaml:7:5: error: duplicate key 'a' (first set on line 6); "
        "YAML would silently keep only the last one",
    ]


def test_key_in_both_defaults_and_overrides() -> None:
    message = one_problem(
        {"global.yaml": "defaults: {chunk_size: 1}\noverrides: {chunk_size: 2}\n"}
    )
    assert message.startswith(
        "global.yaml:2:13: error: 'chunk_size' is in both defaults and overrides"
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("apps/bad id.yaml", "bad app id 'bad id'"),
        ("apps/-x.yaml", "bad app id '-x'"),
        ("apps/a.yml", "rename to apps/a.yaml"),
        ("apps/a.json", "app files are named apps/<app_id>.yaml"),
        ("apps/team/a.yaml", "no subdirectories"),
        ("global.yml", "rename to global.yaml"),
    ],
)
def test_bad_file_names(path: str, reason: str) -> None:
    message = one_problem({path: "defaults: {chunk_size: 1}\n"})
    assert message.startswith(f"{path}:1:1: error: ")
    assert reason in message


def test_file_shape_problems() -> None:
    assert one_problem({"global.yaml": "- a\n- b\n"}).startswith(
        "global.yaml:1:1: error: a config file must be a mapping"
    )
    assert one_problem({"global.yaml": "a: 1\n---\nb: 2\n"}).startswith(
        "global.yaml:3:1: error: only one YAML document per file is allowed"
    )
    assert one_problem({"global.yaml": "rules: {a: 1}\n"}).startswith(
        "global.yaml:1:8: error: rules must be a list"
    )
    assert one_problem({"global.yaml": "defaults: {a: !!python/name:os.system x}\n"}) == (
        "global.yaml:1:15: error: YAML tag tag:yaml.org,2002:python/name:os.system "
        "is not allowed in config files"
    )
    assert one_problem({"global.yaml": "defaults: {extra_config: !custom {a: 1}}\n"}).endswith(
        "YAML tag !custom is not allowed in config files"
    )


def test_empty_files_are_valid() -> None:
    assert problems({"global.yaml": "", "apps/a.yaml": "# nothing yet\n"}) == []


def test_billion_laughs_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join(f"*a{level - 1}" for _ in range(10))
        lines.append(f"a{level}: &a{level} [{refs}]")
    message = one_problem({"global.yaml": "\n".join(lines) + "\n"})
    assert "more than 100000 YAML nodes" in message


def test_all_errors_of_all_files_are_reported_sorted() -> None:
    found = problems(
        {
            "global.yaml": "defaults: {chunk_sise: 1}\n",
            "apps/b.yaml": "overrides: {local_cpu: 'no'}\n",
            "apps/a.yaml": "overrides: {remote_url: 5}\n",
        },
        prefix="configs/",
    )
    assert [p.split(":")[0] for p in found] == [
        "configs/apps/a.yaml",
        "configs/apps/b.yaml",
        "configs/global.yaml",
    ]


def test_bundled_schema_matches_installed_lmcache() -> None:
    bundled = bundled_schema()
    installed = load_schema()
    assert installed.source.startswith("installed lmcache 0.5.6")
    assert bundled.fields == installed.fields
    assert set(bundled.aliases) == set(installed.aliases)
    assert len(bundled.fields) == 108
