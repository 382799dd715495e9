"""``lmcache-config-server ... | head``: a reader that goes away ends the command quietly."""

from __future__ import annotations

import pytest

from server.cli.main import BROKEN_PIPE_STATUS
from tests.support.clirun import spawn, spawn_into_closed_pipe
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT

EXAMPLE = str(ROOT / "config-repo-example")

# Every command that writes to stdout (serve logs to stderr; validate's text goes there too).
COMMANDS = [
    ("--help",),
    ("--version",),
    ("render", "--help"),
    ("hash-token",),
    ("validate", EXAMPLE, "--format", "json"),
    ("render", "test-app", "--repo", EXAMPLE),
    ("render", "test-app", "--repo", EXAMPLE, "--format", "json"),
    ("diff", "HEAD~1", "HEAD"),
]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_closed_pipe_ends_a_command_quietly(
    config_repo: ConfigRepo, argv: tuple[str, ...], buffered: bool
) -> None:
    config_repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 64}\n"}, "smaller")
    assert spawn(*argv, cwd=config_repo.path).out  # it does write to stdout
    # Buffered, the write fails at the last flush; unbuffered, at the first print.
    env = {"PYTHONUNBUFFERED": "" if buffered else "1"}
    result = spawn_into_closed_pipe(*argv, cwd=config_repo.path, env=env)
    assert result.err == ""  # no BrokenPipeError traceback, no "Exception ignored"
    if not buffered and argv[-1] in ("--help", "--version"):
        # argparse drops write errors of its own messages: nothing tells the command.
        assert result.code == 0
    else:
        # 141 = 128 + SIGPIPE: what `set -o pipefail` shows for coreutils in the same place.
        assert result.code == BROKEN_PIPE_STATUS == 141
