"""Bundle the config fields and deprecated aliases of every LMCache release with remote config.

For each version (default: every one on PyPI from 0.3.13, the first with
remote config), the wheel is downloaded with ``pip download --no-deps`` (a
cache directory is reused), opened as a zip, and ``lmcache/v1/config.py`` is
read with ``ast``: lmcache is never imported, so this needs neither torch nor
CUDA, and runs the same for a release this machine could not install. Written
to ``server/config/data``:

- ``lmcache-<version>-fields.tsv``: name, declared type, default, env var;
- ``lmcache-<version>-aliases.tsv``: deprecated name, the field it became
  (``(removed)`` when none), and which table of config.py names it.

``--check`` writes nothing and fails when a bundled file differs; ``--config-py``
reads one config.py from disk instead of a wheel (the tests use it on the
installed package, with no network).

    python scripts/bundle_lmcache_fields.py                 # every version, from PyPI
    python scripts/bundle_lmcache_fields.py 0.4.7 0.5.6     # these versions
    python scripts/bundle_lmcache_fields.py --check         # the bundled files are current
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FIRST_WITH_REMOTE_CONFIG = (0, 3, 13)
DATA_DIR = Path(__file__).resolve().parent.parent / "server" / "config" / "data"
CONFIG_PY = "lmcache/v1/config.py"
CONFIG_BASE_PY = "lmcache/v1/config_base.py"
FIELDS_HEADER = "name\ttype\tdefault\tenv_var"
ALIASES_HEADER = "alias\tfield\ttable"
_USE_INSTEAD = re.compile(r"\buse (\w+) instead\b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Field:
    name: str
    type_text: str
    default: str
    env_var: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Alias:
    alias: str
    field: str
    table: str


class ExtractError(Exception):
    """config.py does not hold the tables in a form this script can read without running it."""


def version_key(version: str) -> tuple[int, ...]:
    # Release versions only (0.3.10.post1 sorts after 0.3.10); pre-releases are not bundled.
    return tuple(int(part) for part in re.findall(r"\d+", version))


def pypi_versions() -> list[str]:
    """Every lmcache release on the index pip uses, from the first with remote config."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "lmcache"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stdout.splitlines():
        if line.startswith("Available versions:"):
            versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
            return sorted(
                (v for v in versions if version_key(v)[:3] >= FIRST_WITH_REMOTE_CONFIG),
                key=version_key,
            )
    raise SystemExit(f"pip index versions lmcache printed no versions:\n{result.stdout}")


def download_wheel(version: str, cache: Path) -> Path:
    """The wheel of ``version`` in ``cache``, downloaded first when it is not there yet."""
    pattern = f"lmcache-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(cache),
                f"lmcache=={version}",
            ],
            check=True,
        )
        found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"pip download left no {pattern} in {cache}")
    return found[0]


def _literal(node: ast.expr, where: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    # float("inf") is the one call a default is written with (pd_allocation_timeout_sec).
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "float"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return float(node.args[0].value)
    raise ExtractError(f"{where}: not a literal: {ast.unparse(node)}")


def _top_level_dict(module: ast.Module, name: str) -> ast.Dict | None:
    found: ast.Dict | None = None
    for statement in module.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        if isinstance(target, ast.Name) and target.id == name:
            if not isinstance(value, ast.Dict):
                raise ExtractError(f"{name} is not a dict literal")
            found = value
    return found


def _changed_later(module: ast.Module, name: str) -> bool:
    """Whether config.py changes the table after defining it (the literal would not be all)."""
    for node in ast.walk(module):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == name
        ):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == name
            and node.func.attr in {"update", "setdefault", "pop", "__setitem__"}
        ):
            return True
    return False


