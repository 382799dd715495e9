"""The JSON Schema of a config repository's files, for editors (yaml-language-server).

Editors that use yaml-language-server (VS Code's YAML extension, Neovim, JetBrains,
Helix) complete keys, show each key's type and range on hover and mark errors while
the author types, given a JSON Schema. It is generated here from the definitions
validation uses, never written by hand: the fields of the declared LMCache versions
(``schema``: kinds, nullability, choices), their bounds (``limits``, from
``data/lmcache-ranges.tsv``), deprecated aliases, and the sections ``parser`` accepts.
So a field, a bound or a section added there reaches the editors at the next
``lmcache-config-server schema --output-dir .schema``.

Draft-07: yaml-language-server's README promises "JSON Schema 7 and below" (its
2019-09 and 2020-12 support is recent, and older editor builds lack it), and nothing
here needs a later draft. Two files, because global.yaml alone may hold ``lmcache_versions``.
The output is deterministic (sorted keys, no dates, no server version), so the
files committed beside the config can be checked for drift.

What a JSON Schema cannot say (cross-field and cross-file rules, LMCache's own
validation, the secret scopes...) is listed in :data:`NOT_CHECKED`, which goes into
each schema's description: ``validate`` remains the judge.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..base.errors import ValueProblem
from .limits import CONTROL_CHARACTERS, Bound, FieldLimits
from .names import APPS_DIR, GLOBAL_FILE
from .parser import ACCESS_KEYS, FILE_SECTIONS, RULE_KEYS, WHEN_KEYS
from .rollout import DEFAULT_IDENTITY
from .schema import (
    INT_MAX,
    INT_MIN,
    FieldSpec,
    Schema,
    bundled_declarations,
    bundled_schema,
    bundled_versions,
    schema_for_versions,
)
from .secret_refs import SECRET_NAME_RE, SECRET_NAME_RULE
from .versions import VERSIONS_KEY

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
# The largest finite double: a bound that refuses .inf, which JSON cannot carry.
FLOAT_MAX = sys.float_info.max
# "At the end of the text": ``$`` also matches before a final newline in Python's re
# (which the tests' jsonschema uses) but not in ECMAScript (the editors'); this
# lookahead means the same in both.
_END = r"(?![\s\S])"
# Strings are checked with lookaheads from the start, never ^[...]*$, for the same reason.
NO_CONTROL_CHARACTERS = r"^(?![\s\S]*" + CONTROL_CHARACTERS.pattern + ")"
_SECRET_NAME = SECRET_NAME_RE.pattern.removeprefix("^").removesuffix("$")
# A ${secret:...} whose name breaks the rule (what ``parser`` reports as a bad reference).
NO_BAD_SECRET_REFERENCE = r"^(?![\s\S]*\$\{secret:(?!" + _SECRET_NAME + r"\})[^}]*\})"
# An include's written form (``names.include_path_problem``): relative, inside the root,
# a .yaml file that is neither global.yaml nor an app file.
INCLUDE_PATH = (
    r"^(?!/)(?!\.\./)(?!" + re.escape(GLOBAL_FILE) + _END + ")(?!" + re.escape(APPS_DIR) + "/)"
    r"[\s\S]*\.yaml" + _END
)
# What the server checks and these schemas cannot: said in each schema's description, in
# the READMEs, and held by the tests (they check only what the schema claims).
NOT_CHECKED = (
    "whether an included fragment exists, include cycles, and include paths after "
    "normalisation (a/../apps/x.yaml)",
    "a key in both defaults and overrides of one file or rule; two rules of one name",
    "app file names (apps/<app_id>.yaml) and YAML files nothing reads",
    "an integer written as 256.0 (JSON has one number type: the server refuses it), and .nan",
    "string lengths in UTF-8 bytes (counted here in characters), and extra_config's 64 KB",
    "the guardrails: LMCache's own validation of each app's config (cross-field rules), the "
    "key policy, whether each ${secret:NAME} is defined and scoped to the app, apps that vanish",
)


class FileKind(enum.Enum):
    """Which files a schema is for: global.yaml alone may declare ``lmcache_versions``."""

    GLOBAL = "global"
    APP_OR_FRAGMENT = "app-or-fragment"

    @property
    def file_name(self) -> str:
        return f"{self.value}.schema.json"

    @property
    def files(self) -> str:
        return GLOBAL_FILE if self is FileKind.GLOBAL else f"{APPS_DIR}/<app_id>.yaml and fragments"


def repository_file_schema(versions: Sequence[str], kind: FileKind) -> dict[str, Any]:
    """The JSON Schema of one kind of file, for a fleet running every one of ``versions``
    (the keys all of them have, each value valid for each). ValueError for a version
    that is not bundled."""
    return _Generator(schema_for_versions(versions)).file_schema(kind)


def schema_text(document: Mapping[str, Any]) -> str:
    """A schema as the bytes to commit: sorted keys, two-space indents, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/definitions/{name}"}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """``schema`` with a description; a ``$ref`` is wrapped (draft-07 ignores its siblings)."""
    if "$ref" in schema:
        return {"allOf": [schema], "description": description}
    return {**schema, "description": description}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 2**63 else value


def _bounds(node: dict[str, Any], limits: FieldLimits | None, low: float, high: float) -> None:
    """Minimum and maximum of a number: the field's bound when it has one, else the type's."""
    for keyword, bound, fallback in (
        ("minimum", limits.minimum if limits else None, low),
        ("maximum", limits.maximum if limits else None, high),
    ):
        if bound is None:
            node[keyword] = _number(fallback)
        elif bound.exclusive:
            node["exclusive" + keyword.capitalize()] = _number(bound.value)
        else:
            node[keyword] = _number(bound.value)


def _bound_words(limits: FieldLimits) -> str:
    """The numeric bounds as the error messages say them, with their reason."""
    parts: list[str] = []
    reasons: list[str] = []
    low, high = limits.minimum, limits.maximum
    if low is not None:
        parts.append(low.as_minimum())
        reasons.append(low.reason)
    if high is not None:
        parts.append(high.as_maximum())
        if high.reason not in reasons:
            reasons.append(high.reason)
    if not parts:
        return ""
    return " and ".join(parts) + "".join(f" ({reason})" for reason in reasons if reason)


def _reasoned(words: str, bound: Bound | str | None) -> str:
    reason = bound.reason if isinstance(bound, Bound) else bound
    return f"{words} ({reason})" if reason else words


def _shown_default(text: str) -> str:
    """LMCache's default (Python syntax) as a YAML author writes it."""
    return {"None": "null", "True": "true", "False": "false"}.get(text, text)


