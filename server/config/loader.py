"""A whole config set from a source: the one path every commit takes before it is served.

The server and the authoring commands load through the same
:func:`load_config_set`, so they agree on every commit. Loading reads within
:class:`RepoLimits` (sizes are checked before a byte is read), parses each
file (``parser``), follows ``include`` to the fragments (reporting cycles and
misses) and returns the config set only when there is not a single issue.
With a :class:`~server.config.parse_memo.ParseMemo`, files an earlier build
parsed cleanly are reused. The LMCache versions global.yaml declares
(``versions``) are read first: with the schema's own, they choose the schema
every file is checked against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from ..base.errors import SourceProblem
from ..base.issues import ConfigIssue
from .hints import no_config_issue, unread_files
from .model import ConfigFile, ConfigSet
from .names import GLOBAL_FILE, app_file_name
from .parse_memo import ParseMemo
from .parser import parse_file
from .schema import Schema, SchemaChoice
from .sources import ConfigSource, DirectorySource, MemorySource
from .versions import declared_versions

# Fragments may include fragments; a chain longer than this is refused where it goes too
# deep (every walk over includes stays far inside Python's recursion limit).
MAX_INCLUDE_DEPTH = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepoLimits:
    """Bounds on what one commit may make the server parse (hostile or runaway repos)."""

    max_file_bytes: int = 1024 * 1024
    max_files: int = 50_000
    max_total_bytes: int = 256 * 1024 * 1024
    # Each request is matched against every rule of its app: this bounds its CPU cost.
    max_rules_per_app: int = 256


class _LimitedReader:
    """Reads through a source within RepoLimits: sizes are checked before a byte is read."""

    def __init__(
        self,
        source: ConfigSource,
        limits: RepoLimits,
        display_prefix: str,
        between_files: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.limits = limits
        self.prefix = display_prefix
        self.total = 0
        self._between_files = between_files

    def issue(self, path: str, message: str) -> ConfigIssue:
        return ConfigIssue(path=self.prefix + path, line=1, column=1, message=message)

    def refusals(self, selected: list[str]) -> list[ConfigIssue]:
        """Issues for too many files, too many bytes, or files too big; none to go ahead."""
        limits = self.limits
        if len(selected) > limits.max_files:
            return [
                self.issue(".", f"{len(selected)} config files; the limit is {limits.max_files}")
            ]
        sizes: dict[str, int] = {}
        for relative in selected:
            try:
                sizes[relative] = self.source.size(relative)
            except SourceProblem:
                continue  # reported when the file is read
        total = sum(sizes.values())
        if total > limits.max_total_bytes:
            return [
                self.issue(
                    ".", f"config files total {total} bytes; the limit is {limits.max_total_bytes}"
                )
            ]
        return [
            self.issue(path, f"file is {size} bytes; the limit is {limits.max_file_bytes}")
            for path, size in sorted(sizes.items())
            if size > limits.max_file_bytes
        ]

    def read(self, relative: str) -> bytes:
        if self._between_files is not None:
            self._between_files()
        size = self.source.size(relative)
        if size > self.limits.max_file_bytes:
            raise SourceProblem(f"file is {size} bytes; the limit is {self.limits.max_file_bytes}")
        if self.total + size > self.limits.max_total_bytes:
            raise SourceProblem(
                f"config files total more than {self.limits.max_total_bytes} bytes with this one"
            )
        self.total += size
        return self.source.read(relative)


def load_config_set(
    files: ConfigSource | Mapping[str, bytes],
    schema: Schema | SchemaChoice,
    *,
    display_prefix: str = "",
    limits: RepoLimits = RepoLimits(),
    memo: ParseMemo | None = None,
    between_files: Callable[[], None] | None = None,
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    """Parse and validate one config set: the one path every commit takes before serving.

    ``files`` is a ConfigSource, or a mapping of paths relative to the config root
    to their bytes. Issues name paths with ``display_prefix`` in front so they
    match the repository. Returns the config set, or None with every issue found.
    With a ``memo``, files an earlier build parsed cleanly are reused, not re-parsed.
    ``between_files`` is called before each file (a view steps aside for a build there).
    The config set is checked against every LMCache version that ``schema`` declares
    and that global.yaml's ``lmcache_versions`` lists.
    """
    source: ConfigSource = MemorySource(files) if isinstance(files, Mapping) else files
    reader = _LimitedReader(source, limits, display_prefix, between_files)
    issues: list[ConfigIssue] = []
    global_file: ConfigFile | None = None
    apps: dict[str, ConfigFile] = {}

    def parse(relative: str) -> ConfigFile | None:
        try:
            data = reader.read(relative)
        except SourceProblem as problem:
            issues.append(
                ConfigIssue(
                    path=display_prefix + relative, line=1, column=1, message=problem.message
                )
            )
            return None
        return parse_bytes(relative, data)

    def parse_bytes(relative: str, data: bytes) -> ConfigFile | None:
        display = display_prefix + relative
        if memo is not None and (known := memo.get(display, data)) is not None:
            return known
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(ConfigIssue(path=display, line=1, column=1, message=f"not UTF-8: {exc}"))
            return None
        parsed, file_issues = parse_file(
            display, text, checked, global_file=relative == GLOBAL_FILE
        )
        issues.extend(file_issues)
        if memo is not None and parsed is not None and not file_issues:
            memo.put(display, data, parsed)
        return parsed

    try:
        selected = source.selected_paths()
    except SourceProblem as problem:
        root = display_prefix.rstrip("/") or "."
        return None, [ConfigIssue(path=root, line=1, column=1, message=problem.message)]
    refusals = reader.refusals(selected)
    if refusals:
        return None, refusals

    # global.yaml first: its lmcache_versions choose the schema of every file.
    # ``checked``: the schema every file is checked with, known once global.yaml is read.
    global_data, checked = _global_first(reader, selected, schema, issues)
    # A file parsed under other versions is parsed again.
    memo = memo.for_schema(checked) if memo is not None else None

    for relative in selected:
        display = display_prefix + relative
        if relative == GLOBAL_FILE:
            global_file = None if global_data is None else parse_bytes(relative, global_data)
            continue
        app_id, message = app_file_name(relative)
        if app_id is not None:
            parsed = parse(relative)
            if parsed is not None:
                apps[app_id] = parsed
        elif message is not None:
            issues.append(ConfigIssue(path=display, line=1, column=1, message=message))

    roots = [f for f in (global_file, *apps.values()) if f is not None]
    fragments = _load_fragments(roots, reader.read, parse_bytes, issues)
    if global_file is None and not apps and not issues:
        # Neither global.yaml nor an app file: the wrong folder, never a config to serve.
        issues.append(no_config_issue(_yaml_paths(source), display_prefix))
    if issues:
        return None, sorted(set(issues))
    config_set = ConfigSet(
        global_file=global_file, apps=apps, fragments=fragments, lmcache_versions=checked.declared
    )
    unread = unread_files(_yaml_paths(source), config_set, display_prefix)
    return _within_rule_limit(
        dataclasses.replace(config_set, warnings=tuple(unread)), limits.max_rules_per_app
    )


def _within_rule_limit(
    config_set: ConfigSet, limit: int
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    # Checked on the set that is returned: the layers() memo this fills serves the
    # guardrails and the snapshot too (one expansion per app and build, not two).
    issues = _too_many_rules(config_set, limit)
    return (None, issues) if issues else (config_set, [])


def _global_first(
    reader: _LimitedReader,
    selected: list[str],
    schema: Schema | SchemaChoice,
    issues: list[ConfigIssue],
) -> tuple[bytes | None, Schema]:
    """global.yaml's bytes (None: there is none, or an issue says why it cannot be read),
    and ``schema`` with the versions it declares (their issues go to ``issues``)."""
    if GLOBAL_FILE not in selected:
        return None, schema.with_versions(())
    try:
        data = reader.read(GLOBAL_FILE)
    except SourceProblem as problem:
        issues.append(reader.issue(GLOBAL_FILE, problem.message))
        return None, schema.with_versions(())
    versions, version_issues = declared_versions(reader.prefix + GLOBAL_FILE, data)
    issues.extend(version_issues)
    return data, schema.with_versions(versions)


def _yaml_paths(source: ConfigSource) -> list[str]:
    try:
        return source.yaml_paths()
    except SourceProblem:
        return []  # only hints are lost: the files that matter were read without trouble


def _too_many_rules(config_set: ConfigSet, limit: int) -> list[ConfigIssue]:
    """An issue for each app (or the global layer) with more rules than ``limit``."""
    issues: list[ConfigIssue] = []
    global_rules = sum(len(config_file.rules) for config_file in config_set.layers(None))
    # Too many in the global layer alone: say so once, not once per app.
    targets: list[str | None] = [None] if global_rules > limit else [None, *config_set.apps]
    for app_id in targets:
        layers = config_set.layers(app_id)
        count = sum(len(config_file.rules) for config_file in layers)
        if count > limit and layers:
            where = layers[-1]  # the app's own file, or global.yaml
            whose = f"app '{app_id}'" if app_id is not None else "the global layer"
            sources = ", ".join(config_file.path for config_file in layers)
            issues.append(
                ConfigIssue(
                    path=where.path,
                    line=1,
                    column=1,
                    message=(
                        f"{count} rules apply to {whose} (from {sources}); "
                        f"the limit is {limit} (--max-rules-per-app): each request is matched "
                        "against every one"
                    ),
                )
            )
    return issues


def _load_fragments(
    roots: list[ConfigFile],
    read: Callable[[str], bytes],
    parse: Callable[[str, bytes], ConfigFile | None],
    issues: list[ConfigIssue],
) -> dict[str, ConfigFile]:
    """Read every fragment reachable by ``include`` from the roots; report cycles and misses.

    A depth-first walk: a fragment met again while it is still being expanded
    closes a cycle, reported at the include that closes it.
    """
    walk = _FragmentWalk(read=read, parse=parse, issues=issues)
    for root in roots:
        walk.visit(root)
    return walk.fragments


class _FragmentWalk:
    """The state of one walk (an object, not a recursive closure: a closure that calls
    itself is a reference cycle, left to the cycle collector to free with all it holds)."""

    def __init__(
        self,
        *,
        read: Callable[[str], bytes],
        parse: Callable[[str, bytes], ConfigFile | None],
        issues: list[ConfigIssue],
    ) -> None:
        self.read = read
        self.parse = parse
        self.issues = issues
        self.fragments: dict[str, ConfigFile] = {}
        self.unreadable: set[str] = set()
        self.finished: set[str] = set()
        self.stack: list[str] = []

    def visit(self, config_file: ConfigFile) -> None:
        stack, issues = self.stack, self.issues
        for include in config_file.includes:
            if include.path in stack:
                cycle = [*stack[stack.index(include.path) :], include.path]
                issues.append(include.issue(f"include cycle: {' -> '.join(cycle)}"))
                continue
            if include.path in self.finished or include.path in self.unreadable:
                continue
            if len(stack) >= MAX_INCLUDE_DEPTH:
                issues.append(
                    include.issue(
                        f"cannot include '{include.path}': the include chain is more than "
                        f"{MAX_INCLUDE_DEPTH} fragments deep ({stack[0]} -> ... -> "
                        f"{stack[-1]}); include the fragments from fewer levels"
                    )
                )
                self.unreadable.add(include.path)
                continue
            if include.path not in self.fragments:
                try:
                    data = self.read(include.path)
                except SourceProblem as problem:
                    issues.append(
                        include.issue(f"cannot include '{include.path}': {problem.message}")
                    )
                    self.unreadable.add(include.path)
                    continue
                parsed = self.parse(include.path, data)
                if parsed is None:
                    self.unreadable.add(include.path)
                    continue
                self.fragments[include.path] = parsed
            stack.append(include.path)
            self.visit(self.fragments[include.path])
            stack.pop()
            self.finished.add(include.path)


def load_directory(
    root: Path, schema: Schema | SchemaChoice, *, prefix: str = ""
) -> tuple[ConfigSet | None, list[ConfigIssue]]:
    """Load and validate the config set in a directory (a working tree); issues start ``prefix``."""
    return load_config_set(DirectorySource(root), schema, display_prefix=prefix)
