"""Files read again when they change (credentials), and the cell a request reads them from.

A request reads a :class:`Current` once (``.value``) and works with that one
object; a reload replaces the whole value in one reference swap, on the event
loop, so no request ever sees half of an old file and half of a new one.

Change is told by a file's stamp, polled: where the path resolves to, its
inode, size and times. A mounted Kubernetes Secret changes by re-pointing the
``..data`` symlink at a new timestamped directory: the resolved path and the
inode change, though the path named by the setting never does. A stat poll
sees that and every other way a file changes (an editor's rename, a write in
place, a ConfigMap, NFS or FUSE, where inotify is silent), holds no watch that
a swap can orphan, and costs a few system calls a second.

A new file that cannot be loaded keeps the old value in force: said once per
change, at ERROR, and in the status (``error``, ``error_since``). Blocking
(stat, read): :meth:`poll` runs on a thread; what it returns runs on the loop.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .clock import rfc3339
from .errors import ConfigServerError

T = TypeVar("T")

log = logging.getLogger("server.reload")


class Current(Generic[T]):
    """One value, replaced whole: read ``value`` once per use, never keep a field of it."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    @property
    def value(self) -> T:
        return self._value

    def replace(self, value: T) -> None:
        """On the event loop: the next reader gets ``value`` (a single reference store)."""
        self._value = value


@dataclasses.dataclass(frozen=True)
class FileStamp:
    """What changes when a file's content may have: never the content itself."""

    target: str  # the path resolved through every symlink (Kubernetes' ..data swap)
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def file_stamp(path: str) -> FileStamp | None:
    """The file's stamp now; None while it cannot be found or stat'ed."""
    try:
        target = os.path.realpath(path)
        info = os.stat(target)
    except OSError:
        return None
    return FileStamp(
        target=target,
        device=info.st_dev,
        inode=info.st_ino,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        ctime_ns=info.st_ctime_ns,
    )


DirStamp = tuple[tuple[str, FileStamp | None], ...]


def dir_stamp(path: str) -> DirStamp | None:
    """Each entry's stamp, by name; None while the directory cannot be listed.

    Names starting with a dot are skipped: Kubernetes' own (``..data``,
    ``..2026_12_01_...``, ``..data_tmp``), never a secret's (those start with a letter
    or digit). Each key's symlink resolves through ``..data``, so a swap shows in them.
    """
    try:
        names = sorted(name for name in os.listdir(path) if not name.startswith("."))
    except OSError:
        return None
    return tuple((name, file_stamp(os.path.join(path, name))) for name in names)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReloadStatus:
    """What ``/status`` and the dashboard say of one reloaded file."""

    setting: str  # the setting's name: auth_file, secrets_dir...
    path: str
    loaded_at: float  # when the value in force was read (or the directory last changed)
    error: str | None = None  # why the newest version is not in force
    error_since: float | None = None  # since when the file on disk has been bad

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "loaded_at": rfc3339(self.loaded_at),
            "error": self.error,
            "error_since": rfc3339(self.error_since),
        }


Apply = Callable[[], None]


class Watched(Protocol):
    """A file or directory that a watch polls."""

    @property
    def status(self) -> ReloadStatus: ...

    def poll(self) -> Apply | None:
        """Blocking: None while nothing changed; else what to do about it on the event loop."""
        ...


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _notify(listeners: list[Callable[[], None]]) -> None:
    for listener in listeners:
        try:
            listener()
        except Exception:  # a listener's bug must not end the watch
            log.exception("a reload listener failed")


class ReloadedFile(Generic[T]):
    """A file's loaded value in ``current``, loaded again when the file changes.

    ``load`` raises a :class:`ConfigServerError` (a ``SettingsError`` as a rule) for a
    file it cannot take: at construction that ends startup, as before; later it keeps
    the old value. ``listeners`` are called on the loop after each successful reload.
    """

    def __init__(self, *, setting: str, path: str, load: Callable[[str], T]) -> None:
        self._path = path
        self._load = load
        self._seen = file_stamp(path)  # before the read: a change meanwhile is read again
        self.current = Current(load(path))
        self.status = ReloadStatus(setting=setting, path=path, loaded_at=time.time())
        self.listeners: list[Callable[[], None]] = []

    def poll(self) -> Apply | None:
        before = file_stamp(self._path)
        if before == self._seen:
            return None
        outcome: Apply
        try:
            outcome = functools.partial(self._swap, before, self._load(self._path))
        except ConfigServerError as exc:
            outcome = functools.partial(self._refuse, before, exc.message)
        except Exception as exc:  # a loader's surprise keeps the old value, like any error
            outcome = functools.partial(self._refuse, before, f"unexpected {type(exc).__name__}")
        if file_stamp(self._path) != before:
            # Changed while read (a writer mid-way, the old ..data dir just removed):
            # nothing is decided; the next poll reads the settled file.
            return None
        return outcome

    def _swap(self, stamp: FileStamp | None, value: T) -> None:
        self._seen = stamp
        was_bad = self.status.error is not None
        self.current.replace(value)
        self.status = ReloadStatus(
            setting=self.status.setting, path=self._path, loaded_at=time.time()
        )
        # The path only: never the content.
        log.info(
            "%s %s reloaded%s",
            _flag(self.status.setting),
            self._path,
            "; the earlier error is resolved" if was_bad else "",
        )
        _notify(self.listeners)

    def _refuse(self, stamp: FileStamp | None, error: str) -> None:
        self._seen = stamp
        now = time.time()
        self.status = dataclasses.replace(
            self.status, error=error, error_since=self.status.error_since or now
        )
        log.error(
            "%s %s changed but is not taken: %s; the version loaded at %s stays in force",
            _flag(self.status.setting),
            self._path,
            error,
            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.status.loaded_at)),
        )


_UNLISTABLE = "cannot list the directory"


class WatchedDirectory:
    """A directory whose files are read where they are used (``--secrets-dir``):
    a change only calls ``listeners`` (a sync), on the loop."""

    def __init__(self, *, setting: str, path: str) -> None:
        self._path = path
        self._seen = dir_stamp(path)
        now = time.time()
        self.status = ReloadStatus(setting=setting, path=path, loaded_at=now)
        if self._seen is None:  # secrets are looked up at each build: not fatal, but said
            self.status = dataclasses.replace(self.status, error=_UNLISTABLE, error_since=now)
        self.listeners: list[Callable[[], None]] = []

    def poll(self) -> Apply | None:
        stamp = dir_stamp(self._path)
        if stamp == self._seen:
            return None
        return functools.partial(self._changed, stamp)

    def _changed(self, stamp: DirStamp | None) -> None:
        self._seen = stamp
        flag = _flag(self.status.setting)
        if stamp is None:
            now = time.time()
            self.status = dataclasses.replace(
                self.status,
                error=_UNLISTABLE,
                error_since=self.status.error_since or now,
            )
            log.error("%s %s cannot be listed; syncing to say which secrets fail", flag, self._path)
        else:
            self.status = ReloadStatus(
                setting=self.status.setting, path=self._path, loaded_at=time.time()
            )
            # File names only, never a value; a value that cannot be used is the sync's
            # rejection, and the commit served before keeps serving.
            log.info("%s %s changed (%d file(s)); syncing", flag, self._path, len(stamp))
        _notify(self.listeners)
