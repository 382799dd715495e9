"""The first minute of a real server process: each startup problem named for what it is,
"listening" said only once the port is bound, misspelt variables warned about."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.settings import SECRET_ENV_PREFIX, unknown_env_vars
from server.sync import secrets
from tests.support.gitrepo import ConfigRepo
from tests.support.procs import ServerProcess


def _failed_start(tmp_path: Path, name: str, *args: str) -> tuple[int, str]:
    server = ServerProcess(tmp_path, name, *args)
    try:
        code = server.process.wait(timeout=60)
    finally:
        server.kill()
    return code, server.log()


def test_a_taken_port_is_named_with_the_ways_to_pick_another(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, log = _failed_start(
            tmp_path, "taken", "--repo", str(config_repo.path), "--port", str(port)
        )
    assert code == 2
    assert (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (by what is not known "
        "here); pick another port: --port N, LMCACHE_CONFIG_SERVER_PORT=N, or make run PORT=N"
    ) in log
    assert "listening on" not in log
    assert "Traceback" not in log


def test_listening_is_logged_once_the_port_is_bound(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path, "ok", "--repo", str(config_repo.path))
    try:
        server.wait_ready()
        assert server.stop() == 0
    finally:
        server.kill()
    log = server.log()
    starting = log.index("starting: ")
    assert log.index(f"listening on http://127.0.0.1:{server.port}") > starting
    assert f":{server.port}" not in log[starting : log.index("\n", starting)]


def test_a_data_dir_that_is_a_file(config_repo: ConfigRepo, tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    code, log = _failed_start(
        tmp_path, "file", "--repo", str(config_repo.path), "--data-dir", str(a_file)
    )
    assert code == 2
    assert f"--data-dir {a_file} is a file, not a directory: move the file away, or give" in log
    assert "cannot listen" not in log


def test_a_data_dir_under_a_file(config_repo: ConfigRepo, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, log = _failed_start(
        tmp_path, "under", "--repo", str(config_repo.path), "--data-dir", str(a_file / "data")
    )
    assert code == 2
    assert (
        f"--data-dir {a_file / 'data'} cannot be created: {a_file} is a file, not a directory; "
        "give a --data-dir (or LMCACHE_CONFIG_SERVER_DATA_DIR) this user can write"
    ) in log
    assert "cannot listen" not in log


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write into, root included (chattr +i): tests run as root, so
    chmod 0555 would not stop them, and this machine allows no read-only mount."""
    directory = tmp_path / "immutable"
    directory.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)]).returncode != 0:
        pytest.skip("no chattr +i on this file system: no real read-only directory to test")
    yield directory
    subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_data_dir_that_refuses_writes(config_repo: ConfigRepo, immutable_dir: Path) -> None:
    code, log = _failed_start(
        immutable_dir.parent,
        "readonly",
        "--repo",
        str(config_repo.path),
        "--data-dir",
        str(immutable_dir),
    )
    assert code == 2
    assert (
        f"--data-dir {immutable_dir} refuses writes (operation not permitted: an immutable "
        "directory, chattr +i, or a read-only mount?): make it writable, or give"
    ) in log
    assert "cannot listen" not in log


def test_a_misspelt_variable_is_warned_about_never_its_value(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    env = {
        "LMCACHE_CONFIG_SERVER_PROT": "value-never-logged-7f3a",
        "LMCACHE_CONFIG_SERVER_SECRET_DB_PASSWORD": "secret-never-logged-9c1d",
    }
    server = ServerProcess(tmp_path, "typo", "--repo", str(config_repo.path), env=env)
    try:
        server.wait_ready()
        assert server.stop() == 0
    finally:
        server.kill()
    log = server.log()
    assert (
        "WARNING server: environment variable LMCACHE_CONFIG_SERVER_PROT is not a setting and "
        "is ignored; did you mean LMCACHE_CONFIG_SERVER_PORT?"
    ) in log
    assert "never-logged" not in log
    assert "SECRET_DB_PASSWORD" not in log  # a ${secret:...} variable is no typo


def test_unknown_variables_are_the_ones_no_setting_reads() -> None:
    environ = {
        "LMCACHE_CONFIG_SERVER_PORT": "1",
        "LMCACHE_CONFIG_SERVER_POLL_INTERVALL": "1",
        "LMCACHE_CONFIG_SERVER_SECRET_TOKEN": "x",
        "LMCACHE_CONFIG_SERVER_NOTHING_LIKE_IT": "x",
        "LMCACHE_CONFIG_FILE": "x",  # LMCache's own, another prefix
        "PATH": "/bin",
    }
    assert unknown_env_vars(environ) == [
        "environment variable LMCACHE_CONFIG_SERVER_NOTHING_LIKE_IT is not a setting and is "
        "ignored",
        "environment variable LMCACHE_CONFIG_SERVER_POLL_INTERVALL is not a setting and is "
        "ignored; did you mean LMCACHE_CONFIG_SERVER_POLL_INTERVAL?",
    ]
    # settings.py cannot import sync/: the two spellings of the secrets' prefix agree.
    assert secrets.ENV_PREFIX == SECRET_ENV_PREFIX
