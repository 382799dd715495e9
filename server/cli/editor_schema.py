"""``schema``: the JSON Schema of the repository's files, for editors (yaml-language-server).

The versions are ``--lmcache-version``'s, else those ``global.yaml`` declares in
``lmcache_versions`` (read as the server reads them); the schema itself is built by
``config.json_schema`` from the definitions validation uses. ``--output-dir`` writes
both files (global.yaml's and the app files' and fragments') under the names the
files' modelines point to; without it one schema goes to stdout or ``--output``.
Exit codes: 0 written, 1 global.yaml's ``lmcache_versions`` is invalid, 2 a usage
error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from ..base.errors import SettingsError
from ..base.issues import ConfigWarning
from ..config.json_schema import FileKind, repository_file_schema, schema_text
from ..config.names import GLOBAL_FILE
from ..config.schema import BUNDLED_VERSION, version_problem
from ..config.versions import VERSIONS_KEY, declared_versions

EXIT_OK = 0
EXIT_INVALID = 1
# Where the example repository keeps the schemas (its modelines and .vscode point here).
SCHEMA_DIR = ".schema"


def add_command(commands: Any) -> None:
    """Add the ``schema`` subcommand to the CLI's subparsers."""
    schema = commands.add_parser(
        "schema",
        help="print or write the JSON Schema of the config files, for editors",
        description=(
            "Generate the JSON Schema of the config repository's files for the LMCache "
            f"versions given by --lmcache-version, else those PATH/{GLOBAL_FILE} declares "
            f"({VERSIONS_KEY}), else {BUNDLED_VERSION}, for yaml-language-server "
            "(VS Code, Neovim, JetBrains, Helix): completion, hover docs and inline errors. "
            "--output-dir writes global.schema.json and app-or-fragment.schema.json; "
            "otherwise one schema is printed (the app files' and fragments', or with "
            "--global global.yaml's)."
        ),
    )
    schema.add_argument("path", nargs="?", default=".", metavar="PATH", help="config root")
    schema.add_argument(
        "--lmcache-version",
        action="append",
        default=[],
        metavar="VERSION",
        help=f"an LMCache version the fleet runs (repeatable), instead of {VERSIONS_KEY}",
    )
    schema.add_argument(
        "--global",
        dest="global_file",
        action="store_true",
        help=f"the schema of {GLOBAL_FILE} (which alone may hold {VERSIONS_KEY})",
    )
    where = schema.add_mutually_exclusive_group()
    where.add_argument("--output", metavar="FILE", help="write the schema to FILE, not stdout")
    where.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write both schemas into DIR (e.g. .schema), the names the modelines use",
    )


def schema_versions(declared: tuple[str, ...]) -> tuple[str, ...]:
    """The versions a schema is generated for: those declared, else the bundled one."""
    return declared or (BUNDLED_VERSION,)


def _versions(args: argparse.Namespace, err: TextIO) -> tuple[str, ...] | None:
    """The versions to generate for; None when global.yaml's list is invalid (reported)."""
    if args.lmcache_version:
        for version in args.lmcache_version:
            if (problem := version_problem(version)) is not None:
                raise SettingsError(problem)
        return tuple(args.lmcache_version)
    root = Path(args.path)
    if not root.is_dir():
        raise SettingsError(f"'{args.path}' is not a directory")
    global_path = root / GLOBAL_FILE
    versions: tuple[str, ...] = ()
    if global_path.is_file():
        versions, issues = declared_versions(str(global_path), global_path.read_bytes())
        if issues:
            for issue in issues:
                print(issue, file=err)
            return None
    if not versions:
        print(
            f"no {VERSIONS_KEY} in {global_path}: the schema of LMCache {BUNDLED_VERSION} "
            f"(declare the versions the fleet runs there, or pass --lmcache-version)",
            file=err,
        )
    return schema_versions(versions)


def run_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    versions = _versions(args, err)
    if versions is None:
        return EXIT_INVALID
    if args.output_dir:
        folder = Path(args.output_dir)
        _write(folder, None)
        for kind in FileKind:
            _write(folder / kind.file_name, schema_text(repository_file_schema(versions, kind)))
            print(f"wrote {folder / kind.file_name} (LMCache {', '.join(versions)})", file=err)
        return EXIT_OK
    kind = FileKind.GLOBAL if args.global_file else FileKind.APP_OR_FRAGMENT
    text = schema_text(repository_file_schema(versions, kind))
    if args.output:
        _write(Path(args.output), text)
        print(f"wrote {args.output} (LMCache {', '.join(versions)})", file=err)
    else:
        out.write(text)
    return EXIT_OK


def _write(target: Path, text: str | None) -> None:
    """Write ``text`` to ``target`` (None: make the folder); a usage error when it cannot."""
    try:
        if text is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_text(text, "utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot write {target}: {exc.strerror or exc}") from None


def stale_schemas(root: Path, declared: tuple[str, ...]) -> list[ConfigWarning]:
    """A warning for each schema file under ``root/.schema`` that differs from what
    ``schema --output-dir .schema`` writes for the ``declared`` versions: after a change of
    ``lmcache_versions`` (or an upgrade of the tools), editors would disagree with
    ``validate`` until it is written again. No ``.schema``: nothing to say."""
    folder = root / SCHEMA_DIR
    if not folder.is_dir():
        return []
    versions = schema_versions(declared)
    here = os.path.normpath(root) == "."
    shown = SCHEMA_DIR if here else f"{root}/{SCHEMA_DIR}"
    command = f"lmcache-config-server schema {'' if here else f'{root} '}--output-dir {shown}"
    stale = []
    for kind in FileKind:
        try:
            written: str | None = (folder / kind.file_name).read_text("utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            written = None  # unreadable: as stale as a wrong one
        if written != schema_text(repository_file_schema(versions, kind)):
            stale.append(
                ConfigWarning(
                    path=f"{shown}/{kind.file_name}",
                    message=(
                        f"not the editors' schema for LMCache {', '.join(versions)} (out of "
                        f"date, or edited by hand): editors will disagree with validate; run "
                        f"`{command}`"
                    ),
                )
            )
    return stale
