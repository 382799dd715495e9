"""Staleness under a stepped wall clock, in a real server process whose wall clock is moved.

``tests/support/wallstep.c``, compiled here with the system's C compiler
(``make test`` installs one) and preloaded into the server, adds the seconds
written in a file to every wall-clock read (re-read on each call), so the test
steps the wall clock of a running process the way NTP or an operator would;
the monotonic clock is left alone, as the kernel leaves it. (libfaketime was
tried first: with its monotonic clock left unfaked, 0.9.10 makes every
``time.sleep`` fail with EINVAL, and with it faked, a step moves both clocks.)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.gitdaemon import GitDaemon
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT
from tests.support.procs import ServerProcess

HOUR = 3600


@pytest.fixture(scope="session")
def wallstep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler: `make test` installs Debian's gcc"
    library = tmp_path_factory.mktemp("wallstep") / "libwallstep.so"
    source = ROOT / "tests" / "support" / "wallstep.c"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
        check=True,
    )
    return library


class SteppedClock:
    """The offset file of a preloaded wallstep: writing it steps the process's wall clock."""

    def __init__(self, path: Path, library: Path) -> None:
        self.path = path
        self.library = library
        self.step(0)

    def step(self, seconds: int) -> None:
        self.path.write_text(f"{seconds}\n")

    @property
    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(self.library), "WALLSTEP_FILE": str(self.path)}


@pytest.fixture
def clock(tmp_path: Path, wallstep: Path) -> SteppedClock:
    return SteppedClock(tmp_path / "wall-offset", wallstep)


@pytest.fixture
def upstream(tmp_path: Path, git_daemon: GitDaemon) -> str:
    repo = ConfigRepo(tmp_path / "upstream")
    repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 16}\n"})
    return git_daemon.url("upstream")


def _start(tmp: Path, clock: SteppedClock, remote: str, *args: str) -> ServerProcess:
    server = ServerProcess(tmp, "stepped", "--repo", remote, *args, env=clock.env)
    server.wait_ready()
    return server


def _wall_clock_of(server: ServerProcess) -> float:
    code, status = server.json("/status")
    assert code == 200, status
    return _seconds(status["started_at"])


def _seconds(rfc3339: object) -> float:
    """/status shows times as RFC 3339."""
    return datetime.fromisoformat(str(rfc3339)).timestamp()


def test_a_clock_stepped_back_does_not_hide_an_outage(
    tmp_path: Path, clock: SteppedClock, upstream: str, git_daemon: GitDaemon
) -> None:
    server = _start(tmp_path, clock, upstream, "--poll-interval", "1", "--stale-after", "3")
    try:
        started = _wall_clock_of(server)
        git_daemon.stop()
        clock.step(-HOUR)
        deadline = time.monotonic() + 20
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            code, status = server.json("/status")
            assert code == 200, status
            if status["stale"]:
                break
            time.sleep(0.2)
        assert status["stale"] is True, f"an outage hidden by the clock step: {status}"
        assert str(status["stale_reason"]).startswith("no successful sync for ")
        since = status["seconds_since_last_successful_sync"]
        assert isinstance(since, float), since
        assert 3 < since < 60, since
        # The clock did step: the server's own timestamps are an hour back.
        assert isinstance(status["last_sync"], dict)
        assert _seconds(status["last_sync"]["finished_at"]) < started - HOUR / 2
        _, _, metrics = server.request("/metrics")
        assert b"lmcache_config_stale 1.0" in metrics
    finally:
        server.stop()


def test_a_clock_stepped_forward_raises_no_false_alarm(
    tmp_path: Path, clock: SteppedClock, upstream: str
) -> None:
    # A long poll interval: no sync lands between the step and the reads below.
    server = _start(tmp_path, clock, upstream, "--poll-interval", "300", "--stale-after", "600")
    try:
        clock.step(2 * HOUR)
        code, status = server.json("/status")
        assert code == 200, status
        assert (status["stale"], status["stale_reason"]) == (False, None), status
        since = status["seconds_since_last_successful_sync"]
        assert isinstance(since, float), since
        assert since < 60, since
        assert _seconds(status["started_at"]) < time.time() + HOUR  # stepped after startup
        _, _, metrics = server.request("/metrics")
        assert b"lmcache_config_stale 0.0" in metrics
    finally:
        server.stop()
