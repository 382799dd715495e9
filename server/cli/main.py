"""Command line: ``lmcache-config-server serve|validate|render|diff|schema ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..base.errors import SettingsError
from ..base.logs import configure_logging
from ..base.redact import redact, remember_url
from ..git.data_dir import DataDir
from ..ops.metrics_env import prepare_metrics_dir
from ..run.tls import tls_context
from ..settings import ENV_PREFIX, add_setting_arguments, settings_from, unknown_env_vars
from ..web.auth import hash_token, new_token
from . import authoring, editor_schema


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmcache-config-server",
        description="GitOps config server for LMCache fleets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve /config to LMCache workers from a git repository",
        description=(
            "Serve /config to LMCache workers from validated snapshots of a git repository. "
            f"Every flag can also be set by an environment variable ({ENV_PREFIX}<FLAG>) "
            "or a key of the --config-file YAML file; a flag wins over its variable, "
            "a variable over the file."
        ),
    )
    add_setting_arguments(serve)
    hash_token = commands.add_parser(
        "hash-token",
        help="make a new access token (or hash a given one) for the --auth-file",
        description=(
            "Print a new random token and the token_sha256 line for the auth file. Give the "
            "token to the workers (in remote_config_url) or the admin; put only the hash in "
            "the auth file."
        ),
    )
    hash_token.add_argument("token", nargs="?", help="hash this token instead of a new one")
    authoring.add_commands(commands)
    editor_schema.add_command(commands)
    return parser


# What a command gets when its reader went away (`render ... | head`): the status of a
# process killed by SIGPIPE, as coreutils give under `set -o pipefail`; no traceback.
BROKEN_PIPE_STATUS = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            # Output still buffered meets the closed pipe here, inside the handler below,
            # rather than at interpreter exit (where it would print "Exception ignored").
            sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so the exit's flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_STATUS


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "hash-token":
        token = args.token or new_token()
        if not args.token:
            print(f"token: {token}")
        print(f"token_sha256: {hash_token(token)}")
        return 0
    if args.command in authoring.COMMANDS or args.command == "schema":
        try:
            if args.command == "schema":
                return editor_schema.run_schema(args, sys.stdout, sys.stderr)
            return authoring.run(args)
        except SettingsError as exc:
            parser.exit(2, f"lmcache-config-server {args.command}: error: {exc.message}\n")
    try:
        settings = settings_from(args, os.environ)
    except SettingsError as exc:
        parser.exit(2, f"lmcache-config-server: error: {exc.message}\n")
    try:
        ssl_context = tls_context(settings.tls_cert, settings.tls_key)
        # Before prometheus_client is imported (with the app, below): it picks its storage then.
        prepare_metrics_dir(DataDir(root=Path(settings.data_dir)).metrics, settings.workers)
    except SettingsError as exc:
        parser.exit(2, f"lmcache-config-server: error: {exc.message}\n")
    # Imported here so that validate/render/diff (run on every save) skip aiohttp's import,
    # and so that prometheus_client is imported only now (``make lint`` checks the order).
    from ..run.serve import serve  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("server")
    remember_url(settings.repo)  # before the first line that shows it
    for warning in unknown_env_vars(os.environ):
        log.warning("%s", warning)
    # Not the address: "listening on ..." follows once the port is really bound (run.serve).
    log.info(
        "starting: %s (ref %s%s), data dir %s%s",
        redact(settings.repo),
        settings.ref,
        f", path {settings.path}" if settings.path else "",
        settings.data_dir,
        f", {settings.workers} worker processes" if settings.workers > 1 else "",
    )
    import asyncio  # noqa: PLC0415 (here: validate, a pre-commit hook, never imports it)

    try:
        asyncio.run(serve(settings, ssl_context))
    except SettingsError as exc:  # a taken port, an unusable data dir... (each named)
        log.error("%s", exc.message)
        return 2
    except OSError as exc:  # none of those: say what failed, never guess "listen"
        log.error("cannot start: %s", exc)
        return 1
    log.info("stopped cleanly")
    return 0
