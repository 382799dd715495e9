"""The server's fast way to read a commit's config files from its mirror.

``commits.CommitSource`` walks trees with GitPython and reads one blob per
round trip: fine for one commit in a CLI, seconds for 10,000 app files. Here one
``git ls-tree`` lists the config root with every blob id and size, and blobs
not read for an earlier commit are fetched together in one ``git cat-file
--batch``. A one-file commit therefore reads one blob, and the bytes of
unchanged files are the very objects of the previous commit, which the parse
memo (``config.parse_memo``) recognises without comparing contents.

``MirrorCommitSource`` selects and refuses exactly what ``CommitSource`` does
(a test holds them to it). A reader belongs to one thread: each thread that reads
commits (sync, view, a follower's build thread) has its own blob store.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..base.errors import SourceProblem, TreeUnreadable
from ..config.loader import RepoLimits
from ..config.names import APPS_DIR, ROOT_FILES, SYMLINK_REFUSED, is_yaml_name

_SYMLINK_MODE = "120000"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeEntry:
    mode: str
    kind: str  # blob, tree or commit (a submodule)
    object_id: str
    size: int


class BlobStore:
    """Runs git on the mirror; remembers the blobs of the last commit read."""

    def __init__(self, git_dir: Path, env: Mapping[str, str], timeout: float) -> None:
        self.git_dir = git_dir
        self.env = dict(env)
        self.timeout = timeout
        self._kept: dict[str, bytes] = {}  # blobs of the previous load
        self._used: dict[str, bytes] = {}  # blobs of the load in progress

    def git(self, *args: str, stdin: bytes | None = None) -> bytes:
        try:
            result = subprocess.run(
                ["git", f"--git-dir={self.git_dir}", *args],
                input=stdin,
                capture_output=True,
                env=self.env,
                timeout=self.timeout,
                check=True,
            )
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode("utf-8", "replace").strip()
            raise TreeUnreadable(f"git {args[0]} failed: {detail}") from None
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise TreeUnreadable(f"git {args[0]} failed: {exc}") from None
        return result.stdout

    def blobs(self, object_ids: list[str]) -> dict[str, bytes]:
        """The bytes of each blob; blobs read for this load or the last one are not read again."""
        wanted = [oid for oid in dict.fromkeys(object_ids) if oid not in self._used]
        missing = [oid for oid in wanted if oid not in self._kept]
        if missing:
            out = self.git("cat-file", "--batch", stdin=("\n".join(missing) + "\n").encode())
            position = 0
            for oid in missing:
                header_end = out.index(b"\n", position)
                header = out[position:header_end].split(b" ")
                if len(header) != 3 or header[0].decode() != oid or header[1] != b"blob":
                    raise TreeUnreadable(f"blob {oid[:12]} is missing from the mirror")
                start = header_end + 1
                size = int(header[2])
                self._used[oid] = out[start : start + size]
                position = start + size + 1
        for oid in wanted:
            if oid not in self._used:
                self._used[oid] = self._kept[oid]
        return {oid: self._used[oid] for oid in object_ids}

    def finish_load(self) -> None:
        """Keep only the blobs of the load just finished (memory stays one commit's worth)."""
        self._kept, self._used = self._used, {}


class MirrorCommitSource:
    """A ConfigSource over one commit of the mirror, below ``subdir``."""

    def __init__(
        self, store: BlobStore, sha: str, subdir: str, limits: RepoLimits | None = None
    ) -> None:
        self._limits = limits or RepoLimits()
        self._store = store
        self._sha = sha
        self._subdir = subdir.strip("/")
        self._shown_subdir = subdir
        self._entries: dict[str, TreeEntry] | None = None

    def _tree(self) -> dict[str, TreeEntry]:
        if self._entries is not None:
            return self._entries
        store = self._store
        store.git("cat-file", "-e", f"{self._sha}^{{commit}}")  # unreadable commit: damage
        spec = f"{self._sha}:{self._subdir}" if self._subdir else f"{self._sha}^{{tree}}"
        found = store.git("cat-file", "--batch-check", stdin=f"{spec}\n".encode()).split()
        if len(found) != 3 or found[1] != b"tree":
            if self._subdir:
                shown = self._shown_subdir
                raise SourceProblem(f"--path '{shown}' is not a directory in this commit")
            raise TreeUnreadable(f"cannot read the tree of commit {self._sha[:12]}")
        listing = store.git("ls-tree", "-r", "-t", "-l", "-z", found[0].decode())
        entries: dict[str, TreeEntry] = {}
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, kind, object_id, size = meta.decode().split()
            entries[path.decode("utf-8", "surrogateescape")] = TreeEntry(
                mode=mode, kind=kind, object_id=object_id, size=int(size) if size != "-" else 0
            )
        self._entries = entries
        return entries

    def selected_paths(self) -> list[str]:
        """global.yaml / global.yml at the root and every blob below apps/, read in one go."""
        entries = self._tree()
        prefix = APPS_DIR + "/"
        paths = sorted(
            path
            for path, entry in entries.items()
            if entry.kind == "blob" and (path in ROOT_FILES or path.startswith(prefix))
        )
        # Prefetch in one batch only what the limits allow: a blob over the file limit, or
        # past the total, must be refused by size (from the tree) without being read.
        prefetch: list[str] = []
        total = 0
        for path in paths:
            entry = entries[path]
            if entry.mode == _SYMLINK_MODE or entry.size > self._limits.max_file_bytes:
                continue
            total += entry.size
            if total > self._limits.max_total_bytes or len(prefetch) >= self._limits.max_files:
                break
            prefetch.append(entry.object_id)
        self._store.blobs(prefetch)
        return paths

    def yaml_paths(self) -> list[str]:
        """From the one listing already made: costs no git call."""
        return sorted(
            path
            for path, entry in self._tree().items()
            if entry.kind == "blob" and is_yaml_name(path.rpartition("/")[2])
        )

    def _blob(self, relative: str) -> TreeEntry:
        entry = self._tree().get(relative)
        if entry is None:
            raise SourceProblem("no such file")
        if entry.kind != "blob":
            raise SourceProblem("is a directory, not a file")
        if entry.mode == _SYMLINK_MODE:
            raise SourceProblem(SYMLINK_REFUSED)
        return entry

    def size(self, relative: str) -> int:
        return self._blob(relative).size

    def read(self, relative: str) -> bytes:
        object_id = self._blob(relative).object_id
        return self._store.blobs([object_id])[object_id]
