"""``validate``: the server's checks from the command line, with the server's exact verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clirun import call, spawn
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, BASIC_GLOBAL, ServerFactory

BROKEN = {
    "global.yaml": """
        include: [profiles/base.yaml]
        defualts:
          chunk_size: 256
    """,
    "apps/a.yaml": """
        overrides:
          chunk_sise: 512
          local_cpu: "yes"
        rules:
          - name: canary
            when: {percent: 120}
            overrides: {chunk_size: 1}
          - name: no-when
            overrides: {chunk_size: 1}
    """,
    "apps/b.yaml": """
        include:
          - ../etc/x.yaml
          - profiles/missing.yaml
        defaults:
          chunk_size: 1
          chunk_size: 2
    """,
    "apps/c.yaml": "overrides: [\n",
    "apps/Bad Name.yaml": "defaults: {}\n",
    "profiles/base.yaml": "include: [profiles/loop.yaml]\n",
    "profiles/loop.yaml": "include: [profiles/base.yaml]\n",
}

BROKEN_REPORT = [
    "apps/Bad Name.yaml:1:1: error: bad app id 'Bad Name' in the file name: app ids are "
    "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
    "apps/a.yaml:2:3: error: unknown LMCache config key 'chunk_sise'; did you mean 'chunk_size'?",
    "apps/a.yaml:3:14: error: 'local_cpu' must be true or false, got the string 'yes': the "
    "LMCache client reads every string except 'true' and '1' as false; write true or false "
    "unquoted",
    "apps/a.yaml:6:21: error: percent must be a number from 0 to 100, got 120",
    "apps/a.yaml:8:5: error: rule 'no-when' has no 'when'; put unconditional settings in the "
    "file's own defaults/overrides",
    "apps/b.yaml:2:5: error: cannot include '../etc/x.yaml': the path leaves the config root",
    "apps/b.yaml:3:5: error: cannot include 'profiles/missing.yaml': no such file",
    "apps/b.yaml:6:3: error: duplicate key 'chunk_size' (first set on line 5); YAML would "
    "silently keep only the last one",
    "apps/c.yaml:2:1: error: YAML syntax error: while parsing a flow node expected the node "
    "content, but found '<stream end>'",
    "global.yaml:2:1: error: unknown section 'defualts'; did you mean 'defaults'? allowed: "
    "include, defaults, overrides, rules, access, lmcache_versions",
    "profiles/loop.yaml:1:11: error: include cycle: profiles/base.yaml -> profiles/loop.yaml -> "
    "profiles/base.yaml",
]


@pytest.fixture
def broken_repo(tmp_path: Path) -> ConfigRepo:
    repo = ConfigRepo(tmp_path / "broken")
    repo.commit_files(BROKEN, "broken")
    return repo


def test_every_error_with_file_and_line(
    broken_repo: ConfigRepo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(broken_repo.path)
    on_disk = call(capsys, "validate")
    assert on_disk.code == 1
    assert on_disk.out.splitlines() == BROKEN_REPORT
    assert on_disk.err == "11 error(s) in 6 file(s) of .\n"
    committed = call(capsys, "validate", "--ref", "HEAD")
    assert (committed.code, committed.out) == (1, on_disk.out)
    # Run from elsewhere, paths are shown the way the directory was named.
    monkeypatch.chdir(broken_repo.path.parent)
    elsewhere = call(capsys, "validate", "broken")
    assert elsewhere.out.splitlines() == [f"broken/{line}" for line in BROKEN_REPORT]


def test_json_output(broken_repo: ConfigRepo, capsys: pytest.CaptureFixture[str]) -> None:
    result = call(capsys, "validate", str(broken_repo.path), "--ref", "HEAD", "--format", "json")
    report = json.loads(result.out)
    assert result.code == 1
    assert report["valid"] is False
    assert report["commit"] == broken_repo.head()
    assert report["issues"][1] == {
        "path": "apps/a.yaml",
        "line": 2,
        "column": 3,
        "message": "unknown LMCache config key 'chunk_sise'; did you mean 'chunk_size'?",
    }
    assert [
        f"{i['path']}:{i['line']}:{i['column']}: error: {i['message']}" for i in report["issues"]
    ] == BROKEN_REPORT

    broken_repo.commit_files(
        {
            "global.yaml": "include: [profiles/base.yaml]\n",
            "profiles/base.yaml": BASIC_GLOBAL,
            "apps/a.yaml": BASIC_APP,
        }
    )
    for path in ("apps/b.yaml", "apps/c.yaml", "apps/Bad Name.yaml", "profiles/loop.yaml"):
        broken_repo.remove(path)
    broken_repo.commit("fixed")
    result = call(capsys, "validate", str(broken_repo.path), "--format", "json")
    assert result.code == 0
    report = json.loads(result.out)
    assert (report["valid"], report["issues"], report["apps"], report["fragments"]) == (
        True,
        [],
        ["a"],
        ["profiles/base.yaml"],
    )
    assert report["commit"] is None  # the working tree
    assert report["schema"].startswith("installed lmcache")


def test_exit_codes_of_the_real_command(broken_repo: ConfigRepo, tmp_path: Path) -> None:
    good = ConfigRepo(tmp_path / "good")
    good.commit_files({"global.yaml": BASIC_GLOBAL, "apps/test-app.yaml": BASIC_APP})
    valid = spawn("validate", cwd=good.path)
    assert (valid.code, valid.out) == (0, "")
    assert valid.err.startswith(".: valid (1 app(s), 0 fragment(s), ")
    assert spawn("validate", "--ref", "HEAD", cwd=good.path).code == 0

    invalid = spawn("validate", str(broken_repo.path), cwd=tmp_path)
    assert invalid.code == 1
    assert len(invalid.out.splitlines()) == len(BROKEN_REPORT)

    not_a_dir = spawn("validate", "no-such-dir", cwd=tmp_path)
    assert not_a_dir.code == 2
    assert "'no-such-dir' is not a directory" in not_a_dir.err
    bad_ref = spawn("validate", "--ref", "no-such-branch", cwd=good.path)
    assert (bad_ref.code, bad_ref.out) == (2, "")
    assert "unknown revision 'no-such-branch'" in bad_ref.err
    assert spawn("validate", "--format", "xml", cwd=good.path).code == 2
    outside = tmp_path / "plain"
    outside.mkdir()
    not_git = spawn("validate", "--ref", "HEAD", cwd=outside)
    assert (not_git.code, "is not inside a git repository" in not_git.err) == (2, True)


def test_symlinked_app_file_on_disk_and_in_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.write("elsewhere.yaml", "defaults: {chunk_size: 1}\n")
    (repo.path / "apps").mkdir()
    (repo.path / "apps" / "a.yaml").symlink_to("../elsewhere.yaml")
    repo.commit()
    expected = "apps/a.yaml:1:1: error: symbolic links are not followed in a config repository\n"
    assert call(capsys, "validate", str(repo.path), "--ref", "HEAD").out == expected
    assert call(capsys, "validate", str(repo.path)).out == f"{repo.path}/{expected}"


SERVER_CASES = {
    "valid with fragment": {
        "global.yaml": "include: [profiles/base.yaml]\n",
        "profiles/base.yaml": BASIC_GLOBAL,
        "apps/test-app.yaml": BASIC_APP,
    },
    "valid with rollout": {
        "apps/test-app.yaml": "rules:\n  - {name: r, when: {percent: 10}, overrides: {chunk_size: 1}}\n"
    },
    "broken": BROKEN,
    "missing fragment": {"apps/test-app.yaml": "include: [profiles/gone.yaml]\n"},
    "bad percent identity": {
        "apps/test-app.yaml": "rules:\n  - {name: r, when: {percent: 1, by: env:}, defaults: {chunk_size: 1}}\n"
    },
    "fragment with a type error": {
        "apps/test-app.yaml": "include: [p/x.yaml]\n",
        "p/x.yaml": "defaults: {local_cpu: 'no'}\n",
    },
    "symlinked global": {"real.yaml": BASIC_GLOBAL},
}


@pytest.mark.parametrize("case", sorted(SERVER_CASES))
@pytest.mark.parametrize("subdir", ["", "lmcache"])
async def test_server_and_cli_agree(
    case: str,
    subdir: str,
    tmp_path: Path,
    start_server: ServerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    prefix = f"{subdir}/" if subdir else ""
    repo.commit_files({"README.md": "x", **{prefix + p: t for p, t in SERVER_CASES[case].items()}})
    if case == "symlinked global":
        (repo.path / prefix / "global.yaml").symlink_to("real.yaml")
        repo.commit("link")
    server = await start_server(repo.path, path=subdir)
    status = await server.status()
    root = repo.path / subdir
    cli = call(capsys, "validate", str(root), "--ref", "HEAD", "--format", "json")
    report = json.loads(cli.out)
    cli_errors = [
        f"{i['path']}:{i['line']}:{i['column']}: error: {i['message']}" for i in report["issues"]
    ]
    if status["last_rejected"] is None:
        assert status["served"]["sha"] == repo.head()
        assert (cli.code, cli_errors, status["last_rejected"]) == (0, [], None)
    else:
        # A fresh server serves the newest valid commit before a rejected tip, if any.
        assert status["served"] is None or status["served"]["sha"] != repo.head()
        assert status["last_rejected"]["commit"]["sha"] == repo.head()
        assert cli.code == 1
        assert cli_errors == status["last_rejected"]["errors"]
        assert all(error.startswith(prefix) for error in cli_errors)
    # The working tree of the same commit says the same, with paths as typed.
    on_disk = call(capsys, "validate", str(root))
    assert on_disk.out.splitlines() == [f"{root}/{error[len(prefix) :]}" for error in cli_errors]
