"""The performance work changes nothing a worker or an author can see.

- the mirror's fast commit reader selects, reads and refuses exactly what the
  GitPython ``CommitSource`` (used by the authoring commands) does;
- a server that builds each commit incrementally (blob cache, parse memo)
  answers exactly like one that builds the same commit cold;
- the orjson body parser rejects every malformed body with 400, and accepts
  every body the stdlib parser accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from git import Repo

from server.base.errors import SourceProblem
from server.git.commits import CommitSource
from server.git.tree_reader import BlobStore, MirrorCommitSource
from server.sync.state import SyncTrigger
from server.web.keys import SNAPSHOTS
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import RunningServer, ServerFactory

# -- the commit reader ------------------------------------------------------------------


def _outcome(source: Any, relative: str) -> tuple[str, object]:
    try:
        return ("ok", (source.size(relative), source.read(relative)))
    except SourceProblem as problem:
        return ("refused", problem.message)


@pytest.mark.parametrize("subdir", ["", "lmcache", "lmcache/"])
def test_mirror_reader_selects_and_refuses_like_commit_source(tmp_path: Path, subdir: str) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    root = subdir.strip("/")
    base = f"{root}/" if root else ""
    files = {
        "global.yaml": "defaults: {chunk_size: 256}\n",
        "global.yml": "x: 1\n",
        "apps/a.yaml": "include: [profiles/p.yaml]\noverrides: {chunk_size: 1}\n",
        "apps/empty.yaml": "",
        "apps/README.md": "about apps\n",
        "apps/sub/deep.yaml": "defaults: {}\n",
        "apps/Bad Name.yaml": "defaults: {}\n",
        "profiles/p.yaml": "defaults: {local_cpu: true}\n",
        "docs/x.md": "not config\n",
    }
    repo.commit_files({base + path: text for path, text in files.items()}, "tree")
    (repo.path / base / "apps").joinpath("link.yaml").symlink_to("a.yaml")
    (repo.path / base / "apps" / "linkdir").symlink_to("sub")
    sha = repo.commit("symlinks")

    reference = CommitSource(Repo(repo.path).commit(sha), subdir)
    store = BlobStore(repo.path / ".git", os.environ, 30)
    fast = MirrorCommitSource(store, sha, subdir)

    assert fast.selected_paths() == reference.selected_paths()
    assert fast.yaml_paths() == reference.yaml_paths()  # what the unread-file warnings see
    assert "profiles/p.yaml" in fast.yaml_paths()
    probes = [
        *reference.selected_paths(),
        "profiles/p.yaml",
        "profiles/missing.yaml",
        "apps/sub",
        "docs",
        "apps/linkdir",
    ]
    for relative in probes:
        assert _outcome(fast, relative) == _outcome(reference, relative), relative


def test_mirror_reader_refuses_a_path_that_is_not_a_directory(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    sha = repo.commit_files({"lmcache": "a file, not a directory\n"}, "file")
    for subdir in ("lmcache", "missing"):
        reference = CommitSource(Repo(repo.path).commit(sha), subdir)
        fast = MirrorCommitSource(BlobStore(repo.path / ".git", os.environ, 30), sha, subdir)
        with pytest.raises(SourceProblem) as expected:
            reference.selected_paths()
        with pytest.raises(SourceProblem) as got:
            fast.selected_paths()
        assert got.value.message == expected.value.message


# -- incremental builds -------------------------------------------------------------------

H100_ENV = {
    "env_variables": {"GPU_TYPE": "H100-SXM", "REGION": "us-east-1"},
    "current_config": {"chunk_size": 256},
}
BODIES: list[Any] = [None, H100_ENV, {"env_variables": {"GPU_TYPE": "A100"}}]
APP_IDS = ["a", "b", "c", "d", "twin", "nobody", None]

GENERATIONS: list[tuple[str, dict[str, str | None], bool]] = [
    (
        "initial",
        {
            "global.yaml": "defaults: {chunk_size: 256, local_cpu: true}\n",
            "profiles/p.yaml": (
                "defaults: {max_local_cpu_size: 8.0}\n"
                "rules:\n"
                "  - name: h100\n"
                "    when: {env: {GPU_TYPE: 'H100*'}}\n"
                "    overrides: {max_local_cpu_size: 40.0}\n"
            ),
            "apps/a.yaml": "include: [profiles/p.yaml]\noverrides: {chunk_size: 512}\n",
            "apps/b.yaml": (
                "overrides: {extra_config: {tier: gold}}\n"
                "rules:\n"
                "  - name: us\n"
                "    when: {env: {REGION: 'us-*'}, config: {chunk_size: 256}}\n"
                "    defaults: {save_unfull_chunk: true}\n"
            ),
            "apps/c.yaml": "",
        },
        True,
    ),
    # Only the fragment changes: a's file is reused, its answer must still change.
    ("fragment only", {"profiles/p.yaml": "defaults: {max_local_cpu_size: 16.0}\n"}, True),
    # Same bytes at a new path; a rule edited.
    (
        "twin and rule",
        {
            "apps/twin.yaml": "include: [profiles/p.yaml]\noverrides: {chunk_size: 512}\n",
            "apps/b.yaml": (
                "overrides: {extra_config: {tier: silver}}\n"
                "rules:\n"
                "  - name: us\n"
                "    when: {env: {REGION: 'eu-*'}}\n"
                "    defaults: {save_unfull_chunk: true}\n"
            ),
        },
        True,
    ),
    ("broken global", {"global.yaml": "defaults: {chunk_sise: 1}\n"}, False),
    (
        # Workers asked for c (the answers compared below): its removal says it is meant.
        "fixed global, c removed\n\nRemoves-Apps: c",
        {"global.yaml": "defaults: {chunk_size: 128}\n", "apps/c.yaml": None},
        True,
    ),
    # Back to an earlier content: every file parsed before the break is reused.
    ("fragment back", {"profiles/p.yaml": "defaults: {max_local_cpu_size: 8.0}\n"}, True),
]


async def _answers(server: RunningServer) -> list[tuple[int, Any]]:
    return [await server.config(app_id, body=body) for app_id in APP_IDS for body in BODIES]


async def test_incremental_builds_answer_exactly_like_cold_builds(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    running: RunningServer | None = None
    previous_config_set = None
    for generation, (name, changes, good) in enumerate(GENERATIONS):
        for relative, text in changes.items():
            if text is None:
                repo.remove(relative)
            else:
                repo.write(relative, text)
        sha = repo.commit(name)
        if running is None:
            running = await start_server(repo.path)
        else:
            record = await running.syncer.sync(SyncTrigger.POLL)
            assert record.result == ("updated" if good else "rejected"), name
        if not good:
            assert running.served_sha != sha
            continue
        assert running.served_sha == sha

        cold = await start_server(repo.path, data_dir=tmp_path / f"cold-{generation}")
        assert cold.served_sha == sha
        assert await _answers(running) == await _answers(cold), name
        await cold.client.close()

        snapshot = running.app[SNAPSHOTS].current
        assert snapshot is not None  # it serves sha, checked above
        config_set = snapshot.config_set
        if name == "fragment only":
            # The incremental path was taken: unchanged files are the very same objects.
            assert previous_config_set is not None
            assert config_set.apps["a"] is previous_config_set.apps["a"]
            assert config_set.apps["b"] is previous_config_set.apps["b"]
            assert config_set.global_file is previous_config_set.global_file
            assert (
                config_set.fragments["profiles/p.yaml"]
                is not (previous_config_set.fragments["profiles/p.yaml"])
            )
        if name == "twin and rule":
            # Same bytes, another path: parsed for its own path, not shared.
            assert config_set.apps["twin"] is not config_set.apps["a"]
            assert config_set.apps["twin"].path == "apps/twin.yaml"
        previous_config_set = config_set


# -- request bodies ---------------------------------------------------------------------

PLAIN_AND_RULED = {
    "apps/plain.yaml": "overrides: {chunk_size: 512}\n",
    "apps/ruled.yaml": (
        "rules:\n"
        "  - name: h100\n"
        "    when: {env: {GPU_TYPE: 'H100*'}}\n"
        "    overrides: {chunk_size: 1024}\n"
    ),
}

MALFORMED = [
    b"{",
    b"[]",
    b'"a string"',
    b'{"env_variables": {}} trailing',
    b'{"env_variables": []}',
    b'{"current_config": 5}',
    b"\xff\xfe{}",
    b'{"env_variables": {"A": 1}}',
]

# Bodies orjson refuses that the stdlib parser accepted before: still answered.
STDLIB_ONLY = [
    b'{"current_config": {"hit_miss_ratio": NaN}, "env_variables": {}}',
    b'{"current_config": {"chunk_size": 100000000000000000000000}, "env_variables": {}}',
    b'{"current_config": {}, "env_variables": {"ODD": "\\udcff"}}',
]


@pytest.mark.parametrize("app_id", ["plain", "ruled"])
async def test_malformed_bodies_are_rejected_whether_or_not_rules_read_them(
    tmp_path: Path, start_server: ServerFactory, app_id: str
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(PLAIN_AND_RULED, "apps")
    server = await start_server(repo.path)
    headers = {"Content-Type": "application/json"}
    for raw in MALFORMED:
        response = await server.client.get(
            "/config", params={"appId": app_id}, data=raw, headers=headers
        )
        assert response.status == 400, raw
        assert (await response.json())["error"]["code"] == "malformed_body", raw

    _, expected = await server.config(app_id)
    for raw in STDLIB_ONLY:
        response = await server.client.get(
            "/config", params={"appId": app_id}, data=raw, headers=headers
        )
        assert response.status == 200, raw
        assert await response.json() == expected, raw
