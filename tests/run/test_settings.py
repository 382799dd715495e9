"""The settings file: precedence flag > env > file > default, and strict checking."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.base.errors import SettingsError
from server.cli.main import build_parser
from server.settings import Settings, env_var_name, settings_from


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *argv]), environ or {})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "repo: https://git.example.test/config.git\n"
        "port: 9001\n"
        "poll_interval: 5\n"  # an int is fine for a float setting
        "ref: from-file\n"
        "log-format: json\n"  # the flag's spelling works too
        "fleet_env: [HOSTNAME, RACK]\n"
        "strict_apps: true\n",
    )
    settings = parse(
        ["--config-file", path, "--port", "9003"],
        {env_var_name("port"): "9002", env_var_name("ref"): "from-env"},
    )
    assert settings.port == 9003  # flag beats env and file
    assert settings.ref == "from-env"  # env beats file
    assert settings.poll_interval == 5.0  # file beats default
    assert settings.repo == "https://git.example.test/config.git"
    assert settings.log_format == "json"
    assert settings.fleet_env == ("HOSTNAME", "RACK")
    assert settings.strict_apps is True
    assert settings.git_timeout == 60.0  # default
    assert settings.config_file == path

    # The file may also be named by its environment variable; a flag still wins over it.
    from_env = parse(["--no-strict-apps"], {env_var_name("config_file"): path})
    assert (from_env.repo, from_env.strict_apps) == ("https://git.example.test/config.git", False)


def test_comma_separated_lists_from_flag_env_and_file(tmp_path: Path) -> None:
    assert parse(["--repo", "x", "--fleet-env", "A, B,,C"]).fleet_env == ("A", "B", "C")
    assert parse(["--repo", "x"], {env_var_name("fleet_env"): "POD"}).fleet_env == ("POD",)
    path = write(tmp_path, "repo: x\nfleet_env: HOSTNAME,ZONE\n")
    assert parse(["--config-file", path]).fleet_env == ("HOSTNAME", "ZONE")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "repo: x\npoll_intervall: 5\n",
            "settings.yaml:2:1: error: unknown setting 'poll_intervall'; did you mean "
            "'poll_interval'?",
        ),
        (
            "repo: x\nport: '9000'\n",
            "settings.yaml:2:7: error: setting 'port' must be a whole number",
        ),
        ("repo: x\nstrict_apps: 'yes'\n", "setting 'strict_apps' must be true or false"),
        ("repo: x\nref: 2024\n", "setting 'ref' must be a string (quote it)"),
        ("repo: x\nport: 1\nport: 2\n", "settings.yaml:3:1: error: duplicate key 'port'"),
        ("repo: x\nconfig_file: other.yaml\n", "a settings file cannot name another one"),
        ("- repo\n", "the settings file must be a mapping"),
        ("repo: [x\n", "YAML syntax error"),
    ],
)
def test_bad_settings_file_is_explained(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        parse(["--config-file", path])
    assert message in caught.value.message


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        parse(["--config-file", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-format", "xml"], "--log-format must be text or json"),
        (["--stale-after", "0"], "--stale-after must be a positive"),
        (["--fleet-size", "0"], "--fleet-size must be at least 1"),
        (["--fleet-env", "HOST NAME"], "--fleet-env: not environment variable names"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout must not be negative"),
    ],
)
def test_new_settings_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse(["--repo", "x", *argv])
    assert message in caught.value.message
