"""Server settings, each defined exactly once.

Every field of :class:`Settings` carries its help text in its metadata; the CLI
flags (``--poll-interval``), the environment variables
(``LMCACHE_CONFIG_SERVER_POLL_INTERVAL``), the keys of the optional settings
file (``poll_interval:``) and the settings table in the README are all derived
from these definitions, so none of them can drift apart.
Precedence: command-line flag, then environment variable, then settings file,
then default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .base.errors import SettingsError
from .base.yaml_source import YamlFile
from .config.names import subdir_problem
from .config.schema import version_problem

ENV_PREFIX = "LMCACHE_CONFIG_SERVER_"
MAX_WORKERS = 64
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _default_data_dir() -> str:
    # Not /tmp: a clone that a tmp cleaner purges loses the last good commit.
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state_home) / "lmcache-config-server")


def _setting(default: Any, help: str, *, metavar: str | None = None, secret: bool = False) -> Any:
    # Secrets stay out of repr(), so a logged Settings object never shows them.
    return dataclasses.field(
        default=default, repr=not secret, metadata={"help": help, "metavar": metavar}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs to run; immutable once parsed."""

    repo: str = _setting(
        "",
        "Config repository to serve: a git URL (https://, ssh://, git://, file://) or a local "
        "path. Required.",
        metavar="URL_OR_PATH",
    )
    ref: str = _setting(
        "main",
        "Branch, tag or full commit sha of the config repository to serve: a full name "
        "(refs/heads/NAME, refs/tags/NAME) says which; a short name that is both is an error; "
        "a 40-hex sha is always that commit, and is never polled.",
        metavar="REF",
    )
    path: str = _setting(
        "",
        "Subdirectory of the repository that holds global.yaml and apps/ (default: the root).",
        metavar="SUBDIR",
    )
    host: str = _setting(
        "127.0.0.1",
        "Address to listen on. Use 0.0.0.0 to accept workers from other machines.",
        metavar="ADDR",
    )
    port: int = _setting(8088, "TCP port to listen on.", metavar="PORT")
    workers: int = _setting(
        1,
        "Processes answering on the port (SO_REUSEPORT). The first also fetches and validates; "
        "the others serve the commits it validates. Up to the number of CPU cores.",
        metavar="N",
    )
    data_dir: str = _setting(
        _default_data_dir(),
        "Directory for the local git mirror and the record of the last good commit; reused "
        "across restarts so the server can start while the remote is down. One server "
        "process per directory.",
        metavar="DIR",
    )
    poll_interval: float = _setting(
        30.0, "Seconds between fetches of the remote.", metavar="SECONDS"
    )
    max_backoff: float = _setting(
        300.0,
        "Longest wait between polls while the remote keeps failing (the wait doubles per "
        "failure, from --poll-interval up to this).",
        metavar="SECONDS",
    )
    depth: int = _setting(
        0,
        "Shallow fetches of this many commits (0: full history). Speeds up large repositories.",
        metavar="N",
    )
    watch: bool = _setting(
        True,
        "When --repo is a local path or file:// URL, watch its refs and sync at once on a change.",
    )
    webhook_secret: str = _setting(
        "",
        "Shared secret for /webhook/* (GitHub and Gitea HMAC signatures, GitLab token). "
        "Webhooks are refused while no secret is set. Prefer the environment variable or "
        "--webhook-secret-file: command lines are visible to other users.",
        metavar="SECRET",
        secret=True,
    )
    webhook_secret_file: str = _setting(
        "",
        "File holding the webhook secret (e.g. a mounted Kubernetes Secret); read again "
        "within a second of a change (a bad new file keeps the old secret, see /status).",
        metavar="FILE",
    )
    auth_file: str = _setting(
        "",
        "YAML file of client and admin credentials (SHA-256 token hashes, app globs). When "
        "set, /config needs a client token and operator endpoints an admin token. Keep it "
        "outside the config repository. Read again within a second of a change, in every "
        "process; a bad new file keeps the old tokens in force (logged, and in /status).",
        metavar="FILE",
    )
    protect_metrics: bool = _setting(
        False, "With --auth-file, require an admin token for /metrics too."
    )
    tls_cert: str = _setting(
        "", "PEM certificate (chain) to serve HTTPS; needs --tls-key.", metavar="FILE"
    )
    tls_key: str = _setting("", "PEM private key for --tls-cert.", metavar="FILE")
    git_token: str = _setting(
        "",
        "Token for an https config repository (sent as basic auth with --git-username). "
        "Prefer the environment variable or --git-token-file.",
        metavar="TOKEN",
        secret=True,
    )
    git_token_file: str = _setting(
        "",
        "File holding the https token (e.g. a mounted Secret); re-read when it changes, and "
        "a sync follows.",
        metavar="FILE",
    )
    git_username: str = _setting(
        "git",
        "User name sent with the https token (GitHub: any; GitLab: oauth2; Bitbucket: "
        "x-token-auth).",
        metavar="NAME",
    )
    ssh_key: str = _setting(
        "", "Private key for an ssh:// or git@host: repository (any key type).", metavar="FILE"
    )
    ssh_known_hosts: str = _setting(
        "",
        "known_hosts file for ssh; with it, host keys are checked strictly.",
        metavar="FILE",
    )
    require_signed_commits: bool = _setting(
        False,
        "Serve only commits signed by a trusted key (--trusted-gpg-keys and/or "
        "--allowed-signers); others are rejected like invalid ones.",
    )
    trusted_gpg_keys: str = _setting(
        "",
        "File of ASCII-armored OpenPGP public keys whose signatures are trusted.",
        metavar="FILE",
    )
    allowed_signers: str = _setting(
        "",
        "SSH allowed-signers file (as for git's gpg.ssh.allowedSignersFile) of trusted keys.",
        metavar="FILE",
    )
    secrets_dir: str = _setting(
        "",
        "Directory of secrets for ${secret:NAME} references, one file per secret (as a "
        "mounted Kubernetes Secret); LMCACHE_CONFIG_SERVER_SECRET_<NAME> variables also work. "
        "A changed file is served within seconds (it triggers a sync).",
        metavar="DIR",
    )
    secret_scopes: str = _setting(
        "",
        "YAML file mapping each secret name to the app ids (globs) it may be served to; a "
        "${secret:NAME} used by any other app rejects the commit. Without it no app gets a "
        'secret; \'"*": ["*"]\' allows every secret everywhere. Read again when it changes '
        "(a bad new file keeps the old scopes).",
        metavar="FILE",
    )
    key_policy: str = _setting(
        "",
        "YAML file that adds keys a commit may not serve (deny) or lifts built-in rules "
        "(allow) of the key policy; the built-in rules apply without it.",
        metavar="FILE",
    )
    git_timeout: float = _setting(
        60.0,
        "Seconds a git network operation (clone, fetch) may take before it is killed.",
        metavar="SECONDS",
    )
    strict_apps: bool = _setting(
        False,
        "Answer 404 for an appId that has no apps/<app_id>.yaml, instead of serving only the "
        "global layer.",
    )
    max_connections: int = _setting(
        10_000,
        "Most client connections open at once per process; more are closed at once. "
        "Lowered to what the file descriptor limit allows (raised to its hard limit first).",
        metavar="N",
    )
    header_timeout: float = _setting(
        10.0,
        "Seconds a request's head (request line and headers) may take to arrive, from its "
        "first byte; a slower connection is closed (one that sends nothing: after 60 s). 0 "
        "turns the connection guard off (and --max-connections with it), for a proxy in front that "
        "bounds connections itself: about a tenth more throughput.",
        metavar="SECONDS",
    )
    body_timeout: float = _setting(
        30.0,
        "Seconds a request body may take to arrive once its head has; slower: 408.",
        metavar="SECONDS",
    )
    max_body_bytes: int = _setting(
        256 * 1024, "Largest /config request body accepted, in bytes.", metavar="BYTES"
    )
    max_env_vars: int = _setting(
        4096, "Most env_variables entries accepted in one /config request.", metavar="N"
    )
    max_json_depth: int = _setting(
        32, "Deepest nesting of JSON objects and lists accepted in current_config.", metavar="N"
    )
    max_yaml_file_bytes: int = _setting(
        1024 * 1024, "Largest config file (YAML) a commit may hold, in bytes.", metavar="BYTES"
    )
    max_repo_files: int = _setting(
        50_000, "Most config files (global.yaml, apps/, fragments) a commit may hold.", metavar="N"
    )
    max_repo_bytes: int = _setting(
        256 * 1024 * 1024,
        "Largest total size of a commit's config files, in bytes.",
        metavar="BYTES",
    )
    max_rules_per_app: int = _setting(
        256,
        "Most rules that can apply to one app (its file's, global.yaml's and their fragments'). "
        "Every request of the app is matched against each of them.",
        metavar="N",
    )
    lmcache_versions: tuple[str, ...] = _setting(
        (),
        "Comma-separated LMCache versions the fleet runs (e.g. 0.4.7,0.5.6): every commit is "
        "checked against each one's bundled field list, as well as those its global.yaml lists "
        "in lmcache_versions. Without either, the installed lmcache (else 0.5.6) decides.",
        metavar="VERSIONS",
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.", metavar="LEVEL")
    access_log: bool = _setting(
        True,
        "Log one line per request (request id, method, path, status, duration; for /config "
        "also app, commit and rules applied). Probe and /metrics requests are logged at debug "
        "level. Never a body, a query string or an environment value.",
    )
    log_format: str = _setting(
        "text", "Log format: text, or json (one JSON object per line).", metavar="FORMAT"
    )
    config_file: str = _setting(
        "",
        "Optional YAML settings file: a mapping of setting names (as the flags, without the "
        "leading dashes) to values. A flag or environment variable wins over the file.",
        metavar="FILE",
    )
    stale_after: float = _setting(
        600.0,
        "Seconds without a successful sync after which /status and /metrics report the served "
        "config as stale.",
        metavar="SECONDS",
    )
    fleet_size: int = _setting(
        10000,
        "Most worker instances remembered for /fleet; the least recently seen is forgotten first.",
        metavar="COUNT",
    )
    fleet_ttl: float = _setting(
        86400.0,
        "Seconds a worker stays in /fleet after its last /config request (workers ask at "
        "startup only: one that runs longer drops out). It also bounds which apps count as in "
        "use when a commit removes an app file.",
        metavar="SECONDS",
    )
    fleet_env: tuple[str, ...] = _setting(
        ("HOSTNAME", "POD_NAME", "NODE_NAME"),
        "Comma-separated worker environment variables recorded in /fleet to tell workers apart. "
        "Only these are kept; never list a secret here.",
        metavar="NAMES",
    )
    shutdown_timeout: float = _setting(
        20.0,
        "Seconds to wait for answers in flight after SIGTERM before closing their connections.",
        metavar="SECONDS",
    )
    redis: str = _setting(
        "",
        "Redis (or Valkey) shared by several replicas of one fleet: redis://[:PASSWORD@]HOST"
        "[:PORT][/DB], or rediss:// for TLS. Webhooks and refreshes fan out to every replica, "
        "webhook replays are refused fleet-wide, /status lists the replicas and /fleet shows "
        "the whole fleet. Off by default; /config never waits on it.",
        metavar="URL",
        secret=True,
    )
    redis_password_file: str = _setting(
        "",
        "File holding the Redis password (instead of one in --redis); read at startup.",
        metavar="FILE",
    )
    redis_ca_file: str = _setting(
        "",
        "CA certificate(s) (PEM) to verify a rediss:// server with, for a Redis whose "
        "certificate a private CA signed; the system's CAs otherwise.",
        metavar="FILE",
    )
    replica_name: str = _setting(
        "",
        "This replica's name in Redis, /status and /fleet (default: $POD_NAME or the host "
        "name, then :PORT).",
        metavar="NAME",
    )
    redis_interval: float = _setting(
        2.0,
        "Seconds between a replica's heartbeats and fleet exchanges in Redis; a replica whose "
        "heartbeat is 3 intervals old is shown stale.",
        metavar="SECONDS",
    )


SETTING_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)


