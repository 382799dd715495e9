"""What kind of place ``--repo`` names: a URL, scp-style ``user@host:path``, or a local path.

The mirror needs a local path made absolute (git runs inside the mirror);
the upstream watcher needs the git directory of a local upstream. Both ask
:func:`local_path`, so that they never disagree on which repositories are local.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCP_RE = re.compile(r"^[^/]+@[^/]+:")


def local_path(repo: str) -> Path | None:
    """The absolute local path of a path or file:// URL; None for a remote (URL or scp-style)."""
    if repo.startswith("file://"):
        return Path(unquote(urlparse(repo).path)).resolve()
    if _URL_RE.match(repo) or _SCP_RE.match(repo):
        return None
    return Path(repo).expanduser().resolve()


def normalise_remote(repo: str) -> str:
    """A URL as given, or a local path made absolute (a file:// URL stays a URL)."""
    if repo.startswith("file://"):
        return repo
    path = local_path(repo)
    return repo if path is None else str(path)


def local_git_dir(repo: str) -> Path | None:
    """The git directory of a local upstream (path or file:// URL), or None for remotes."""
    path = local_path(repo)
    if path is None:
        return None
    if (path / ".git").is_dir():
        return path / ".git"
    if (path / "HEAD").is_file() and (path / "refs").is_dir():
        return path  # a bare repository
    return None


def remote_identity(repo: str) -> str:
    """What names the same repository however it is spelled, credentials left out.

    A path and its file:// URL are one repository; so are an https URL before
    and after its token is rotated, with or without a trailing ``/`` or ``.git``,
    and host names in any case. The mirror and the last-good record are kept
    across such changes of ``--repo``, and replaced only for another repository.
    """
    path = local_path(repo)
    if path is not None:
        return str(path)
    scp = _SCP_RE.match(repo)
    if scp and not _URL_RE.match(repo):
        host, _, rest = repo.split("@", 1)[1].partition(":")
        return f"ssh://{host.lower()}/{_repo_path(rest)}"
    scheme, _, rest = repo.partition("://")
    # Credentials end at the last "@": a token may itself hold "/" or ":".
    rest = rest.rpartition("@")[2]
    host, _, repo_path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}/{_repo_path(repo_path)}"


def _repo_path(path: str) -> str:
    return path.strip("/").removesuffix(".git").rstrip("/")