def _string_pairs(table: ast.Dict, name: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in zip(table.keys, table.values, strict=True):
        if key is None:
            raise ExtractError(f"{name}: ** in the literal")
        left, right = _literal(key, name), _literal(value, name)
        if not isinstance(left, str) or not isinstance(right, str):
            raise ExtractError(f"{name}: not a table of strings")
        pairs.append((left, right))
    return pairs


def extract(source: str) -> tuple[list[Field], list[Alias]]:
    """The fields and aliases of one ``lmcache/v1/config.py``, read without running it."""
    module = ast.parse(source)
    for name in ("_CONFIG_DEFINITIONS", "_CONFIG_ALIASES", "_DEPRECATED_CONFIGS"):
        if _changed_later(module, name):
            raise ExtractError(f"{name} is changed after its definition")
    definitions = _top_level_dict(module, "_CONFIG_DEFINITIONS")
    if definitions is None:
        raise ExtractError("no _CONFIG_DEFINITIONS")
    fields: list[Field] = []
    for key, value in zip(definitions.keys, definitions.values, strict=True):
        if key is None or not isinstance(value, ast.Dict):
            raise ExtractError("_CONFIG_DEFINITIONS: an entry is not NAME: {...}")
        name = _literal(key, "_CONFIG_DEFINITIONS")
        if not isinstance(name, str):
            raise ExtractError("_CONFIG_DEFINITIONS: a name is not a string")
        entry = {
            str(_literal(k, name)): v
            for k, v in zip(value.keys, value.values, strict=True)
            if k is not None
        }
        if "type" not in entry:
            raise ExtractError(f"{name}: no type")
        type_text = ast.unparse(entry["type"]).replace("typing.", "")
        default = repr(_literal(entry["default"], name)) if "default" in entry else "None"
        # config.py derives every variable name the same way (get_env_name).
        fields.append(
            Field(
                name=name, type_text=type_text, default=default, env_var=f"LMCACHE_{name.upper()}"
            )
        )
    aliases: list[Alias] = []
    alias_table = _top_level_dict(module, "_CONFIG_ALIASES")
    named = set()
    if alias_table is not None:
        for old, new in _string_pairs(alias_table, "_CONFIG_ALIASES"):
            aliases.append(Alias(alias=old, field=new, table="_CONFIG_ALIASES"))
            named.add(old)
    deprecated = _top_level_dict(module, "_DEPRECATED_CONFIGS")
    if deprecated is not None:
        for old, message in _string_pairs(deprecated, "_DEPRECATED_CONFIGS"):
            if old in named:
                continue  # already an alias, with its target
            match = _USE_INSTEAD.search(message)
            aliases.append(
                Alias(
                    alias=old,
                    field=match.group(1) if match else "(removed)",
                    table="_DEPRECATED_CONFIGS",
                )
            )
    return fields, aliases


def fields_tsv(fields: list[Field]) -> str:
    rows = [FIELDS_HEADER]
    rows += [f"{f.name}\t{f.type_text}\t{f.default}\t{f.env_var}" for f in fields]
    return "\n".join(rows) + "\n"


def aliases_tsv(aliases: list[Alias]) -> str:
    rows = [ALIASES_HEADER, *(f"{a.alias}\t{a.field}\t{a.table}" for a in aliases)]
    return "\n".join(rows) + "\n"


def outputs(version: str, source: str) -> dict[str, str]:
    """The bundled files of one version, by file name."""
    fields, aliases = extract(source)
    return {
        f"lmcache-{version}-fields.tsv": fields_tsv(fields),
        f"lmcache-{version}-aliases.tsv": aliases_tsv(aliases),
    }


def wheel_sources(wheel: Path) -> tuple[str, bool]:
    """config.py of a wheel, and whether the wheel has remote config at all."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(CONFIG_PY).decode("utf-8")
        try:
            base = archive.read(CONFIG_BASE_PY).decode("utf-8")
        except KeyError:
            base = ""
    return source, "def fetch_remote_config(" in base


def write_or_check(files: dict[str, str], out: Path, check: bool) -> bool:
    """Write the files (or compare them); False when --check finds a difference."""
    same = True
    for name, text in files.items():
        path = out / name
        if check:
            if not path.is_file() or path.read_text("utf-8") != text:
                print(f"{path}: differs from what the wheel says", file=sys.stderr)
                same = False
        else:
            path.write_text(text, "utf-8")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", help="versions (default: all from 0.3.13 on PyPI)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where the TSV files go")
    parser.add_argument("--wheels", type=Path, help="wheel cache directory (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument(
        "--config-py", type=Path, help="read this config.py instead of a wheel (one version)"
    )
    args = parser.parse_args(argv)
    if args.config_py is not None:
        if len(args.versions) != 1:
            parser.error("--config-py needs exactly one version")
        files = outputs(args.versions[0], args.config_py.read_text("utf-8"))
        return 0 if write_or_check(files, args.out, args.check) else 1
    versions = args.versions or pypi_versions()
    same = True
    with tempfile.TemporaryDirectory() as temp:
        cache = args.wheels or Path(temp)
        cache.mkdir(parents=True, exist_ok=True)
        for version in versions:
            source, remote = wheel_sources(download_wheel(version, cache))
            if not remote:
                print(f"{version}: no remote config (fetch_remote_config): skipped")
                continue
            files = outputs(version, source)
            same = write_or_check(files, args.out, args.check) and same
            count = files[f"lmcache-{version}-fields.tsv"].count("\n") - 1
            print(f"{version}: {count} fields")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