def env_var_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


# LMCACHE_CONFIG_SERVER_SECRET_<NAME> holds a ${secret:NAME} value (sync.secrets): no setting.
SECRET_ENV_PREFIX = ENV_PREFIX + "SECRET_"


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """One warning per LMCACHE_CONFIG_SERVER_* variable that names no setting, with the nearest
    name: a typo would otherwise leave its setting at the default without a word. Names only,
    never a value (it may be a secret)."""
    suffixes = [field.name.upper() for field in SETTING_FIELDS]
    warnings = []
    for name in sorted(environ):
        suffix = name[len(ENV_PREFIX) :]
        if not name.startswith(ENV_PREFIX) or name.startswith(SECRET_ENV_PREFIX):
            continue
        if suffix in suffixes:
            continue
        close = difflib.get_close_matches(suffix.upper(), suffixes, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        warnings.append(f"environment variable {name} is not a setting and is ignored{hint}")
    return warnings


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


_NAMES = "tuple[str, ...]"


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _convert(field: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = field.type
    try:
        if kind == "bool":
            return _parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from None
    if kind == _NAMES:
        return _parse_names(raw)
    return raw


def _from_file_value(field: dataclasses.Field[Any], value: Any) -> Any:
    """A value as YAML typed it, checked strictly: a quoted "30" for a number is a mistake."""
    kind = field.type
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == _NAMES:
        if isinstance(value, str):
            return _parse_names(value)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
    expected = {
        "bool": "true or false",
        "int": "a whole number",
        "float": "a number",
        "str": "a string (quote it)",
        _NAMES: "a list of names or a comma-separated string",
    }[str(kind)]
    raise ValueError(f"must be {expected}, got {value!r}")


def _normalise_key(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_")


def load_settings_file(path: str) -> dict[str, Any]:
    """Setting values from a YAML file; unknown keys, bad types and duplicates are errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    source = YamlFile(path, text)
    values: dict[str, Any] = {}
    by_name = {field.name: field for field in SETTING_FIELDS if field.name != "config_file"}
    if source.root is not None:
        for key, key_node, value_node in source.mapping(source.root, "the settings file"):
            name = _normalise_key(key)
            field = by_name.get(name)
            if field is None:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                if name == "config_file":
                    hint = ": a settings file cannot name another one"
                source.report(key_node, f"unknown setting '{key}'{hint}")
                continue
            try:
                values[name] = _from_file_value(field, source.value(value_node))
            except ValueError as exc:
                source.report(value_node, f"setting '{key}' {exc}")
    if source.issues:
        raise SettingsError(
            "bad settings file:\n  " + "\n  ".join(str(issue) for issue in source.issues)
        )
    return values


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults stay None so env vars can fill in."""
    for field in SETTING_FIELDS:
        env = env_var_name(field.name)
        help_text = f"{field.metadata['help']} [env {env}; default {_default_text(field)}]"
        if field.type == "bool":
            parser.add_argument(
                flag_name(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag_name(field.name),
                dest=field.name,
                default=None,
                metavar=field.metadata["metavar"],
                help=help_text,
            )


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Merge CLI arguments over environment variables over the settings file over defaults."""
    config_file = getattr(args, "config_file", None) or environ.get(env_var_name("config_file"))
    values: dict[str, Any] = load_settings_file(config_file) if config_file else {}
    for field in SETTING_FIELDS:
        cli_value = getattr(args, field.name, None)
        env = env_var_name(field.name)
        if cli_value is not None:
            values[field.name] = (
                cli_value
                if isinstance(cli_value, bool)
                else _convert(field, str(cli_value), flag_name(field.name))
            )
        elif env in environ:
            values[field.name] = _convert(field, environ[env], env)
    settings = Settings(**values)
    check_settings(settings)
    return settings


def check_settings(settings: Settings) -> None:
    if not settings.repo:
        raise SettingsError(
            f"no config repository given: pass --repo or set {env_var_name('repo')}"
        )
    if not 0 < settings.port < 65536:
        raise SettingsError(f"--port must be 1-65535, got {settings.port}")
    if settings.poll_interval <= 0:
        raise SettingsError("--poll-interval must be a positive number of seconds")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
    if settings.max_backoff <= 0:
        raise SettingsError("--max-backoff must be a positive number of seconds")
    if settings.depth < 0:
        raise SettingsError("--depth must be 0 (full history) or a positive number of commits")
    if settings.require_signed_commits and not (
        settings.trusted_gpg_keys or settings.allowed_signers
    ):
        raise SettingsError(
            "--require-signed-commits needs --trusted-gpg-keys and/or --allowed-signers"
        )
    if settings.git_token and settings.git_token_file:
        raise SettingsError("give --git-token or --git-token-file, not both")
    if settings.webhook_secret and settings.webhook_secret_file:
        raise SettingsError("give --webhook-secret or --webhook-secret-file, not both")
    if settings.git_timeout <= 0:
        raise SettingsError("--git-timeout must be a positive number of seconds")
    if settings.header_timeout < 0 or settings.body_timeout <= 0:
        raise SettingsError(
            "--header-timeout must be 0 (off) or positive, --body-timeout positive seconds"
        )
    if settings.max_body_bytes < 1024:
        raise SettingsError("--max-body-bytes must be at least 1024")
    for name in (
        "max_env_vars",
        "max_json_depth",
        "max_yaml_file_bytes",
        "max_repo_files",
        "max_rules_per_app",
        "max_connections",
    ):
        if getattr(settings, name) < 1:
            raise SettingsError(f"{flag_name(name)} must be at least 1")
    if settings.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise SettingsError("--log-level must be one of debug, info, warning, error")
    if (problem := subdir_problem(settings.path)) is not None:
        raise SettingsError(problem)
    if settings.log_format not in {"text", "json"}:
        raise SettingsError("--log-format must be text or json")
    if settings.stale_after <= 0:
        raise SettingsError("--stale-after must be a positive number of seconds")
    if settings.fleet_size < 1:
        raise SettingsError("--fleet-size must be at least 1")
    if not settings.fleet_ttl > 0:
        raise SettingsError("--fleet-ttl must be a positive number of seconds")
    if not 1 <= settings.workers <= MAX_WORKERS:
        raise SettingsError(f"--workers must be from 1 to {MAX_WORKERS}")
    if settings.shutdown_timeout < 0:
        raise SettingsError("--shutdown-timeout must not be negative")
    for version in settings.lmcache_versions:
        if (problem := version_problem(version)) is not None:
            raise SettingsError(f"--lmcache-versions: {problem}")
    _check_redis(settings)
    bad_names = [name for name in settings.fleet_env if not _ENV_NAME_RE.match(name)]
    if bad_names:
        raise SettingsError(f"--fleet-env: not environment variable names: {bad_names}")


def _check_redis(settings: Settings) -> None:
    if settings.redis_interval <= 0:
        raise SettingsError("--redis-interval must be a positive number of seconds")
    if not settings.redis:
        for flag, value in (
            ("--redis-password-file", settings.redis_password_file),
            ("--redis-ca-file", settings.redis_ca_file),
        ):
            if value:
                raise SettingsError(f"{flag} needs --redis")
        return
    url = urlsplit(settings.redis)
    if url.scheme not in {"redis", "rediss", "unix"}:
        # The scheme only: the URL may hold a password.
        raise SettingsError(
            f"--redis must be a redis://, rediss:// or unix:// URL, not {url.scheme or 'none'}:"
        )
    if settings.redis_ca_file and url.scheme != "rediss":
        raise SettingsError("--redis-ca-file is for a rediss:// (TLS) --redis")
    if settings.redis_password_file and url.password:
        raise SettingsError("give the Redis password in --redis or --redis-password-file, not both")


def _default_text(field: dataclasses.Field[Any]) -> str:
    if isinstance(field.default, bool):
        return str(field.default).lower()
    if isinstance(field.default, tuple):
        return ",".join(field.default)
    return str(field.default)


def settings_table_markdown() -> str:
    """The settings table for the README (a test keeps the README in step)."""
    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for field in SETTING_FIELDS:
        if field.name == "data_dir":
            default = "`$XDG_STATE_HOME/lmcache-config-server`"
        else:
            default = f"`{_default_text(field)}`" if field.default not in ("", ()) else "(none)"
        rows.append(
            f"| `{flag_name(field.name)}` | `{env_var_name(field.name)}` | {default} "
            f"| {field.metadata['help']} |"
        )
    return "\n".join(rows)
