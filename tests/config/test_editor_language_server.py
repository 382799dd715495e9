"""The shipped schema in a real editor's server: yaml-language-server, over LSP, on the example.

What an author sees in VS Code, Neovim, JetBrains or Helix: errors as they type, for
the files' modeline schema (and, without a modeline, the .vscode/settings.json globs),
with the example's editor settings (YAML 1.1, as the server reads YAML).
``make test-tools`` installs the pinned yaml-language-server (npm).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.language_server import LanguageServer
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config-repo-example"
YAML_LANGUAGE_SERVER = ROOT / ".tools/yaml-language-server/node_modules/.bin/yaml-language-server"
APP_MODELINE = "# yaml-language-server: $schema=../.schema/app-or-fragment.schema.json\n"


def example_editor_settings() -> dict[str, Any]:
    """The yaml.* settings of the example's .vscode/settings.json, as VS Code sends them."""
    settings = json.loads((EXAMPLE / ".vscode" / "settings.json").read_text("utf-8"))
    yaml_settings = {
        k.removeprefix("yaml."): v for k, v in settings.items() if k.startswith("yaml.")
    }
    return {**yaml_settings, "validate": True, "hover": True, "schemaStore": {"enable": False}}


@pytest.fixture(scope="module")
def server() -> Iterator[LanguageServer]:
    if not YAML_LANGUAGE_SERVER.is_file():
        pytest.fail(
            f"{YAML_LANGUAGE_SERVER.relative_to(ROOT)} is missing: `make test-tools` installs "
            "the pinned yaml-language-server (npm)"
        )
    command = [str(YAML_LANGUAGE_SERVER), "--stdio"]
    with LanguageServer(command, EXAMPLE, example_editor_settings()) as language_server:
        yield language_server


def messages(diagnostics: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted((d["range"]["start"]["line"] + 1, d["message"]) for d in diagnostics)


def test_errors_as_the_author_types(server: LanguageServer) -> None:
    uri = server.open(
        EXAMPLE / "apps" / "being-edited.yaml",
        APP_MODELINE
        + "overrides:\n"
        + "  chunk_sise: 512\n"  # line 3
        + '  local_cpu: "yes"\n'
        + "  controller_url: tcp://c:1\n"
        + "  remote_serde: no\n"  # YAML 1.1: a boolean, as the server reads it
        + "  chunk_size: 0\n",
    )
    found = messages(server.diagnostics_of(uri))
    assert (3, "Property chunk_sise is not allowed.") in found, found
    assert (4, 'Incorrect type. Expected "boolean".') in found, found
    assert any(line == 5 and "deprecated alias of 'controller_pull_url'" in m for line, m in found)
    assert any(line == 6 and m.startswith("Incorrect type.") for line, m in found), found
    assert (7, "Value is below the minimum of 1.") in found, found
    assert {line for line, _ in found} == {3, 4, 5, 6, 7}


def test_the_example_files_have_no_errors(server: LanguageServer) -> None:
    files = [
        EXAMPLE / "global.yaml",
        *sorted(EXAMPLE.glob("apps/*.yaml")),
        EXAMPLE / "profiles/h100.yaml",
    ]
    for path in files:
        uri = server.open(path, path.read_text("utf-8"))
        assert server.diagnostics_of(uri) == [], path.relative_to(EXAMPLE)
    # ...with the schema in force: the same server flags a typo in the same folder.
    uri = server.open(EXAMPLE / "apps" / "typo.yaml", APP_MODELINE + "defualts: {}\n")
    assert messages(server.diagnostics_of(uri)) == [(2, "Property defualts is not allowed.")]


def test_without_a_modeline_the_settings_globs_apply(server: LanguageServer) -> None:
    uri = server.open(EXAMPLE / "apps" / "no-modeline.yaml", "defaults:\n  chunk_sise: 1\n")
    assert messages(server.diagnostics_of(uri)) == [(2, "Property chunk_sise is not allowed.")]
    uri = server.open(EXAMPLE / "global.yaml", 'lmcache_versions: ["0.5.6"]\nrules: [{}]\n')
    assert server.diagnostics_of(uri) == []


def test_hover_shows_type_range_and_reason(server: LanguageServer) -> None:
    path = EXAMPLE / "apps" / "test-app.yaml"
    text = path.read_text("utf-8")
    uri = server.open(path, text)
    server.diagnostics_of(uri)
    line = next(
        n for n, row in enumerate(text.splitlines()) if row.strip().startswith("chunk_size:")
    )
    shown = server.hover(uri, line, text.splitlines()[line].index("chunk_size") + 2)
    assert "at least 1 (LMCache splits the KV cache into chunks of this many tokens)" in shown, (
        shown
    )
