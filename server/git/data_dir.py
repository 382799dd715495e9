"""The data directory: one server's lock on it, and the record of its last good commit.

Layout::

    <data-dir>/lock          held by the running server (one server per directory)
    <data-dir>/mirror.git    bare mirror (``mirror``)
    <data-dir>/state.json    the last good commit, written atomically
    <data-dir>/pin.json      the emergency pin of POST /admin/pin, if any (``pin_store``)
    <data-dir>/gnupg/        the private keyring of --require-signed-commits
    <data-dir>/metrics/      request metrics of --workers N, one directory per run

Blocking; the record is read and written on the sync thread.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import SettingsError

if TYPE_CHECKING:
    from filelock import BaseFileLock

# A full commit id: what a record holds, and what a --ref that can never move looks like.
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def write_json_atomically(path: Path, record: object) -> None:
    """``record`` as ``path``'s JSON; a crash mid-write leaves the old file (or none),
    never half of one."""
    scratch = path.with_suffix(".tmp")
    with scratch.open("w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataDir:
    """Where each part of the server's state lives inside ``--data-dir``."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def mirror(self) -> Path:
        return self.root / "mirror.git"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def pin(self) -> Path:
        return self.root / "pin.json"

    @property
    def gnupg(self) -> Path:
        return self.root / "gnupg"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"


def _file_in_the_way(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that exists, when that is not a directory."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def data_dir_problem(root: Path, exc: OSError) -> str:
    """What is wrong with ``--data-dir`` (from the error creating or writing it), and the fix."""
    where = f"--data-dir {root}"
    fix = "give a --data-dir (or LMCACHE_CONFIG_SERVER_DATA_DIR) this user can write"
    in_the_way = _file_in_the_way(root)
    if in_the_way == root:
        return f"{where} is a file, not a directory: move the file away, or {fix}"
    if in_the_way is not None:
        return f"{where} cannot be created: {in_the_way} is a file, not a directory; {fix}"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system: {fix} (e.g. a volume or StateDirectory)"
    if exc.errno == errno.EACCES:
        return (
            f"{where} is not writable by this user (uid {os.getuid()}): change its owner or "
            f"mode, or {fix}"
        )
    if exc.errno == errno.EPERM:  # refused whoever asks: root too
        return (
            f"{where} refuses writes (operation not permitted: an immutable directory, "
            f"chattr +i, or a read-only mount?): make it writable, or {fix}"
        )
    if exc.errno == errno.ENOSPC:
        return f"{where}: no space left on its file system; free some, or {fix}"
    return f"{where} cannot be used: {exc.strerror or exc}; {fix}"


class DataDirLock:
    """An exclusive lock on the data directory: two servers must not share a mirror.

    ``filelock``'s flock on an empty file, taken without waiting (a second server stops
    at once and says why) and dropped by the kernel when the process ends, however it
    ends. Released, the file stays (filelock 3.20.4 to 3.29.4 unlinked it, hence the
    floor): unlinking races a server that has opened the old file but not yet locked
    it, which then locks a file no longer there while a third server creates and locks
    a new one, and both run.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock: BaseFileLock | None = None

    def acquire(self) -> None:
        # Here: the CLI imports this module, and filelock adds about 20 ms to its start.
        from filelock import FileLock, Timeout  # noqa: PLC0415

        # The first write to the data dir: its problems are named here, not left to look
        # like something else (a bare OSError used to be reported as a listen error).
        # thread_local=False: the lock is the process's, whichever thread releases it.
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self._path, timeout=0, thread_local=False)
            lock.acquire()
        except Timeout:  # an OSError too (TimeoutError): caught first
            raise SettingsError(
                f"data dir {self._path.parent} is in use by another server process; "
                "give each server its own --data-dir"
            ) from None
        except OSError as exc:
            raise SettingsError(data_dir_problem(self._path.parent, exc)) from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class LastGoodRecord:
    """The last commit served, kept across restarts for one repository and ref.

    A record written for another repository or ``--ref`` is never restored:
    another ref must not start by serving this one's commit. The repository is
    compared by identity (``remote.remote_identity``), so a rotated token or a
    path given for a file:// URL keeps the record. It never holds a credential.
    """

    def __init__(self, path: Path, *, remote: str, identity: str, ref: str) -> None:
        self._path = path
        self._remote = remote  # as shown (redacted), for people reading the file
        self._identity = identity
        self._ref = ref

    def load(self) -> str | None:
        try:
            state = json.loads(self._path.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        sha = state.get("last_good") if isinstance(state, dict) else None
        same_repository = state.get("identity", None) == self._identity or (
            "identity" not in state and state.get("remote") == self._remote  # older records
        )
        if (
            isinstance(sha, str)
            and SHA_RE.match(sha)
            and same_repository
            and state.get("ref") == self._ref
        ):
            return sha
        return None

    def save(self, sha: str) -> None:
        state = {
            "remote": self._remote,
            "identity": self._identity,
            "ref": self._ref,
            "last_good": sha,
        }
        write_json_atomically(self._path, state)
