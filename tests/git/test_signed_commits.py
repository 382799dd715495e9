"""--require-signed-commits: real OpenPGP and SSH keys generated in the test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from server.base.errors import SettingsError
from server.run.app import create_app
from server.settings import check_settings
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory, make_settings

SIGNER = "Config Author <author@example.test>"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        args, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )
    return result.stdout


class GpgKey:
    def __init__(self, home: Path, uid: str) -> None:
        home.mkdir(mode=0o700)
        self.env = {"GNUPGHOME": str(home)}
        run(
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
            env=self.env,
        )
        listing = run("gpg", "--batch", "--with-colons", "--list-secret-keys", env=self.env)
        self.fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )

    def export(self, path: Path) -> Path:
        path.write_text(
            run("gpg", "--batch", "--armor", "--export", self.fingerprint, env=self.env)
        )
        return path

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env={**os.environ, **self.env}, check=False
        )


@pytest.fixture
def gpg_keys(tmp_path: Path) -> Iterator[tuple[GpgKey, GpgKey]]:
    trusted = GpgKey(tmp_path / "gpg-trusted", SIGNER)
    stranger = GpgKey(tmp_path / "gpg-stranger", "Stranger <stranger@example.test>")
    yield trusted, stranger
    trusted.close()
    stranger.close()


def gpg_commit(repo: ConfigRepo, key: GpgKey, files: dict[str, str], message: str) -> str:
    for path, text in files.items():
        repo.write(path, text)
    repo.git("add", "--all")
    run(
        "git",
        "-c",
        "gpg.program=gpg",
        "-c",
        f"user.signingkey={key.fingerprint}",
        "commit",
        "--quiet",
        "-S",
        "-m",
        message,
        env=key.env,
        cwd=repo.path,
    )
    return repo.head()


async def test_gpg_signed_unsigned_and_untrusted(
    tmp_path: Path, gpg_keys: tuple[GpgKey, GpgKey], start_server: ServerFactory
) -> None:
    trusted, stranger = gpg_keys
    repo = ConfigRepo(tmp_path / "repo")
    good = gpg_commit(repo, trusted, {"apps/a.yaml": "overrides: {chunk_size: 1}\n"}, "signed")
    server = await start_server(
        repo.path,
        require_signed_commits=True,
        trusted_gpg_keys=str(trusted.export(tmp_path / "trusted.asc")),
    )
    assert server.served_sha == good

    unsigned = repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 2}\n"}, "unsigned")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    report = (await server.status())["last_rejected"]
    assert report["commit"]["sha"] == unsigned
    assert report["errors"] == [
        f".:1:1: error: commit {unsigned[:12]} is not signed; --require-signed-commits is on"
    ]

    wrong = gpg_commit(repo, stranger, {"apps/a.yaml": "overrides: {chunk_size: 3}\n"}, "stranger")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    report = (await server.status())["last_rejected"]
    assert report["commit"]["sha"] == wrong
    assert "is not signed by a trusted key" in report["errors"][0]
    assert server.served_sha == good

    fixed = gpg_commit(repo, trusted, {"apps/a.yaml": "overrides: {chunk_size: 4}\n"}, "fix")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert server.served_sha == fixed


async def test_ssh_signed_and_unsigned(tmp_path: Path, start_server: ServerFactory) -> None:
    keys = {}
    for name in ("trusted", "stranger"):
        key = tmp_path / f"{name}_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
        keys[name] = key
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"author@example.test {Path(str(keys['trusted']) + '.pub').read_text()}")

    repo = ConfigRepo(tmp_path / "repo")

    def ssh_commit(key: Path, value: int) -> str:
        repo.write("apps/a.yaml", f"overrides: {{chunk_size: {value}}}\n")
        repo.git("add", "--all")
        repo.git(
            "-c",
            "gpg.format=ssh",
            "-c",
            f"user.signingkey={key}.pub",
            "commit",
            "--quiet",
            "-S",
            "-m",
            f"value {value}",
        )
        return repo.head()

    good = ssh_commit(keys["trusted"], 1)
    server = await start_server(
        repo.path, require_signed_commits=True, allowed_signers=str(allowed)
    )
    assert server.served_sha == good
    ssh_commit(keys["stranger"], 2)
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    assert "not signed by a trusted key" in (await server.status())["last_rejected"]["errors"][0]
    repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 3}\n"}, "unsigned")
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    latest = ssh_commit(keys["trusted"], 4)
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    assert server.served_sha == latest


def test_signing_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="needs --trusted-gpg-keys and/or --allowed-signers"):
        check_settings(make_settings("x", tmp_path, require_signed_commits=True))


async def test_bad_trusted_key_file_stops_startup(tmp_path: Path, config_repo: ConfigRepo) -> None:
    bad = tmp_path / "keys.asc"
    bad.write_text("not a key")
    app = create_app(
        make_settings(
            config_repo.path,
            tmp_path / "data",
            require_signed_commits=True,
            trusted_gpg_keys=str(bad),
        )
    )
    server = TestServer(app, host="127.0.0.1")
    with pytest.raises(SettingsError, match="cannot import --trusted-gpg-keys"):
        await server.start_server()
    await server.close()
