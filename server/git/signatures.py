"""Signed-commit checks: serve only commits signed by a trusted OpenPGP or SSH key.

The trusted OpenPGP keys are imported into a keyring private to the data
directory (never the user's own), so "in the keyring" means "trusted". SSH keys
are checked against an allowed-signers file. ``git verify-commit`` picks the
right one from the signature's format. Runs on the sync thread.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..base.errors import SettingsError


class SignaturePolicy:
    def __init__(self, *, gnupg_home: Path, gpg_keys: str, allowed_signers: str) -> None:
        self.gnupg_home = gnupg_home
        self.gpg_keys = gpg_keys
        self.allowed_signers = str(Path(allowed_signers).resolve()) if allowed_signers else ""

    def prepare(self) -> None:
        """(Re)build the private keyring from the trusted key file; called at startup."""
        if self.allowed_signers and not Path(self.allowed_signers).is_file():
            raise SettingsError(f"--allowed-signers {self.allowed_signers}: no such file")
        shutil.rmtree(self.gnupg_home, ignore_errors=True)
        self.gnupg_home.mkdir(mode=0o700, parents=True)
        if not self.gpg_keys:
            return
        result = subprocess.run(
            ["gpg", "--batch", "--quiet", "--import", self.gpg_keys],
            env={**os.environ, "GNUPGHOME": str(self.gnupg_home)},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SettingsError(
                f"cannot import --trusted-gpg-keys {self.gpg_keys}: {result.stderr.strip()}"
            )

    def check(self, git_dir: Path, sha: str) -> str | None:
        """None when ``sha`` carries a good signature by a trusted key, else the reason."""
        command = ["git", "--git-dir", str(git_dir)]
        if self.allowed_signers:
            command += ["-c", f"gpg.ssh.allowedSignersFile={self.allowed_signers}"]
        command += ["verify-commit", "--raw", sha]
        result = subprocess.run(
            command,
            env={**os.environ, "GNUPGHOME": str(self.gnupg_home)},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode == 0:
            return None
        detail = " ".join(result.stderr.split())[:300]
        if not detail or "no signature found" in detail.lower():
            return f"commit {sha[:12]} is not signed; --require-signed-commits is on"
        return f"commit {sha[:12]} is not signed by a trusted key: {detail}"
