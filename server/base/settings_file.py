"""Server-side YAML files named by a setting (auth, key policy, secret scopes): read or refuse.

Each is read at startup; whatever is wrong with it is a SettingsError (exit 2)
naming the flag and the file, so an operator sees which file to fix and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import SettingsError


def read_yaml_file(path: str, what: str) -> Any:
    """The file's YAML document (None when empty); ``what`` names it in errors."""
    try:
        return yaml.safe_load(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise SettingsError(f"{what} {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{what} {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {path}: not valid YAML: {exc}") from None
