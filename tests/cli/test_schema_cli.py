"""``schema``: the editors' JSON Schema, for the versions global.yaml declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.config.json_schema import FileKind, repository_file_schema, schema_text
from tests.support.clirun import call, spawn
from tests.support.paths import ROOT


def test_prints_the_schema_of_the_declared_versions() -> None:
    result = spawn("schema", "config-repo-example", cwd=ROOT)
    assert (result.code, result.err) == (0, "")
    assert result.out == schema_text(repository_file_schema(("0.5.6",), FileKind.APP_OR_FRAGMENT))
    result = spawn("schema", "config-repo-example", "--global", cwd=ROOT)
    assert result.code == 0
    assert "lmcache_versions" in json.loads(result.out)["properties"]


def test_output_dir_writes_what_the_modelines_name(tmp_path: Path) -> None:
    (tmp_path / "global.yaml").write_text('lmcache_versions: ["0.4.7", "0.5.6"]\n')
    result = spawn("schema", str(tmp_path), "--output-dir", str(tmp_path / ".schema"), cwd=ROOT)
    assert result.code == 0, result.err
    for kind in FileKind:
        written = (tmp_path / ".schema" / kind.file_name).read_text()
        assert written == schema_text(repository_file_schema(("0.4.7", "0.5.6"), kind))
        assert f"wrote {tmp_path}/.schema/{kind.file_name} (LMCache 0.4.7, 0.5.6)" in result.err


def test_versions_from_the_flag_or_the_bundled_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "s.json"
    result = call(
        capsys, "schema", str(tmp_path), "--lmcache-version", "0.4.1", "--output", str(target)
    )
    assert result.code == 0
    assert json.loads(target.read_text())["title"].endswith("(LMCache 0.4.1)")
    result = call(capsys, "schema", str(tmp_path))  # no global.yaml: 0.5.6, and said so
    assert json.loads(result.out)["title"].endswith("(LMCache 0.5.6)")
    assert "no lmcache_versions in" in result.err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["--lmcache-version", "0.5.7"],
            2,
            "unknown LMCache version '0.5.7'; did you mean '0.5.6'?",
        ),
        (["no-such-dir"], 2, "'no-such-dir' is not a directory"),
        (["--output", "a.json", "--output-dir", "d"], 2, "not allowed with argument"),
    ],
)
def test_usage_errors(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = call(capsys, "schema", *argv)
    assert result.code == code
    assert message in result.err


def test_invalid_declared_versions_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "global.yaml").write_text('lmcache_versions: ["0.5.7"]\n')
    result = call(capsys, "schema", str(tmp_path))
    assert (result.code, result.out) == (1, "")
    assert (
        "global.yaml:1:20: error: lmcache_versions: unknown LMCache version '0.5.7'" in result.err
    )


def test_validate_warns_when_the_committed_schema_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example repository, whose .schema/ matches its lmcache_versions: no warning.
    assert call(capsys, "validate", str(ROOT / "config-repo-example")).out == ""
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "a.yaml").write_text("overrides: {chunk_size: 256}\n")
    (tmp_path / "global.yaml").write_text('lmcache_versions: ["0.5.6"]\n')
    assert (
        call(capsys, "schema", str(tmp_path), "--output-dir", str(tmp_path / ".schema")).code == 0
    )
    assert call(capsys, "validate", str(tmp_path)).out == ""
    # An upgrade is declared, and the schema is not written again: editors would still
    # mark 0.4.7's missing keys as fine. validate says so, and which command fixes it.
    (tmp_path / "global.yaml").write_text('lmcache_versions: ["0.4.7", "0.5.6"]\n')
    result = call(capsys, "validate", str(tmp_path))
    assert result.code == 0  # a warning, never a failure
    command = f"lmcache-config-server schema {tmp_path} --output-dir {tmp_path}/.schema"
    assert result.out.splitlines() == [
        f"{tmp_path}/.schema/{kind.file_name}: warning: not the editors' schema for LMCache "
        f"0.4.7, 0.5.6 (out of date, or edited by hand): editors will disagree with "
        f"validate; run `{command}`"
        for kind in FileKind
    ]
    assert "2 warning(s)" in result.err
    assert (
        call(capsys, "schema", str(tmp_path), "--output-dir", str(tmp_path / ".schema")).code == 0
    )
    assert call(capsys, "validate", str(tmp_path)).out == ""
