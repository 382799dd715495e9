"""``NAME=VALUE`` lines, as people type a worker's environment and config (render, dashboard)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from .errors import AssignmentProblem


def parse_assignments(lines: Iterable[str], *, typed: bool) -> dict[str, Any]:
    """One entry per ``NAME=VALUE`` line; blank lines are skipped, names and lines stripped.

    With ``typed`` a value is read as YAML (``true``, ``512``), as a config
    field would hold it; text that is not YAML stays text, and an empty value is ``""``.
    """
    values: dict[str, Any] = {}
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        name, separator, text = line.partition("=")
        if not separator or not name.strip():
            raise AssignmentProblem(line)
        value: Any = text
        if typed:
            try:
                value = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError:
                value = text
        values[name.strip()] = value
    return values
