"""The LMCache config schema: which keys a worker accepts, their types and their ranges.

The field lists and deprecated aliases of every LMCache release with remote
config (0.3.13 on) are bundled in ``server/config/data``, generated from the
published wheels by ``scripts/bundle_lmcache_fields.py``; the bounds of the
values are ``data/lmcache-ranges.tsv`` (``limits``). A repository (its
``lmcache_versions``) or the server (``--lmcache-versions``) declares the
versions its fleet runs, and a commit is checked against each of them
(:func:`schema_for_versions`), with bundled data only: ``validate`` never needs
lmcache installed. When nothing is declared, the installed ``lmcache`` package
is the source of truth when it imports (the version deployed beside the
server); otherwise the bundled 0.5.6 list is used.

Values are checked the way the real client would read them, so that a value the
client would silently misread is an error here: a quoted ``"yes"`` for a bool
becomes ``False`` in the client, a date for a string field is not a string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.util
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from ..base.errors import ValueProblem
from ..base.issues import quoted
from .limits import FieldLimits, limits_for, version_key

log = logging.getLogger("server.lmcache_schema")

# The fallback when nothing is declared and lmcache is not installed.
BUNDLED_VERSION = "0.5.6"
_FIELDS_FILE = re.compile(r"^lmcache-(?P<version>\d+(?:\.\d+)*)-fields\.tsv$")

# Fields whose converter accepts only some strings (LMCache 0.5.6).
_CHOICES: dict[str, tuple[str, ...]] = {
    "hidden_states_retrieve_mode": ("prefix_strict", "skip_missing_chunks"),
}

_SCALAR_KINDS = {"int", "float", "bool", "str"}
_TYPE_RE = re.compile(r"^(?:Optional\[(?P<opt>.+)\]|(?P<plain>.+))$")
_LIST_RE = re.compile(r"^(?:list|List)\[(?P<item>\w+)\]$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldSpec:
    name: str
    kind: str  # int, float, bool, str, list, dict
    item_kind: str | None  # for lists: int, float or str
    nullable: bool
    choices: tuple[str, ...] = ()
    limits: FieldLimits = dataclasses.field(default_factory=FieldLimits)

    @property
    def type_label(self) -> str:
        base = f"list of {self.item_kind}" if self.kind == "list" else self.kind
        return f"{base} or null" if self.nullable else base


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schema:
    """The fields of one LMCache version, and its deprecated aliases; or of several.

    A schema of declared versions (``declared``) holds one member per version:
    its ``fields`` are those every member has, and a key that only some have is
    an error naming the versions that lack it (a fleet mid-upgrade runs both).
    """

    source: str
    fields: Mapping[str, FieldSpec]
    aliases: Mapping[str, str]
    version: str | None = None  # the LMCache version of a one-version schema
    declared: tuple[str, ...] = ()  # versions declared for the fleet; () when none are
    members: tuple[Schema, ...] = ()  # with ``declared``: each version's own schema

    def with_versions(self, versions: Iterable[str]) -> Schema:
        """This schema with ``versions`` declared too (a repository's lmcache_versions)."""
        wanted = {*self.declared, *versions}
        if not wanted or wanted == set(self.declared):
            return self
        return schema_for_versions(tuple(wanted))

    def unknown_key_message(self, key: str) -> str:
        lacking = [m.version or "?" for m in self.members if key not in m.fields]
        if self.members and len(lacking) < len(self.members):
            return (
                f"'{key}' is not a config key of LMCache {', '.join(lacking)} (lmcache_versions: "
                f"{', '.join(self.declared)}): workers of that version skip it as unknown"
            )
        if key in self.aliases:
            new = self.aliases[key]
            return (
                f"'{key}' is a deprecated alias of '{new}'; the LMCache client ignores "
                f"deprecated names in remote config, use '{new}'"
            )
        close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if self.declared:
            elsewhere = [v for v in bundled_versions() if key in bundled_schema(v).fields]
            if elsewhere:
                span = elsewhere[0] if len(elsewhere) == 1 else f"{elsewhere[0]} to {elsewhere[-1]}"
                return (
                    f"'{key}' is not a config key of LMCache {', '.join(self.declared)} "
                    f"(lmcache_versions), only of LMCache {span}"
                )
            return f"unknown LMCache config key '{key}' (LMCache {', '.join(self.declared)}){hint}"
        return f"unknown LMCache config key '{key}'{hint}"

    def check_value(self, key: str, value: Any, *, limits: bool = True) -> Any:
        """Return the canonical JSON value for ``key``, or raise ValueProblem.

        ``limits``: check the value's range too (not for a condition, which matches
        what workers send rather than setting it).
        """
        specs = [m.fields[key] for m in self.members] or [self.fields[key]]
        if all(spec == specs[0] for spec in specs):
            return _check(specs[0], value, limits)
        # The versions disagree on this field: check each, and say which one refuses.
        canonical: Any = None
        for member, spec in zip(self.members, specs, strict=True):
            try:
                canonical = _check(spec, value, limits)
            except ValueProblem as problem:
                raise ValueProblem(f"{problem.message} (LMCache {member.version})") from None
        return canonical


# What a JSON integer may hold here: LMCache's integer fields are sizes, counts and
# ports, and a bigger literal cannot even be written as JSON text by Python (which
# refuses to print integers of more than 4,300 digits).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _check_int_range(value: int, what: str) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise ValueProblem(
            f"{what}: {quoted(value)} is out of range; integers must fit in 64 bits "
            f"({INT_MIN} to {INT_MAX})"
        )
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _check_scalar(kind: str, value: Any, what: str) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            raise ValueProblem(
                f"{what} must be true or false, got the string {quoted(value)}: the LMCache client "
                "reads every string except 'true' and '1' as false; write true or false unquoted"
            )
        raise ValueProblem(f"{what} must be true or false, got {_type_name(value)} {quoted(value)}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return _check_int_range(value, what)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            raise ValueProblem(
                f"{what} must be an integer, got the string {quoted(value)}; remove the quotes"
            )
        raise ValueProblem(f"{what} must be an integer, got {_type_name(value)} {quoted(value)}")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int):
                _check_int_range(value, what)
            if not math.isfinite(value):
                raise ValueProblem(
                    f"{what} must be a finite number: {value!r} cannot be sent in JSON"
                )
            return float(value)
        raise ValueProblem(f"{what} must be a number, got {_type_name(value)} {quoted(value)}")
    # str
    if isinstance(value, str):
        return value
    hint = ""
    if isinstance(value, bool):
        hint = " (YAML reads unquoted yes/no/on/off/true/false as booleans)"
    raise ValueProblem(
        f"{what} must be a string, got {_type_name(value)} {quoted(value)}{hint}; quote the value"
    )


