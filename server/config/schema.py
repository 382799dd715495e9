"""The LMCache config schema: which keys a worker accepts and what type each must have.

The installed ``lmcache`` package is the source of truth when it imports (so the
schema follows the LMCache version deployed beside the server); otherwise the
field list of LMCache 0.5.6 bundled in ``server/config/data`` is used.

Values are checked the way the real client would read them, so that a value the
client would silently misread is an error here: a quoted ``"yes"`` for a bool
becomes ``False`` in the client, a date for a string field is not a string.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import logging
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from ..base.errors import ValueProblem
from ..base.issues import quoted

log = logging.getLogger("server.lmcache_schema")

BUNDLED_VERSION = "0.5.6"

# Deprecated names of LMCache 0.5.6 and the field each became. The client does not
# resolve them for remote items (it skips them as unknown), so they are errors here.
_BUNDLED_ALIASES: dict[str, str] = {
    "enable_xpyd": "enable_pd",
    "nixl_peer_host": "pd_peer_host",
    "nixl_peer_init_port": "pd_peer_init_port",
    "nixl_peer_alloc_port": "pd_peer_alloc_port",
    "nixl_proxy_host": "pd_proxy_host",
    "nixl_proxy_port": "pd_proxy_port",
    "nixl_buffer_size": "pd_buffer_size",
    "nixl_role": "pd_role",
    "controller_url": "controller_pull_url",
    "lmcache_worker_port": "lmcache_worker_ports",
    "plugin_locations": "runtime_plugin_locations",
    "external_backends": "storage_plugins",
    "nixl_peer_port": "nixl_receiver_port",
}

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

    @property
    def type_label(self) -> str:
        base = f"list of {self.item_kind}" if self.kind == "list" else self.kind
        return f"{base} or null" if self.nullable else base


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schema:
    """The fields of one LMCache version, and its deprecated aliases."""

    source: str
    fields: Mapping[str, FieldSpec]
    aliases: Mapping[str, str]

    def unknown_key_message(self, key: str) -> str:
        if key in self.aliases:
            new = self.aliases[key]
            return (
                f"'{key}' is a deprecated alias of '{new}'; the LMCache client ignores "
                f"deprecated names in remote config, use '{new}'"
            )
        close = difflib.get_close_matches(key, list(self.fields), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown LMCache config key '{key}'{hint}"

    def check_value(self, key: str, value: Any) -> Any:
        """Return the canonical JSON value for ``key``, or raise ValueProblem."""
        return _check(self.fields[key], value)


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


def _check(spec: FieldSpec, value: Any) -> Any:
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


def parse_type(name: str, type_text: str, default_is_none: bool) -> FieldSpec:
    """Turn a declared type such as ``Optional[list[int]]`` into a FieldSpec."""
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
    )


def bundled_schema() -> Schema:
    text = (
        resources.files("server.config")
        .joinpath("data/lmcache-0.5.6-fields.tsv")
        .read_text("utf-8")
    )
    fields: dict[str, FieldSpec] = {}
    for row in text.splitlines()[1:]:
        if not row.strip():
            continue
        name, type_text, default, _env_var = row.split("\t")
        fields[name] = parse_type(name, type_text, default.strip() == "None")
    return Schema(
        source=f"bundled LMCache {BUNDLED_VERSION} field list",
        fields=fields,
        aliases=_BUNDLED_ALIASES,
    )


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
        for deprecated in getattr(config_module, "_DEPRECATED_CONFIGS", {}):
            aliases.setdefault(deprecated, _BUNDLED_ALIASES.get(deprecated, "(removed)"))
        fields = {
            name: parse_type(
                name,
                _type_text(definition["type"]),
                definition.get("default") is None,
            )
            for name, definition in definitions.items()
        }
        version = getattr(importlib.import_module("lmcache"), "__version__", "unknown")
    except Exception as exc:  # any failure: fall back to the bundled list, say why
        log.warning("installed lmcache package unreadable (%s); using the bundled schema", exc)
        return None
    return Schema(source=f"installed lmcache {version}", fields=fields, aliases=aliases)


@cache
def load_schema(prefer_installed: bool = True) -> Schema:
    schema = installed_schema() if prefer_installed else None
    return schema or bundled_schema()
