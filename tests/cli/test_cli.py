"""The command line: flags, environment variables, help, and a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from server.base.errors import SettingsError
from server.cli.main import build_parser
from server.settings import (
    SETTING_FIELDS,
    Settings,
    env_var_name,
    flag_name,
    settings_from,
    settings_table_markdown,
)
from tests.support.gitdaemon import free_port, wait_for_port
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT
from tests.support.procs import ServerProcess


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    return settings_from(args, environ or {})


def test_flags_env_and_defaults() -> None:
    settings = parse(["--repo", "x"], {env_var_name("port"): "9000", env_var_name("ref"): "prod"})
    assert (settings.repo, settings.port, settings.ref, settings.poll_interval) == (
        "x",
        9000,
        "prod",
        30.0,
    )
    # A flag wins over its environment variable.
    assert parse(["--repo", "x", "--port", "9100"], {env_var_name("port"): "9000"}).port == 9100
    assert parse([], {env_var_name("repo"): "from-env"}).repo == "from-env"
    assert parse(["--repo", "x", "--strict-apps"]).strict_apps is True
    assert parse(["--repo", "x"], {env_var_name("strict_apps"): "true"}).strict_apps is True
    assert parse(["--repo", "x", "--no-access-log"]).access_log is False


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {}, "no config repository given"),
        (["--repo", "x", "--port", "70000"], {}, "--port must be 1-65535"),
        (
            ["--repo", "x"],
            {env_var_name("poll_interval"): "soon"},
            "LMCACHE_CONFIG_SERVER_POLL_INTERVAL",
        ),
        (["--repo", "x", "--path", "../etc"], {}, "--path must be a relative subdirectory"),
        (["--repo", "x"], {env_var_name("strict_apps"): "maybe"}, "not a boolean"),
    ],
)
def test_bad_settings_are_explained(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("-", r"\-").replace(".", r"\.")):
        parse(argv, environ)


def test_help_names_every_flag_and_env_var() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    for field in SETTING_FIELDS:
        assert flag_name(field.name) in result.stdout
        assert env_var_name(field.name) in result.stdout


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert settings_table_markdown() in readme, (
        "the README's settings table is out of date: paste "
        "`python -c 'from server.settings import settings_table_markdown as t; print(t())'`"
    )
    missing = [
        field.name
        for field in SETTING_FIELDS
        if flag_name(field.name) not in readme or env_var_name(field.name) not in readme
    ]
    assert missing == [], f"README.md does not document: {missing}"


def test_missing_repo_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_CONFIG_SERVER_")}
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 2
    assert "no config repository given" in result.stderr


def test_server_process_serves_and_stops_on_sigterm(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, env_var_name("port"): str(port)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--repo",
            str(config_repo.path),
            "--data-dir",
            str(tmp_path / "first-data"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=30)
        answer = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/config?appId=test-app"
                ) as response:
                    answer = json.load(response)
                    break
            except urllib.error.HTTPError as exc:  # 503 until the first sync is done
                if exc.code != 503:
                    raise
                time.sleep(0.1)
        assert answer is not None
        assert answer["version"] == config_repo.head()

        # A second server on the same data dir ("first-data") refuses to start, and says why.
        second = ServerProcess(tmp_path, "first", "--repo", str(config_repo.path))
        assert second.process.wait(timeout=60) == 2
        second.stop()
        assert "is in use by another server process" in second.log()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "sync trigger=startup result=updated" in stderr
    assert "stopped cleanly" in stderr