@dataclasses.dataclass(frozen=True)
class _Generator:
    """Builds the schemas of one declared set of LMCache versions."""

    schema: Schema  # of declared versions (schema_for_versions): one member per version

    @property
    def versions(self) -> tuple[str, ...]:
        return self.schema.declared

    # -- values --

    def _scalar(self, kind: str, limits: FieldLimits | None, *, item: bool) -> dict[str, Any]:
        """One scalar's schema: its JSON type, and with ``limits`` (a setting, not a
        condition) its bounds, lengths and the secret-reference rule."""
        if kind == "bool":
            return {"type": "boolean"}
        if kind == "int":
            node: dict[str, Any] = {"type": "integer"}
            _bounds(node, limits, INT_MIN, INT_MAX)
            return node
        if kind == "float":
            node = {"type": "number"}
            _bounds(node, limits, -FLOAT_MAX, FLOAT_MAX)
            return node
        node = {"type": "string"}
        if limits is None:
            return node  # a condition: any string, matched as a glob
        checks: list[dict[str, Any]] = [_ref("secret_references")]
        if limits.plain_text is not None:
            checks.append(
                {
                    "pattern": NO_CONTROL_CHARACTERS,
                    "patternErrorMessage": _reasoned(
                        "must not contain control characters", limits.plain_text
                    ),
                }
            )
        node["allOf"] = checks
        if limits.max_length is not None:
            node["maxLength"] = int(limits.max_length.value)
        if limits.non_empty is not None and not item:
            node["minLength"] = 1
        return node

    def _value(self, spec: FieldSpec, *, setting: bool) -> dict[str, Any]:
        """What a value of ``spec`` may be: as a setting (type, choices, bounds) or as a
        condition (``setting=False``: a string glob, or a value of the type)."""
        limits = spec.limits if setting else None
        node: dict[str, Any]
        if spec.kind == "dict":
            node = {
                "type": "object",
                "additionalProperties": _ref("extra_config_value" if setting else "json_value"),
            }
        elif spec.kind == "list":
            assert spec.item_kind is not None
            node = {"type": "array", "items": self._scalar(spec.item_kind, limits, item=True)}
            if limits is not None and limits.non_empty is not None:
                node["minItems"] = 1
        else:
            node = self._scalar(spec.kind, limits, item=False)
            if setting and spec.choices:
                node["enum"] = [*spec.choices, *([None] if spec.nullable else [])]
        types = [node["type"]]
        if not setting and "string" not in types:
            types.append("string")  # a condition's string is a glob, whatever the type
        if spec.nullable:
            types.append("null")
        node["type"] = types[0] if len(types) == 1 else types
        return node

    def _words(self, spec: FieldSpec) -> str:
        """A field's type and range in words, with the reasons the ranges file gives."""
        limits = spec.limits
        words: list[str] = []
        numeric = spec.kind in {"int", "float"} or spec.item_kind in {"int", "float"}
        textual = spec.kind == "str" or spec.item_kind == "str"
        each = "each item " if spec.kind == "list" else ""
        if numeric and (bounds := _bound_words(limits)):
            words.append(each + bounds)
        if spec.choices:
            words.append(f"one of {', '.join(spec.choices)}")
        if limits.non_empty is not None and spec.kind in {"list", "str"}:
            words.append(_reasoned("not empty", limits.non_empty))
        if textual and limits.max_length is not None:
            bytes_ = _number(limits.max_length.value)
            words.append(each + _reasoned(f"at most {bytes_} bytes", limits.max_length))
        if spec.kind == "dict" and limits.max_length is not None:
            bytes_ = _number(limits.max_length.value)
            words.append(_reasoned(f"at most {bytes_} bytes as JSON", limits.max_length))
        if textual and limits.plain_text is not None:
            words.append(each + _reasoned("no control characters", limits.plain_text))
        if textual and not spec.choices:
            words.append("may hold ${secret:NAME} references")
        return spec.type_label + (": " + "; ".join(words) if words else "") + "."

    def _specs(self, name: str) -> list[tuple[str, FieldSpec]]:
        members = self.schema.members or (self.schema,)
        return [(member.version or "?", member.fields[name]) for member in members]

    def _value_in_each(self, specs: list[tuple[str, FieldSpec]], *, setting: bool) -> Any:
        """The value schema of a field in every declared version: one, or all of theirs
        when the versions disagree (a value must suit each)."""
        if len({spec for _, spec in specs}) == 1:
            return self._value(specs[-1][1], setting=setting)
        return {"allOf": [self._value(spec, setting=setting) for _, spec in specs]}

    def _setting(self, name: str) -> dict[str, Any]:
        """A key of defaults/overrides: its value schema, hover text and default."""
        specs = self._specs(name)
        node = self._value_in_each(specs, setting=True)
        if len({spec for _, spec in specs}) == 1:
            about = self._words(specs[-1][1])
        else:
            about = " ".join(f"LMCache {version}: {self._words(spec)}" for version, spec in specs)
        declaration = bundled_declarations(specs[-1][0]).get(name)
        if declaration is not None:
            about += (
                f" LMCache's default: {_shown_default(declaration.default)}."
                f" A worker sets it with {declaration.env_var}."
            )
            try:
                default = self.schema.check_value(name, ast.literal_eval(declaration.default))
            except (ValueError, SyntaxError, TypeError, ValueProblem):
                pass  # not a literal (an expression), or a value validation refuses (inf)
            else:
                if default is not None:  # null: completion leaves the value to the author
                    node["default"] = default
        return _described(node, about)

    def _condition(self, name: str) -> dict[str, Any]:
        """A key of ``when: config:`` or ``access: config:``: its type only, or a glob."""
        specs = self._specs(name)
        node = self._value_in_each(specs, setting=False)
        label = specs[-1][1].type_label
        return _described(
            node,
            f"Matches when the worker's current {name} equals this {label} value; a string is "
            "a glob (* ? [...]) matched against the value's text. Not range-checked: it "
            "matches what workers send.",
        )

    def _refused_keys(self) -> dict[str, Any]:
        """Keys validation refuses with a message of its own: deprecated aliases, and keys
        of other LMCache versions. Listed (never suggested) so that the editor shows it."""
        known: set[str] = set()
        for version in bundled_versions():
            member = bundled_schema(version)
            known.update(member.fields, member.aliases)
        known.update(self.schema.aliases)
        refused: dict[str, Any] = {}
        for key in sorted(known - set(self.schema.fields)):
            message = self.schema.unknown_key_message(key)
            refused[key] = {
                "not": {},
                "description": f"Not allowed: {message}.",
                "deprecationMessage": message,
                "doNotSuggest": True,
            }
        return refused

    def _keys(self, make: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        properties = {name: make(name) for name in sorted(self.schema.fields)}
        return {**self._refused_keys(), **properties}

    # -- sections --

    def _definitions(self) -> dict[str, Any]:
        secret_message = f"a ${{secret:NAME}} reference names a secret: {SECRET_NAME_RULE}"
        finite = {"minimum": -FLOAT_MAX, "maximum": FLOAT_MAX}
        by_values = [
            *sorted(self.schema.fields),
            *(f"config:{n}" for n in sorted(self.schema.fields)),
        ]
        conditions = {
            "type": "object",
            "properties": self._keys(self._condition),
            "additionalProperties": False,
            "description": "Worker current_config field -> value, or a glob for strings.",
        }
        env = {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": (
                "Worker environment variable -> glob (* ? [...]), matched case-sensitively; a "
                "missing variable never matches. Values are strings: quote numbers."
            ),
        }

        def filled(key: str) -> dict[str, Any]:
            # validation refuses a when/access that holds no condition at all
            return {"required": [key], "properties": {key: {"minProperties": 1}}}

        when_properties = {
            "env": _ref("env_conditions"),
            "config": _ref("config_conditions"),
            "percent": {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "description": (
                    "Applies the rule to a stable share of the app's workers, 0 to 100: raising "
                    "it only adds workers while the rule keeps its name."
                ),
            },
            "by": {
                "type": "string",
                "anyOf": [{"pattern": r"^env:[\s\S]"}, {"enum": by_values}],
                "description": (
                    "The worker identity percent hashes: a current_config field (FIELD or "
                    f"config:FIELD; default {DEFAULT_IDENTITY}) or env:NAME. Needs percent."
                ),
            },
        }
        _same_keys(when_properties, WHEN_KEYS, "when")
        rule_properties = {
            "name": {
                "type": "string",
                "pattern": r"\S",
                "description": (
                    "Unique in the file; percent rollouts hash it, so renaming a rule draws a "
                    "new sample of workers."
                ),
            },
            "when": _described(_ref("when"), "All its conditions must hold."),
            "defaults": _described(_ref("settings"), "Sent with override: false."),
            "overrides": _described(_ref("settings"), "Sent with override: true."),
        }
        _same_keys(rule_properties, RULE_KEYS, "rule")
        access_properties = {"env": _ref("env_conditions"), "config": _ref("config_conditions")}
        _same_keys(access_properties, ACCESS_KEYS, "access")
        return {
            "settings": {
                "type": "object",
                "properties": self._keys(self._setting),
                "additionalProperties": False,
            },
            "secret_references": {
                "pattern": NO_BAD_SECRET_REFERENCE,
                "patternErrorMessage": secret_message,
            },
            # extra_config: any JSON value, finite, its strings' secret references well named
            "extra_config_value": {
                **finite,
                "allOf": [_ref("secret_references")],
                "items": _ref("extra_config_value"),
                "additionalProperties": _ref("extra_config_value"),
            },
            "json_value": {
                **finite,
                "items": _ref("json_value"),
                "additionalProperties": _ref("json_value"),
            },
            "env_conditions": env,
            "config_conditions": conditions,
            "when": {
                "type": "object",
                "properties": when_properties,
                "additionalProperties": False,
                "dependencies": {"by": ["percent"]},
                "anyOf": [{"required": ["percent"]}, filled("env"), filled("config")],
            },
            "rule": {
                "type": "object",
                "properties": rule_properties,
                "additionalProperties": False,
                # A rule needs a when and something to set (an empty {} is an error too).
                "required": ["when"],
                "anyOf": [{"required": ["defaults"]}, {"required": ["overrides"]}],
            },
            "access": {
                "type": "object",
                "properties": access_properties,
                "additionalProperties": False,
                "anyOf": [filled("env"), filled("config")],
            },
        }

    def file_schema(self, kind: FileKind) -> dict[str, Any]:
        versions = ", ".join(self.versions)
        sections: dict[str, Any] = {
            "include": {
                "type": "array",
                "uniqueItems": True,
                "items": {
                    "type": "string",
                    "pattern": INCLUDE_PATH,
                    "patternErrorMessage": (
                        "a fragment path relative to the config root, ending in .yaml, "
                        "not global.yaml nor an apps/ file"
                    ),
                },
                "description": (
                    "Fragments applied before this file's own sections, in this order: paths "
                    "relative to the config root. A fragment has the sections of an app file."
                ),
            },
            "defaults": _described(
                _ref("settings"),
                "Sent with override: false: a value the worker set itself wins.",
            ),
            "overrides": _described(_ref("settings"), "Sent with override: true: always applied."),
            "rules": {
                "type": "array",
                "items": _ref("rule"),
                "description": (
                    "Applied in file order after the file's own sections, each to the workers "
                    "its when matches."
                ),
            },
            "access": _described(
                _ref("access"),
                "Conditions a worker must meet to get this config (403 otherwise); they do "
                "not authenticate.",
            ),
        }
        _same_keys(sections, FILE_SECTIONS, "file")
        if kind is FileKind.GLOBAL:
            sections[VERSIONS_KEY] = {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "enum": list(bundled_versions())},
                "description": (
                    "The LMCache versions the fleet runs: every file is checked against each. "
                    f"This schema was generated for {versions}; after changing the list, "
                    "regenerate it: lmcache-config-server schema --output-dir .schema"
                ),
            }
        else:
            message = (
                f"'{VERSIONS_KEY}' belongs in {GLOBAL_FILE}: it declares the LMCache versions "
                "of the whole fleet"
            )
            sections[VERSIONS_KEY] = {
                "not": {},
                "description": f"Not allowed: {message}.",
                "deprecationMessage": message,
                "doNotSuggest": True,
            }
        unchecked = "; ".join(NOT_CHECKED)
        return {
            "$schema": DRAFT_07,
            "title": f"LMCache config repository: {kind.files} (LMCache {versions})",
            "description": (
                f"Generated by lmcache-config-server schema from the field lists of LMCache "
                f"{versions} and the server's file format: sections, rules, keys, types, "
                f"ranges. lmcache-config-server validate decides; not checked here: "
                f"{unchecked}."
            ),
            "type": "object",
            "properties": sections,
            "additionalProperties": False,
            "definitions": self._definitions(),
        }


def _same_keys(properties: Mapping[str, Any], accepted: Iterable[str], what: str) -> None:
    """The schema's keys are exactly the parser's: a section added there must come here."""
    if set(properties) != set(accepted):
        raise AssertionError(
            f"json_schema: {what} keys {sorted(properties)} differ from the parser's "
            f"{sorted(accepted)}"
        )
