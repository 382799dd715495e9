"""A problem found in a config repository, located by file, line and column."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True, order=True)
class ConfigIssue:
    """One validation error; ``str()`` gives the editor/CI form ``path:line:col: error: msg``."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: error: {self.message}"

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)
