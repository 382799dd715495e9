"""``--workers 2``: each process reloads its auth file; both take a rotated token."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path

from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.mounted_secret import MountedSecret
from tests.support.procs import ServerProcess
from tests.support.waiting import wait_until

OLD_TOKEN = "old-client-token-0123456789abcdef"
NEW_TOKEN = "new-client-token-0123456789abcdef"
OLD_ADMIN = "old-admin-token-0123456789abcdef"
NEW_ADMIN = "new-admin-token-0123456789abcdef"


def auth_yaml(client: str, admin: str) -> str:
    return (
        f"clients:\n  - name: fleet\n    token_sha256: {hash_token(client)}\n"
        f'    apps: ["*"]\nadmins:\n  - name: oncall\n    token_sha256: {hash_token(admin)}\n'
    )


def handled_by(server: ServerProcess, request_id: str) -> int | None:
    """Which process logged the request with this id (None: not logged yet)."""
    for line in server.log().splitlines():
        if f"id={request_id} " in line:
            return 1 if "[worker 1]" in line else 0
    return None


def logged(server: ServerProcess, request_id: str) -> bool:
    return handled_by(server, request_id) is not None


def answers_by_process(server: ServerProcess, token: str) -> dict[int, int]:
    """/config's status code from each process for ``token`` (the kernel picks the process:
    repeat until both have answered)."""
    codes: dict[int, int] = {}
    for _ in range(200):
        request_id = uuid.uuid4().hex
        code, _, _ = server.request(
            f"/config?appId=test-app&token={token}", headers={"X-Request-Id": request_id}
        )
        wait_until(partial(logged, server, request_id), "the request's log line")
        worker = handled_by(server, request_id)
        assert worker is not None
        codes[worker] = code
        if len(codes) == 2:
            return codes
    raise AssertionError(f"only workers {sorted(codes)} answered: {server.log()}")


def full_status_from(server: ServerProcess, admin: str, seen: set[int]) -> bool:
    """Adds to ``seen`` the process that answered the full /status to ``admin``."""
    code, status = server.json("/status", headers={"Authorization": f"Bearer {admin}"})
    if code == 200 and "process" in status:
        seen.add(int(status["process"]["worker"]))
    return seen == {0, 1}


def test_both_processes_take_a_rotated_token(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "config")
    repo.commit_files({"apps/test-app.yaml": "overrides: {chunk_size: 256}\n"}, "initial")
    mount = MountedSecret(tmp_path / "auth", {"auth.yaml": auth_yaml(OLD_TOKEN, OLD_ADMIN)})
    server = ServerProcess(
        tmp_path, "reload", "--repo", str(repo.path), "--workers", "2",
        "--auth-file", mount.file("auth.yaml"),
    )  # fmt: skip
    try:
        server.wait_ready()
        old_admin: set[int] = set()
        wait_until(lambda: full_status_from(server, OLD_ADMIN, old_admin), "both processes")
        assert answers_by_process(server, OLD_TOKEN) == {0: 200, 1: 200}

        mount.update({"auth.yaml": auth_yaml(NEW_TOKEN, NEW_ADMIN)})
        new_admin: set[int] = set()
        wait_until(
            lambda: full_status_from(server, NEW_ADMIN, new_admin),
            "both processes to take the new admin token",
        )
        # Both processes have reloaded: the old token is refused by each, the new accepted.
        assert answers_by_process(server, OLD_TOKEN) == {0: 401, 1: 401}
        assert answers_by_process(server, NEW_TOKEN) == {0: 200, 1: 200}
        code, status = server.json("/status", headers={"Authorization": f"Bearer {NEW_ADMIN}"})
        assert code == 200
        assert status["credentials"]["auth_file"]["error"] is None
        assert server.log().count("reloaded") >= 2  # one line from each process
    finally:
        server.kill()
