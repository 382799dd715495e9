"""Push-to-serve latency: from ``git push`` returning to /config answering the new commit.

Two paths, each over PUSHES pushes to a real upstream:
- watch: the upstream is a local bare repository the server watches;
- webhook: the upstream is served by ``git daemon`` on loopback, and each push is
  followed by a signed GitHub-style webhook, as a git host would send.
The poll interval is an hour, so polling plays no part.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import GIT_ENV, ServerProcess, free_port, get_json, git, summary, write_result

PUSHES = 25
SECRET = "bench-secret"


def _setup(base: Path, push_url: str | None = None) -> tuple[Path, Path]:
    bare = base / "upstream.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    author = base / "author"
    author.mkdir()
    git(author, "init", "-q", "-b", "main")
    git(author, "remote", "add", "origin", push_url or str(bare))
    (author / "apps").mkdir()
    (author / "apps" / "test-app.yaml").write_text("overrides: {chunk_size: 1}\n")
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "initial")
    git(author, "push", "-q", "origin", "HEAD:refs/heads/main")
    return bare, author


def _push(author: Path, value: int) -> str:
    (author / "apps" / "test-app.yaml").write_text(f"overrides: {{chunk_size: {value}}}\n")
    git(author, "commit", "-q", "-am", f"chunk_size {value}")
    git(author, "push", "-q", "origin", "HEAD:refs/heads/main")
    return git(author, "rev-parse", "HEAD")


def _wait_served(server: ServerProcess, sha: str, started: float) -> float:
    while True:
        _, answer = get_json(server.base + "/config?appId=test-app")
        if answer and answer["version"] == sha:
            return time.perf_counter() - started
        if time.perf_counter() - started > 30:
            raise RuntimeError("commit not served within 30 s")
        time.sleep(0.005)


def _send_webhook(server: ServerProcess) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        server.base + "/webhook/github",
        data=body,
        headers={
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={signature}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202


def measure_watch(base: Path) -> list[float]:
    bare, author = _setup(base)
    server = ServerProcess(
        "--repo", str(bare), "--poll-interval", "3600", "--data-dir", str(base / "data")
    )
    try:
        samples = []
        for value in range(2, PUSHES + 2):
            sha = _push(author, value)
            samples.append(_wait_served(server, sha, time.perf_counter()))
        return samples
    finally:
        server.stop()


def measure_webhook(base: Path) -> list[float]:
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--enable=receive-pack",
            str(base),
        ],
        env=GIT_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        url = f"git://127.0.0.1:{port}/upstream.git"
        _setup(base, push_url=url)
        author = base / "author"
        server = ServerProcess(
            "--repo",
            url,
            "--poll-interval",
            "3600",
            "--data-dir",
            str(base / "data"),
            env={"LMCACHE_CONFIG_SERVER_WEBHOOK_SECRET": SECRET},
        )
        try:
            samples = []
            for value in range(2, PUSHES + 2):
                sha = _push(author, value)
                started = time.perf_counter()
                _send_webhook(server)
                samples.append(_wait_served(server, sha, started))
            return samples
        finally:
            server.stop()
    finally:
        daemon.terminate()
        daemon.wait()


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, measure in (("watch", measure_watch), ("webhook", measure_webhook)):
        with tempfile.TemporaryDirectory() as scratch:
            results[name] = summary(measure(Path(scratch)))
    write_result("push_to_serve", {"seconds": results, "pushes": PUSHES})
    return results


if __name__ == "__main__":
    figures = run()
    print(f"push-to-serve latency over {PUSHES} pushes (s): target median < 0.5, max < 1.0")
    for path, stats in figures.items():
        print(
            f"  {path:8s} median {stats['median']:.3f}  p90 {stats['p90']:.3f}  max {stats['max']:.3f}"
        )
