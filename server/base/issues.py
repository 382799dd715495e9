"""A problem found in a config repository, located by file, line and column.

Paths and messages come from a commit: a file name may hold a newline, an
ANSI escape or bytes that are not UTF-8. ``str()`` of an issue escapes every
one of them, so that an issue can never forge a log line, colour a terminal
or fail to encode on a page.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

# C0 and C1 control characters (newline and tab included), and lone surrogates (the
# surrogateescape of bytes that are not UTF-8).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_QUOTED_CHARS = 80


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code >= 0xD800:  # any other lone surrogate
        return f"\\u{code:04x}"
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(match.group(), f"\\x{code:02x}")


def printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes written as escapes."""
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(_escape, text)


def quoted(value: Any) -> str:
    """A value as an error message quotes it: short, printable, and never a number that
    Python refuses to print (integers of more than 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    text = printable(repr(value))
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."


@dataclasses.dataclass(frozen=True, kw_only=True, order=True)
class ConfigIssue:
    """One validation error; ``str()`` gives the editor/CI form ``path:line:col: error: msg``."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return printable(f"{self.path}:{self.line}:{self.column}: error: {self.message}")

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True, order=True)
class ConfigWarning:
    """Something in a config repository that is served but probably not meant: a YAML file
    nothing reads, say. It never stops a commit; ``str()`` is ``path: warning: msg``, escaped
    like an issue (the path comes from the commit)."""

    path: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.path}: warning: {self.message}")

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)
