"""What a config set would otherwise get wrong silently: files nothing reads, no config at
all, and the app file a worker probably meant.

The loader calls :func:`unread_files` for a valid config set (the warnings are kept
on it, and so on the snapshot) and :func:`no_config_issue` when the tree holds
neither ``global.yaml`` nor an app file; the snapshot, ``render`` and the dashboard
ask :func:`nearest_app` for an app id the commit does not know.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable, Sequence

from ..base.issues import ConfigIssue, ConfigWarning
from .model import ConfigSet
from .names import APPS_DIR, GLOBAL_FILE, app_file_name

# A repository root holding other YAML (CI, charts) could yield thousands: list this many.
MAX_WARNINGS = 100
# difflib's ratio above which a name counts as a misspelling of another.
_CLOSE = 0.8


def _hidden(path: str) -> bool:
    # .github/, .gitlab-ci.yml, .pre-commit-config.yaml: tools' files, never config here.
    return any(part.startswith(".") for part in path.split("/"))


def _why_unread(path: str) -> str:
    top, _, rest = path.partition("/")
    name = posixpath.basename(path)
    if rest and top != APPS_DIR and _close(top.lower(), APPS_DIR):
        return f"not read: '{top}/' is not '{APPS_DIR}/' (app files are {APPS_DIR}/<app_id>.yaml)"
    if name == GLOBAL_FILE or (posixpath.basename(posixpath.dirname(path)) == APPS_DIR):
        return (
            "not read: global.yaml and apps/ are read at the config root only; "
            "is the config root (PATH or --path) right?"
        )
    if not rest and _close(name.lower(), GLOBAL_FILE):
        return f"not read: only '{GLOBAL_FILE}' is read at the config root"
    return "not read: no file includes it (a fragment is read only where a file includes it)"


def _close(text: str, target: str) -> bool:
    return difflib.SequenceMatcher(None, text, target).ratio() >= _CLOSE


def unread_files(
    yaml_paths: Iterable[str], config_set: ConfigSet, prefix: str
) -> list[ConfigWarning]:
    """A warning for each YAML file below the root that the config set does not read.

    Files below ``apps/`` and ``global.yml`` are not here: the loader refuses the
    bad ones as errors. Hidden files and folders are left out.
    """
    read = {f"{APPS_DIR}/{app_id}.yaml" for app_id in config_set.apps} | set(config_set.fragments)
    if config_set.global_file is not None:
        read.add(GLOBAL_FILE)
    unread = [
        path
        for path in sorted(yaml_paths)
        if path not in read
        and not _hidden(path)
        and not path.startswith(APPS_DIR + "/")
        and app_file_name(path) == (None, None)  # global.yml: an error already
    ]
    warnings = [
        ConfigWarning(path=prefix + path, message=_why_unread(path))
        for path in unread[:MAX_WARNINGS]
    ]
    if len(unread) > MAX_WARNINGS:
        warnings.append(
            ConfigWarning(
                path=prefix.rstrip("/") or ".",
                message=f"{len(unread) - MAX_WARNINGS} more YAML files are not read (not listed)",
            )
        )
    return warnings


def _config_folders(yaml_paths: Iterable[str]) -> list[str]:
    """Folders below the root that look like a config root (global.yaml or apps/*.yaml)."""
    found: set[str] = set()
    for path in yaml_paths:
        if _hidden(path):
            continue
        folder, name = posixpath.split(path)
        if name == GLOBAL_FILE and folder:
            found.add(folder)
        parent, last = posixpath.split(folder)
        if last == APPS_DIR and parent and path.endswith(".yaml"):
            found.add(parent)
    # The shallowest first: a config root's own fragments may sit in folders below it.
    return sorted(found, key=lambda folder: (folder.count("/"), folder))


def no_config_issue(yaml_paths: Sequence[str], prefix: str) -> ConfigIssue:
    """The error for a tree with neither global.yaml nor an app file, naming a likely
    subfolder when one holds them."""
    root = prefix.rstrip("/") or "."
    folders = _config_folders(yaml_paths)
    if folders:
        hint = (
            f"the config seems to be in {prefix}{folders[0]}/: pass that folder as PATH or --path"
        )
    else:
        hint = "is the config in a subfolder? pass it as PATH or --path"
    return ConfigIssue(
        path=root,
        line=1,
        column=1,
        message=(
            f"no config found at {root}: expected {GLOBAL_FILE} and/or {APPS_DIR}/*.yaml; {hint}"
        ),
    )


def app_file(app_id: str) -> str:
    return f"{APPS_DIR}/{app_id}.yaml"


def nearest_app(app_id: str, app_ids: Sequence[str]) -> str | None:
    """The known app id closest to ``app_id`` (a misspelling of it), if any is close.

    Only ids of about the same length are compared (a misspelling changes a few
    characters), which keeps this cheap for a commit of thousands of apps.
    """
    slack = max(2, len(app_id) // 4)
    candidates = [known for known in app_ids if abs(len(known) - len(app_id)) <= slack]
    lowered = {known.lower(): known for known in candidates}
    if app_id.lower() in lowered:  # only the case differs
        return lowered[app_id.lower()]
    match = difflib.get_close_matches(app_id, candidates, n=1, cutoff=0.6)
    return match[0] if match else None
