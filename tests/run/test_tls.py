"""HTTPS with a self-signed certificate made in the test, used by the real LMCache client."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.gitrepo import ConfigRepo
from tests.support.lmcache_client import FINITE, run_worker
from tests.support.procs import ServerProcess, status_of_each


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("workers", [1, 2])
async def test_https_with_the_real_client(
    tmp_path: Path, config_repo: ConfigRepo, certificate: tuple[Path, Path], workers: int
) -> None:
    cert, key = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    server = ServerProcess(
        tmp_path,
        "tls",
        "--repo",
        str(config_repo.path),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--workers",
        str(workers),
        ssl_context=trusting,
    )
    try:
        server.wait_ready()
        status, answer = server.json("/config?appId=test-app")
        assert (status, answer["version"]) == (200, config_repo.head())
        if workers == 2:  # the follower serves HTTPS with the same certificate
            assert sorted(status_of_each(server)) == [0, 1]

        # Plain HTTP to the TLS port gets nowhere.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)

        for _ in range(workers):  # with two processes, likely both answer the client
            result = await run_worker(
                tmp_path,
                f"{server.base}/config",
                {**FINITE, "app_id": "test-app"},
                {"REQUESTS_CA_BUNDLE": str(cert)},
            )
            assert result["fetched"] is True
            assert result["config"]["chunk_size"] == 512
        # A worker that does not trust the certificate gets nothing (and keeps local config).
        untrusting = await run_worker(
            tmp_path, f"{server.base}/config", {**FINITE, "app_id": "test-app"}
        )
        assert untrusting["fetched"] is False
    finally:
        assert server.stop() == 0
    assert "on https://" in server.log()


def test_bad_tls_settings_exit_2(tmp_path: Path, config_repo: ConfigRepo) -> None:
    only_cert = ServerProcess(
        tmp_path, "one", "--repo", str(config_repo.path), "--tls-cert", "x.pem"
    )
    assert only_cert.process.wait(timeout=30) == 2
    only_cert.stop()
    assert "--tls-cert and --tls-key go together" in only_cert.log()
    missing = ServerProcess(
        tmp_path,
        "two",
        "--repo",
        str(config_repo.path),
        "--tls-cert",
        str(tmp_path / "no.pem"),
        "--tls-key",
        str(tmp_path / "no.key"),
    )
    assert missing.process.wait(timeout=30) == 2
    missing.stop()
    assert "cannot load --tls-cert/--tls-key" in missing.log()
