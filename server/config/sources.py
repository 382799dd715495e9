"""Where a config set's files come from: the source protocol, memory and a directory on disk.

The loader reads every config set through a :class:`ConfigSource`, which
selects the same files whatever holds them: ``global.yaml`` (and a misnamed
``global.yml``) at the config root, everything below ``apps/``, and the
fragments those files include. The server reads commits of its mirror
(``git.tree_reader``); ``validate``, ``render`` and ``diff`` read commits of
the author's clone (``git.commits``) or its working tree
(:class:`DirectorySource`), so a file the server would reject is rejected
there with the same message.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ..base.errors import SourceProblem
from .names import APPS_DIR, ROOT_FILES, SYMLINK_REFUSED, is_config_path, is_yaml_name


class ConfigSource(Protocol):
    """Where one config set's files are read from: a commit tree, a directory, or memory."""

    def selected_paths(self) -> list[str]:
        """Paths (relative to the config root) of global.yaml/global.yml and all below apps/."""
        ...

    def yaml_paths(self) -> list[str]:
        """Every *.yaml/*.yml file below the config root, read or not (never read here):
        what ``config.hints`` warns about when nothing reads it. May raise SourceProblem."""
        ...

    def size(self, relative: str) -> int:
        """The size of one file in bytes, found without reading it; raises SourceProblem."""
        ...

    def read(self, relative: str) -> bytes:
        """The bytes of one file; raises SourceProblem when it cannot be read."""
        ...


class MemorySource:
    """Files held in a mapping of relative path to bytes (tests, and tools that have them)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    def selected_paths(self) -> list[str]:
        return sorted(path for path in self._files if is_config_path(path))

    def yaml_paths(self) -> list[str]:
        return sorted(path for path in self._files if is_yaml_name(path))

    def size(self, relative: str) -> int:
        return len(self.read(relative))

    def read(self, relative: str) -> bytes:
        if relative not in self._files:
            raise SourceProblem("no such file")
        return self._files[relative]


class DirectorySource:
    """The files below a directory on disk, as an editor sees them (committed or not)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def selected_paths(self) -> list[str]:
        if not self._root.is_dir():
            raise SourceProblem(f"'{self._root}' is not a directory")
        paths = [name for name in ROOT_FILES if (self._root / name).is_file()]
        paths += [name for name in ROOT_FILES if (self._root / name).is_symlink()]
        apps = self._root / APPS_DIR
        if apps.is_dir() and not apps.is_symlink():
            for folder, dirs, files in os.walk(apps):
                relative = Path(folder).relative_to(self._root).as_posix()
                links = [d for d in dirs if (Path(folder) / d).is_symlink()]
                dirs[:] = sorted(d for d in dirs if d not in links and d != ".git")
                paths += [posixpath.join(relative, name) for name in (*files, *links)]
        return sorted(set(paths))

    def yaml_paths(self) -> list[str]:
        found: list[str] = []
        for folder, dirs, files in os.walk(self._root):
            # Hidden folders (.git, .github) hold no config; links are never followed.
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and not (Path(folder) / d).is_symlink()
            )
            relative = Path(folder).relative_to(self._root).as_posix()
            found += [
                name if relative == "." else posixpath.join(relative, name)
                for name in files
                if is_yaml_name(name)
            ]
        return sorted(found)

    def _file(self, relative: str) -> Path:
        target = self._root / relative
        parts = Path(relative).parts
        for depth in range(1, len(parts) + 1):
            if (self._root.joinpath(*parts[:depth])).is_symlink():
                raise SourceProblem(SYMLINK_REFUSED)
        if target.is_dir():
            raise SourceProblem("is a directory, not a file")
        return target

    def size(self, relative: str) -> int:
        try:
            return self._file(relative).stat().st_size
        except FileNotFoundError:
            raise SourceProblem("no such file") from None
        except OSError as exc:
            raise SourceProblem(f"cannot read: {exc.strerror}") from None

    def read(self, relative: str) -> bytes:
        target = self._file(relative)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise SourceProblem("no such file") from None
        except OSError as exc:
            raise SourceProblem(f"cannot read: {exc.strerror}") from None
