"""Nothing silent (issue 14): ``validate`` warns of YAML nothing reads and fails on a tree
with no config; ``render`` of an unknown app says which app file was probably meant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clirun import call, spawn
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, BASIC_GLOBAL

UNREAD = {
    "global.yaml": "include: [profiles/base.yaml]\n" + BASIC_GLOBAL,
    "apps/test-app.yaml": BASIC_APP,
    "profiles/base.yaml": "defaults: {local_cpu: true}\n",
    "profiles/unused.yaml": "defaults: {chunk_size: 1}\n",  # a fragment no file includes
    "app/x.yaml": "overrides: {chunk_size: 1}\n",  # a mistyped apps/
    "globals.yaml": "defaults: {}\n",
    "notes/readme.md": "not YAML: never a warning\n",
    ".github/workflows/ci.yml": "on: push\n",  # a tool's file: never a warning
}
WARNINGS = [
    "app/x.yaml: warning: not read: 'app/' is not 'apps/' (app files are apps/<app_id>.yaml)",
    "globals.yaml: warning: not read: only 'global.yaml' is read at the config root",
    "profiles/unused.yaml: warning: not read: no file includes it "
    "(a fragment is read only where a file includes it)",
]
NO_CONFIG = (
    "no config found at {root}: expected global.yaml and/or apps/*.yaml; "
    "is the config in a subfolder? pass it as PATH or --path"
)


@pytest.fixture
def unread_repo(tmp_path: Path) -> ConfigRepo:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(UNREAD, "files nothing reads")
    return repo


def test_validate_warns_of_yaml_nothing_reads_and_still_passes(
    unread_repo: ConfigRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(unread_repo.path)
    for argv in (["validate"], ["validate", "--ref", "HEAD"]):
        result = call(capsys, *argv)
        assert result.code == 0, result
        assert result.out.splitlines() == WARNINGS
        assert "valid (1 app(s), 1 fragment(s), 3 warning(s)," in result.err

    report = json.loads(call(capsys, "validate", "--format", "json").out)
    assert report["valid"] is True
    assert [w["path"] for w in report["warnings"]] == ["app/x.yaml", "globals.yaml",
                                                       "profiles/unused.yaml"]  # fmt: skip
    assert report["warnings"][0]["message"].startswith("not read: 'app/' is not 'apps/'")


def test_validate_of_a_subdirectory_names_files_by_their_repository_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({f"lmcache/{path}": text for path, text in UNREAD.items()}, "in a folder")
    result = call(capsys, "validate", str(repo.path / "lmcache"))
    assert result.code == 0, result
    prefix = f"{repo.path}/lmcache/"
    assert result.out.splitlines() == [prefix + line for line in WARNINGS]


def test_a_clean_config_has_no_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"global.yaml": BASIC_GLOBAL, "apps/test-app.yaml": BASIC_APP}, "clean")
    result = call(capsys, "validate", str(repo.path))
    assert (result.code, result.out) == (0, "")
    assert "warning" not in result.err


def test_validate_fails_on_an_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = call(capsys, "validate", str(empty))
    assert result.code == 1, result
    root = str(empty)
    assert result.out.splitlines() == [f"{root}:1:1: error: {NO_CONFIG.format(root=root)}"]
    assert "1 error(s) in 1 file(s)" in result.err
    assert "valid (0" not in result.err


def test_validate_at_the_repo_root_names_the_subfolder_holding_the_config(
    tmp_path: Path,
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "README.md": "the config is below\n",
            "deploy/lmcache/global.yaml": BASIC_GLOBAL,
            "deploy/lmcache/apps/test-app.yaml": BASIC_APP,
            "deploy/lmcache/profiles/p.yaml": "defaults: {}\n",
        },
        "config in a subfolder",
    )
    expected = (
        ".:1:1: error: no config found at .: expected global.yaml and/or apps/*.yaml; "
        "the config seems to be in deploy/lmcache/: pass that folder as PATH or --path"
    )
    for argv in (["validate"], ["validate", "--ref", "HEAD"]):
        result = spawn(*argv, cwd=repo.path)  # as CI runs it, at the repository root
        assert result.code == 1, result
        assert result.out.splitlines() == [expected]
    # Given the folder, it is valid.
    assert spawn("validate", "deploy/lmcache", cwd=repo.path).code == 0


def test_validate_fails_on_apps_holding_no_app_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/README.md": "apps go here\n"}, "no app yet")
    result = call(capsys, "validate", str(repo.path))
    assert result.code == 1
    assert "no config found at" in result.out


def test_render_of_an_unknown_app_says_did_you_mean(
    config_repo: ConfigRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(config_repo.path)
    result = call(capsys, "render", "tset-app", "--repo", repo)
    assert result.code == 0, result
    assert (
        "no apps/tset-app.yaml: the global layer only; did you mean apps/test-app.yaml?"
        in result.out.splitlines()
    )
    # JSON: the answer's bytes stay exactly the server's; the hint goes to stderr.
    result = call(capsys, "render", "tset-app", "--repo", repo, "--ref", "HEAD", "--format", "json")
    assert json.loads(result.out)["app_known"] is False
    assert result.err == "note: no apps/tset-app.yaml; did you mean apps/test-app.yaml?\n"
    # Nothing close: no guess.
    result = call(capsys, "render", "zzz", "--repo", repo)
    assert "no apps/zzz.yaml: the global layer only" in result.out.splitlines()
    assert "did you mean" not in result.out
