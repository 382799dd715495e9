"""Parsed config files kept from one build to the next, so a commit re-parses only what changed.

Parsing and validating a file depends only on its path, its bytes and the
schema, so a file whose bytes are unchanged parses to the same immutable
``ConfigFile`` (the memo forgets everything if the schema object changes).
Only files that parsed without a single issue are remembered, and only the
files of the latest build are kept, so the memo never holds more than one
commit's worth of files.

Used by one thread only (the sync thread).
"""

from __future__ import annotations

from .model import ConfigFile
from .schema import Schema


class ParseMemo:
    def __init__(self) -> None:
        self._previous: dict[tuple[str, bytes], ConfigFile] = {}
        self._current: dict[tuple[str, bytes], ConfigFile] = {}
        self._schema: Schema | None = None

    def for_schema(self, schema: Schema) -> ParseMemo:
        """This memo, emptied first if its files were parsed against another schema."""
        if schema is not self._schema:
            self._previous, self._current, self._schema = {}, {}, schema
        return self

    def get(self, display_path: str, data: bytes) -> ConfigFile | None:
        key = (display_path, data)
        found = self._current.get(key) or self._previous.get(key)
        if found is not None:
            self._current[key] = found
        return found

    def put(self, display_path: str, data: bytes, parsed: ConfigFile) -> None:
        self._current[(display_path, data)] = parsed

    def finish_build(self) -> None:
        """Forget every file the build just finished did not use."""
        self._previous, self._current = self._current, {}
