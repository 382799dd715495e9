"""Values in range: the bounds LMCache's fields can take, beyond their types.

The LMCache client converts a served value and uses it without checking it
(its own ``validate()`` is not run on remote values), so a ``chunk_size`` of 0,
a port of 70000 or a NUL in a path reaches the engine as written. The bounds
are data, beside the field lists: ``data/lmcache-ranges.tsv``, one row per
field or field pattern (``*_url``), with the versions it holds for and the
reason shown in the error. A row naming a field exactly wins, column by
column, over rows that match it by pattern; among patterns the first row wins.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from ..base.errors import ValueProblem
from ..base.issues import quoted

RANGES_FILE = "data/lmcache-ranges.tsv"
RANGES_COLUMNS = ("field", "versions", "min", "max", "non_empty", "max_length", "plain_text")

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (which split a
# line in many log readers and editors): none belongs in a URL, host or path. Written so
# that the pattern means the same in ECMAScript (the editors' JSON Schema, json_schema).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bound:
    """One numeric bound and why LMCache needs it."""

    value: float
    reason: str
    exclusive: bool = False  # written ">0" in the file: the value itself is out

    def as_minimum(self) -> str:
        """The bound as errors and the editors' hover text say it: "at least 1"."""
        return f"{'more than' if self.exclusive else 'at least'} {_number(self.value)}"

    def as_maximum(self) -> str:
        return f"{'less than' if self.exclusive else 'at most'} {_number(self.value)}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldLimits:
    """What one field's values must be, besides their type; empty: anything of the type."""

    minimum: Bound | None = None
    maximum: Bound | None = None
    non_empty: str | None = None  # the reason, when an empty list or string is refused
    max_length: Bound | None = None  # bytes of UTF-8; a mapping's bytes as compact JSON
    plain_text: str | None = None  # the reason, when control characters are refused

    def check(self, what: str, value: Any) -> None:
        """Raise ValueProblem when a value (already of the field's type) is out of range."""
        if value is None:
            return  # null is the field's "not set"; the type check decides whether it may be
        if isinstance(value, list):
            if not value and self.non_empty is not None:
                raise ValueProblem(
                    f"{what} must not be an empty list ({self.non_empty}): got []; "
                    "leave the key out (or null) for none"
                )
            for index, item in enumerate(value):
                self._check_one(f"item {index} of {what}", item)
            return
        if isinstance(value, dict):
            if self.max_length is not None:
                size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
                if size > self.max_length.value:
                    raise ValueProblem(
                        f"{what} must be at most {self.max_length.value:.0f} bytes as JSON "
                        f"({self.max_length.reason}): got {size} bytes"
                    )
            return
        if isinstance(value, str) and not value and self.non_empty is not None:
            raise ValueProblem(f"{what} must not be empty ({self.non_empty}): got ''")
        self._check_one(what, value)

    def _check_one(self, what: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            low, high = self.minimum, self.maximum
            if low is not None and (value <= low.value if low.exclusive else value < low.value):
                raise ValueProblem(
                    f"{what} must be {low.as_minimum()} ({low.reason}): got {_number(value)}"
                )
            if high is not None and (value >= high.value if high.exclusive else value > high.value):
                raise ValueProblem(
                    f"{what} must be {high.as_maximum()} ({high.reason}): got {_number(value)}"
                )
            return
        if isinstance(value, str):
            if self.max_length is not None:
                size = len(value.encode("utf-8", "surrogatepass"))
                if size > self.max_length.value:
                    raise ValueProblem(
                        f"{what} must be at most {self.max_length.value:.0f} bytes "
                        f"({self.max_length.reason}): got {size} bytes"
                    )
            if self.plain_text is not None and (found := CONTROL_CHARACTERS.search(value)):
                raise ValueProblem(
                    f"{what} must not contain control characters ({self.plain_text}): got "
                    f"U+{ord(found.group()):04X} at character {found.start() + 1}"
                )


def _number(value: float) -> str:
    """A number as a config author writes it: 0, not 0.0 (a float field's 0 is 0.0 here)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return quoted(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RangeRow:
    """One row of the ranges file: the bounds of the fields it matches, in some versions."""

    field: str  # a name, or an fnmatch pattern such as *_url
    first: tuple[int, ...] | None  # versions from (None: any)
    last: tuple[int, ...] | None  # versions up to, inclusive (None: any)
    minimum: Bound | None
    maximum: Bound | None
    non_empty: str | None
    max_length: Bound | None
    plain_text: str | None

    @property
    def is_pattern(self) -> bool:
        return any(char in self.field for char in "*?[")

    def applies(self, name: str, version: str | None) -> bool:
        if not fnmatch.fnmatchcase(name, self.field):
            return False
        if version is None:
            return self.first is None and self.last is None
        key = version_key(version)
        return (self.first is None or key >= self.first) and (self.last is None or key <= self.last)


def _bound(text: str, reason: str, where: str) -> Bound | None:
    text = text.strip()
    if not text:
        return None
    exclusive = text.startswith(">") or text.startswith("<")
    try:
        value = float(text.lstrip("<>"))
    except ValueError:
        raise ValueError(f"{where}: not a number: {text!r}") from None
    return Bound(value=value, reason=reason, exclusive=exclusive)


def _versions(text: str, where: str) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    text = text.strip()
    if text in {"", "*"}:
        return None, None
    if ".." not in text:
        return version_key(text), version_key(text)
    first, _, last = text.partition("..")
    if not (first or last):
        raise ValueError(f"{where}: versions must be *, X, X.., ..Y or X..Y")
    return (version_key(first) if first else None), (version_key(last) if last else None)


def parse_ranges(text: str, source: str = RANGES_FILE) -> tuple[RangeRow, ...]:
    """The rows of a ranges file; ValueError for a malformed one (a bug in the bundle)."""
    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    if tuple(header[: len(RANGES_COLUMNS)]) != RANGES_COLUMNS or header[-1] != "reason":
        raise ValueError(f"{source}: header must be {', '.join(RANGES_COLUMNS)}, reason")
    rows: list[RangeRow] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"{source}:{number}: {len(cells)} columns, not {len(header)}")
        field, versions, low, high, non_empty, length, plain, reason = cells
        where = f"{source}:{number}"
        first, last = _versions(versions, where)
        rows.append(
            RangeRow(
                field=field.strip(),
                first=first,
                last=last,
                minimum=_bound(low, reason, where),
                maximum=_bound(high, reason, where),
                non_empty=reason if non_empty.strip() == "yes" else None,
                max_length=_bound(length, reason, where),
                plain_text=reason if plain.strip() == "yes" else None,
            )
        )
    return tuple(rows)


@cache
def bundled_ranges() -> tuple[RangeRow, ...]:
    text = resources.files("server.config").joinpath(RANGES_FILE).read_text("utf-8")
    return parse_ranges(text)


_COLUMNS = ("minimum", "maximum", "non_empty", "max_length", "plain_text")


def limits_for(
    name: str, version: str | None, rows: Sequence[RangeRow] | None = None
) -> FieldLimits:
    """The bounds of field ``name`` in LMCache ``version`` (None: rows for every version)."""
    matching = [
        row for row in (bundled_ranges() if rows is None else rows) if row.applies(name, version)
    ]
    # Exact rows first, so that they win column by column; then patterns in file order.
    ordered = [row for row in matching if not row.is_pattern] + [
        row for row in matching if row.is_pattern
    ]
    chosen: dict[str, Any] = {}
    for row in ordered:
        for column in _COLUMNS:
            value = getattr(row, column)
            if value is not None and column not in chosen:
                chosen[column] = value
    return FieldLimits(**chosen)
