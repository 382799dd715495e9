"""Names in a config repository: which files are config, what an app id is, where the root is.

Layout, below the repository root or ``--path``::

    global.yaml           optional, applies to every app
    apps/<app_id>.yaml    one file per app; the file name is the app id
    <any>/<name>.yaml     fragments, applied where a file includes them

Every rule about these names is written here once: the server's loader, the
tree readers, the HTTP parameters, the dashboard and the authoring commands
all ask this module.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import PurePosixPath

from ..base.errors import InvalidAppId

GLOBAL_FILE = "global.yaml"
# The files a source hands over at the config root: global.yml only to be told its name.
ROOT_FILES = (GLOBAL_FILE, "global.yml")
APPS_DIR = "apps"
APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
APP_ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
SYMLINK_REFUSED = "symbolic links are not followed in a config repository"


def is_app_id(text: str) -> bool:
    return APP_ID_RE.match(text) is not None


def check_app_id(text: str, what: str = "app id") -> str:
    """``text`` when it is an app id; InvalidAppId (400) naming ``what`` otherwise."""
    if is_app_id(text):
        return text
    shown = text[:64] + ("..." if len(text) > 64 else "")
    raise InvalidAppId(f"invalid {what} {shown!r}: app ids are {APP_ID_RULE}")


def is_config_path(relative: str) -> bool:
    """Whether a path (relative to the config root) is part of the config set."""
    return relative in ROOT_FILES or relative.startswith(APPS_DIR + "/")


def is_yaml_name(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def app_file_name(relative: str) -> tuple[str | None, str | None]:
    """(app id, None) for a good app file; (None, why) for a bad one; (None, None) to skip."""
    if relative == "global.yml":
        return None, "rename to global.yaml"
    if not relative.startswith(APPS_DIR + "/"):
        return None, None
    name = relative[len(APPS_DIR) + 1 :]
    app_id, dot, extension = name.rpartition(".")
    if "/" in name:
        return None, "apps/ holds files only: apps/<app_id>.yaml (no subdirectories)"
    if not dot or extension not in {"yaml", "yml"}:
        if not is_yaml_name(name) and name.startswith((".", "README")):
            return None, None  # README.md, .gitkeep and the like are fine beside app files
        return None, f"app files are named apps/<app_id>.yaml; '{name}' is not"
    if extension == "yml":
        return None, f"rename to apps/{app_id}.yaml (the extension must be .yaml)"
    if not is_app_id(app_id):
        return None, f"bad app id '{app_id}' in the file name: app ids are {APP_ID_RULE}"
    return app_id, None


def include_path_problem(written: str) -> str | None:
    """Why an include path is not allowed, or None; paths are relative to the config root."""
    if written.startswith("/") or posixpath.isabs(written):
        return "absolute paths are not allowed; write the path relative to the config root"
    path = posixpath.normpath(written)
    if path == ".." or path.startswith("../"):
        return "the path leaves the config root"
    if not path.endswith(".yaml"):
        return "fragment files end in .yaml"
    if path == GLOBAL_FILE or path.startswith(APPS_DIR + "/"):
        return "only fragment files can be included (not global.yaml or apps/ files)"
    return None


def subdir_problem(subdir: str) -> str | None:
    """Why ``--path`` cannot be the config root's subdirectory, or None."""
    if subdir.startswith("/") or ".." in PurePosixPath(subdir).parts:
        return "--path must be a relative subdirectory inside the repository"
    return None


def display_prefix(subdir: str) -> str:
    """``subdir/`` as issues show it, or empty for the repository root."""
    stripped = subdir.strip("/")
    return f"{stripped}/" if stripped else ""