def _check_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return _check_int_range(value, where)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem(f"{where}: {quoted(value)} cannot be sent in JSON")
        return value
    if isinstance(value, list):
        return [_check_json(item, where) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueProblem(
                    f"{where}: keys must be strings, got {_type_name(key)} {quoted(key)}"
                )
            out[key] = _check_json(item, f"{where}.{key}")
        return out
    raise ValueProblem(
        f"{where}: {_type_name(value)} {quoted(value)} cannot be sent in JSON; quote it"
    )


def _check(spec: FieldSpec, value: Any, limits: bool = True) -> Any:
    canonical = _check_type(spec, value)
    if limits:
        spec.limits.check(f"'{spec.name}'", canonical)
    return canonical


def _check_type(spec: FieldSpec, value: Any) -> Any:
    what = f"'{spec.name}'"
    if value is None:
        if spec.nullable:
            return None
        raise ValueProblem(f"{what} cannot be null (type {spec.type_label})")
    if spec.kind == "dict":
        if not isinstance(value, dict):
            raise ValueProblem(f"{what} must be a mapping, got {_type_name(value)}")
        return _check_json(value, spec.name)
    if spec.kind == "list":
        if not isinstance(value, list):
            raise ValueProblem(
                f"{what} must be a list of {spec.item_kind} (e.g. [1, 2]), got {_type_name(value)}"
            )
        assert spec.item_kind is not None
        return [
            _check_scalar(spec.item_kind, item, f"item {index} of {what}")
            for index, item in enumerate(value)
        ]
    canonical = _check_scalar(spec.kind, value, what)
    if spec.choices and canonical not in spec.choices:
        raise ValueProblem(f"{what} must be one of {', '.join(spec.choices)}; got {quoted(value)}")
    return canonical


def parse_type(
    name: str, type_text: str, default_is_none: bool, version: str | None = None
) -> FieldSpec:
    """Turn a declared type such as ``Optional[list[int]]`` into a FieldSpec (with the
    field's bounds in LMCache ``version``)."""
    text = type_text.strip().replace("typing.", "")
    match = _TYPE_RE.match(text)
    assert match is not None
    nullable = match.group("opt") is not None or default_is_none
    inner = (match.group("opt") or match.group("plain")).strip()
    item_kind: str | None = None
    if inner in _SCALAR_KINDS:
        kind = inner
    elif inner in {"dict", "Dict"} or inner.startswith(("dict[", "Dict[")):
        kind = "dict"
    elif list_match := _LIST_RE.match(inner):
        kind, item_kind = "list", list_match.group("item")
        if item_kind not in {"int", "float", "str"}:
            raise ValueError(f"{name}: unsupported list item type {item_kind}")
    else:
        raise ValueError(f"{name}: unsupported type {type_text!r}")
    return FieldSpec(
        name=name,
        kind=kind,
        item_kind=item_kind,
        nullable=nullable,
        choices=_CHOICES.get(name, ()),
        limits=limits_for(name, version),
    )


def _data(name: str) -> str:
    return resources.files("server.config").joinpath("data", name).read_text("utf-8")


@cache
def bundled_versions() -> tuple[str, ...]:
    """Every LMCache version whose field list is bundled, oldest first."""
    names = (entry.name for entry in resources.files("server.config").joinpath("data").iterdir())
    found = [m.group("version") for name in names if (m := _FIELDS_FILE.match(name))]
    return tuple(sorted(found, key=version_key))


def _rows(text: str) -> list[list[str]]:
    return [row.split("\t") for row in text.splitlines()[1:] if row.strip()]


@cache
def bundled_schema(version: str = BUNDLED_VERSION) -> Schema:
    """The bundled field list and aliases of one LMCache version (nothing declared)."""
    fields: dict[str, FieldSpec] = {}
    for name, type_text, default, _env_var in _rows(_data(f"lmcache-{version}-fields.tsv")):
        fields[name] = parse_type(name, type_text, default.strip() == "None", version)
    aliases = {alias: field for alias, field, _ in _rows(_data(f"lmcache-{version}-aliases.tsv"))}
    return Schema(
        source=f"bundled LMCache {version} field list",
        fields=fields,
        aliases=aliases,
        version=version,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldDeclaration:
    """What LMCache declares of a field besides its type: documentation only (the editors'
    hover text, ``json_schema``), never used to check a value."""

    default: str  # as written in lmcache/v1/config.py (Python syntax: None, True, 'naive')
    env_var: str  # the variable a worker sets it with


@cache
def bundled_declarations(version: str = BUNDLED_VERSION) -> Mapping[str, FieldDeclaration]:
    """The default and environment variable of each field of one bundled LMCache version."""
    return {
        name: FieldDeclaration(default=default.strip(), env_var=env_var.strip())
        for name, _type_text, default, env_var in _rows(_data(f"lmcache-{version}-fields.tsv"))
    }


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be declared (not bundled), with the nearest one; None if it can."""
    known = bundled_versions()
    if version in known:
        return None
    close = difflib.get_close_matches(version, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return (
        f"unknown LMCache version '{version}'; {hint}the versions with remote config are "
        f"{', '.join(known)}"
    )


@cache
def _declared(versions: tuple[str, ...]) -> Schema:
    members = tuple(bundled_schema(v) for v in versions)
    newest = members[-1]
    # A key must exist in every declared version; its spec is taken from the newest.
    fields = {
        name: spec for name, spec in newest.fields.items() if all(name in m.fields for m in members)
    }
    aliases: dict[str, str] = {}
    for member in members:
        aliases.update(member.aliases)
    return Schema(
        source=f"LMCache {', '.join(versions)} (declared; bundled field lists)",
        fields=fields,
        aliases=aliases,
        version=newest.version if len(members) == 1 else None,
        declared=versions,
        members=members,
    )


def schema_for_versions(versions: Iterable[str]) -> Schema:
    """The schema that checks a commit against each of ``versions`` (bundled data only).

    The same versions, in any order, give the same object (the parse memo relies on it).
    ValueError for a version that is not bundled (callers check with version_problem).
    """
    wanted = tuple(sorted(set(versions), key=version_key))
    for version in wanted:
        if (problem := version_problem(version)) is not None:
            raise ValueError(problem)
    if not wanted:
        raise ValueError("no LMCache version declared")
    return _declared(wanted)


def _type_text(declared: Any) -> str:
    return declared.__name__ if isinstance(declared, type) else str(declared)


def installed_schema() -> Schema | None:
    """The schema of the installed lmcache package, or None when it is absent or unreadable."""
    if importlib.util.find_spec("lmcache") is None:
        return None
    try:
        config_module = importlib.import_module("lmcache.v1.config")
        definitions: Mapping[str, Mapping[str, Any]] = config_module._CONFIG_DEFINITIONS
        aliases = dict(getattr(config_module, "_CONFIG_ALIASES", {}))
        version = getattr(importlib.import_module("lmcache"), "__version__", "unknown")
        bundled_aliases = bundled_schema().aliases
        for deprecated in getattr(config_module, "_DEPRECATED_CONFIGS", {}):
            aliases.setdefault(deprecated, bundled_aliases.get(deprecated, "(removed)"))
        fields = {
            name: parse_type(
                name,
                _type_text(definition["type"]),
                definition.get("default") is None,
                version if version != "unknown" else None,
            )
            for name, definition in definitions.items()
        }
    except Exception as exc:  # any failure: fall back to the bundled list, say why
        log.warning("installed lmcache package unreadable (%s); using the bundled schema", exc)
        return None
    return Schema(
        source=f"installed lmcache {version}", fields=fields, aliases=aliases, version=version
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchemaChoice:
    """The schema of the authoring commands, chosen only once global.yaml has been read.

    With versions declared (here or by the repository) it is theirs, from bundled
    data: lmcache is never imported, so ``validate`` and the pre-commit hook stay
    fast and need no lmcache. With none, it is :func:`load_schema`'s (the
    installed lmcache, imported with its stderr chatter dropped).
    """

    versions: tuple[str, ...] = ()

    def with_versions(self, versions: Iterable[str]) -> Schema:
        wanted = (*self.versions, *versions)
        if wanted:
            return schema_for_versions(wanted)
        with contextlib.redirect_stderr(io.StringIO()):
            return load_schema()


@cache
def load_schema(prefer_installed: bool = True, versions: tuple[str, ...] = ()) -> Schema:
    """The schema to check commits with: of the declared ``versions`` (bundled data, never
    an import of lmcache); with none declared, the installed lmcache's, else 0.5.6's."""
    if versions:
        return schema_for_versions(versions)
    schema = installed_schema() if prefer_installed else None
    return schema or bundled_schema()
