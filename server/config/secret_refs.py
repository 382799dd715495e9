"""``${secret:NAME}`` references inside config values: found at parse time, resolved at build.

The repository only ever holds the reference; the value comes from the
server's secrets (``sync.secrets``) when a snapshot is built, and appears
only in /config answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECRET_REF_RE = re.compile(r"\$\{secret:([^}]*)\}")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SECRET_NAME_RULE = "names are 1-128 characters from A-Z a-z 0-9 _ . -"  # noqa: S105 - a rule


def secret_names(value: Any) -> tuple[str, ...]:
    """Names of the ${secret:...} references anywhere in a (nested) value."""
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found.extend(SECRET_REF_RE.findall(current))
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
    return tuple(dict.fromkeys(found))


def resolve_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    """``value`` with every ${secret:NAME} replaced by its secret (all names must exist)."""
    if isinstance(value, str):
        return SECRET_REF_RE.sub(lambda match: secrets[match.group(1)], value)
    if isinstance(value, list):
        return [resolve_secrets(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: resolve_secrets(item, secrets) for key, item in value.items()}
    return value
