"""Reading a worker's /config request body: checked whole, built only as far as it is used.

The LMCache client sends about 5 KB of JSON: its whole config (108 fields) as
``current_config`` and its whole environment as ``env_variables``. Every body
is checked completely, whatever the app: it must be JSON, an object, with
string env values, within ``--max-env-vars`` and ``--max-json-depth``; a
malformed body gets the same 400 for an app with rules as for one without.

Only an app with rules or access conditions reads ``current_config``; for the
others (answered from bytes serialised once per snapshot) the fleet table
needs just ``lmcache_instance_id``. For those apps, the common body (ASCII, as
the client's ``json.dumps`` writes it) is decoded by msgspec into the
environment and the instance id alone: msgspec checks the fields it skips as
strictly as it parses, without building their ~150 objects. Anything this
path does not accept goes to the full parse (orjson, then the standard
library for what orjson refuses, such as NaN or integers beyond 64 bits),
which accepts and refuses exactly as before and words every refusal; a test
holds that both paths agree on every body.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import orjson

from ..base.errors import MalformedBody

_STR_ONLY = frozenset({str})


@dataclasses.dataclass(frozen=True, kw_only=True)
class BodyLimits:
    """Bounds on a worker's body beyond its size (which aiohttp enforces)."""

    max_env_vars: int = 4096
    max_json_depth: int = 32


class _Identity(msgspec.Struct):
    # Its checked JSON text (empty when absent), parsed as the full parse would:
    # msgspec would turn an integer beyond 64 bits into a float.
    lmcache_instance_id: msgspec.Raw = msgspec.Raw()


class _IdentifiedBody(msgspec.Struct):
    env_variables: dict[str, str] | None = None
    current_config: _Identity | None = None


_IDENTIFIED_BODY = msgspec.json.Decoder(_IdentifiedBody)


class RequestBody:
    """A checked body: the environment, and current_config when it was built."""

    __slots__ = ("_config", "env", "instance_id")

    def __init__(
        self, env: dict[str, Any], config: dict[str, Any] | None, instance_id: object = None
    ) -> None:
        self.env = env
        self._config = config
        self.instance_id = instance_id if config is None else config.get("lmcache_instance_id")

    def config(self) -> dict[str, Any]:
        if self._config is None:
            raise RuntimeError("current_config was not built: parse with need_config=True")
        return self._config


def _parse_value(text: bytes) -> Any:
    """One checked JSON value, as the full parse reads it."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses: NaN, integers beyond 64 bits
        return json.loads(text)


def _parse_with_stdlib(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        elif "integer string conversion" in str(exc):
            reason = "a number has more than 4,300 digits"
        else:
            reason = str(exc)
        raise MalformedBody(f"request body is not valid JSON: {reason}") from None


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON containers nest deeper than ``limit`` (iterative: no recursion to abuse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(current, dict):
            stack.extend(
                (item, depth + 1) for item in current.values() if isinstance(item, (dict, list))
            )
        elif isinstance(current, list):
            stack.extend((item, depth + 1) for item in current if isinstance(item, (dict, list)))
    return False


def _check_env(env: dict[str, Any], limits: BodyLimits) -> None:
    if len(env) > limits.max_env_vars:
        raise MalformedBody(
            f"env_variables has {len(env)} entries; the limit is {limits.max_env_vars} "
            "(--max-env-vars)"
        )


def _opening_brackets(raw: bytes) -> int:
    """An upper bound of any nesting depth in ``raw`` (brackets in strings count too)."""
    return raw.count(b"{") + raw.count(b"[")


def _check_depth(config: dict[str, Any], brackets: int, limits: BodyLimits) -> None:
    # The nesting walk runs only when the body holds more brackets than the limit:
    # the deepest nesting cannot exceed the number of opening brackets.
    limit = limits.max_json_depth
    if brackets > limit and _nesting_exceeds(config, limit):
        raise MalformedBody(f"current_config nests deeper than {limit} levels (--max-json-depth)")


def _parse_identity_only(raw: bytes, brackets: int, limits: BodyLimits) -> RequestBody | None:
    """The env and lmcache_instance_id, the rest checked but not built; None: full parse."""
    # More opening brackets than the depth limit: the full parse measures the nesting.
    if brackets > limits.max_json_depth:
        return None
    try:
        body = _IDENTIFIED_BODY.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None  # the full parse refuses it in its own words, or accepts it
    env = body.env_variables or {}
    _check_env(env, limits)
    identity = body.current_config
    text = identity.lmcache_instance_id if identity is not None else None
    try:
        instance_id = _parse_value(bytes(text)) if text else None
    except (ValueError, RecursionError):  # e.g. 5,000 digits: refused by the full parse
        return None
    return RequestBody(env, None, instance_id)


def parse_body(raw: bytes, limits: BodyLimits, *, need_config: bool = True) -> RequestBody:
    """The checked body; empty when there is none. Raises MalformedBody (400).

    Without ``need_config`` (the app's answer does not read the request), the
    common body is checked whole but current_config is not built.
    """
    # Non-ASCII bodies take the full parse: msgspec does not check UTF-8 in text it skips.
    brackets = _opening_brackets(raw)
    if not need_config and raw.isascii():
        fast = _parse_identity_only(raw, brackets, limits)
        if fast is not None:
            return fast
    return parse_body_fully(raw, limits, brackets=brackets)


def parse_body_fully(raw: bytes, limits: BodyLimits, *, brackets: int | None = None) -> RequestBody:
    """The full parse: what the fast path does not take, and the reference it is tested against.

    ``brackets``: the body's opening brackets, when the caller has counted them.
    """
    if not raw.strip():
        return RequestBody({}, {})
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = _parse_with_stdlib(raw)
    if not isinstance(body, dict):
        raise MalformedBody(
            f"request body must be a JSON object with current_config and env_variables, "
            f"got a JSON {type(body).__name__}"
        )
    env = body.get("env_variables")
    config = body.get("current_config")
    env = {} if env is None else env
    config = {} if config is None else config
    if not isinstance(env, dict):
        raise MalformedBody("env_variables must be a JSON object")
    if not isinstance(config, dict):
        raise MalformedBody("current_config must be a JSON object")
    _check_env(env, limits)
    if not _STR_ONLY.issuperset(map(type, env.values())):
        raise MalformedBody("env_variables values must be strings")
    _check_depth(config, _opening_brackets(raw) if brackets is None else brackets, limits)
    return RequestBody(env, config)
