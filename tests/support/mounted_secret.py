"""A directory updated the way the kubelet updates a mounted Secret or ConfigMap.

Its keys are symlinks ``name -> ..data/name``; ``..data`` is a symlink to a
timestamped directory. An update writes a new timestamped directory, points a
new ``..data_tmp`` symlink at it, renames that over ``..data`` (the one atomic
step), adds the links of new keys, drops those of removed keys and deletes
the old directory (as ``AtomicWriter`` in kubernetes/pkg/volume/util does).
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

_versions = itertools.count(1)


class MountedSecret:
    def __init__(self, path: Path, files: dict[str, str]) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.update(files)

    def file(self, key: str) -> str:
        """The path a setting names: the key's symlink, which never changes."""
        return str(self.path / key)

    def update(self, files: dict[str, str]) -> None:
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        version = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{next(_versions)}"
        (self.path / version).mkdir()
        for key, content in files.items():
            (self.path / version / key).write_text(content)
        temporary = self.path / "..data_tmp"
        temporary.symlink_to(version)
        temporary.rename(data)  # the swap: readers see the old version or the new one
        for key in files:
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")
        for entry in self.path.iterdir():
            if not entry.name.startswith(".") and entry.name not in files:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.path / old)
