"""Run the real ``lmcache-config-server`` command line: in-process, or as a subprocess."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from tests.support.paths import ROOT


@dataclasses.dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def call(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    """The CLI in this process (fast); usage errors exit through SystemExit like the real one."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def spawn(*argv: str, cwd: Path) -> CliResult:
    """The CLI as a separate process, as CI and pre-commit run it."""
    result = subprocess.run(
        [sys.executable, "-m", "server", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    return CliResult(result.returncode, result.stdout, result.stderr)


def spawn_into_closed_pipe(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """The CLI as a separate process whose stdout is a pipe nobody reads any more, as in
    ``render ... | head`` once head has exited: the read end is closed before the command
    writes its first byte, so its first write meets EPIPE (no race with the pipe's buffer)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "server", *argv],
            cwd=cwd,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            timeout=60,
        )
    finally:
        os.close(write_end)
    return CliResult(result.returncode, "", result.stderr)
