"""Reading a file that holds one secret (a token, a webhook secret), as Kubernetes mounts one."""

from __future__ import annotations

from pathlib import Path

from .errors import SettingsError


def read_secret_file(path: str, flag: str) -> str:
    """The content of the file, surrounding whitespace dropped; never empty.

    ``flag`` names the setting in the error, which never quotes the content.
    """
    try:
        secret = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"cannot read {flag} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{flag} {path} is not UTF-8 text") from None
    if not secret:
        raise SettingsError(f"{flag} {path} is empty")
    return secret
