"""A build runs with the served snapshot, and what it parsed so far, frozen.

At 10,000 apps, full collections walking the served snapshot were 0.3-0.45 s of
a one-file rebuild (``server.base.collector``); ``make bench`` has the figures.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from server.base.collector import FROZEN_BUILDS_IN_A_ROW
from server.config.loader import RepoLimits
from server.config.parse_memo import ParseMemo
from server.config.snapshot import Snapshot
from server.git.mirror import GitMirror, MirrorReader
from server.sync.builder import SnapshotBuilder
from server.sync.secrets import SecretSource
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import BASIC_APP, BASIC_GLOBAL


def builder_of(
    repo: ConfigRepo, mirror_path: Path, between_files: Callable[[], None] | None = None
) -> tuple[GitMirror, SnapshotBuilder]:
    """A mirror of ``repo``, fetched, and the server's builder on it (caches empty)."""
    mirror = GitMirror(remote=str(repo.path), path=mirror_path, ref="main", timeout=30)
    mirror.ensure()
    mirror.fetch()
    builder = SnapshotBuilder(
        mirror=mirror,
        reader=MirrorReader(mirror, parse_memo=ParseMemo(), between_files=between_files),
        subdir="",
        limits=RepoLimits(),
        secrets=SecretSource(""),
    )
    builder.prepare()
    return mirror, builder


def test_a_build_freezes_what_exists_and_what_it_made_and_leaves_nothing_frozen(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    # Frozen objects, counted each time the build is about to read a file.
    frozen_at_each_file: list[int] = []
    mirror, builder = builder_of(
        config_repo,
        tmp_path / "mirror.git",
        between_files=lambda: frozen_at_each_file.append(gc.get_freeze_count()),
    )
    served = builder.build(mirror.resolve())
    assert isinstance(served, Snapshot)
    assert gc.get_freeze_count() == 0
    # The first build is cold: what it made before each file was frozen before the next
    # (the first file's parse made objects, so the count grew)...
    assert len(frozen_at_each_file) == 2
    assert frozen_at_each_file[1] > frozen_at_each_file[0]
    # ...and walked once at its end, so no garbage it froze is left behind.
    assert gc.collect() < 50

    gc.collect()
    tracked_while_served = len(gc.get_objects())
    config_repo.commit_files({"apps/test-app.yaml": BASIC_APP.replace("512", "768")})
    mirror.fetch()
    frozen_at_each_file.clear()
    rebuilt = builder.build(mirror.resolve())
    assert isinstance(rebuilt, Snapshot)
    assert rebuilt.commit.sha != served.commit.sha
    assert len(frozen_at_each_file) == 2  # global.yaml and the app file were read
    # The served snapshot (among all that existed) was frozen for the whole build, and
    # what the rebuild made was left to the collector's usual accounting...
    assert frozen_at_each_file[0] >= tracked_while_served
    assert frozen_at_each_file[1] == frozen_at_each_file[0]
    # ...and nothing is left frozen after it.
    assert gc.get_freeze_count() == 0


def cyclic_garbage_of_a_rebuild(tmp_path: Path, apps: int) -> int:
    """Objects that only the cycle collector could free, left by one one-file rebuild."""
    repo = ConfigRepo(tmp_path / f"repo-{apps}")
    files = {"global.yaml": "include: [fragments/base.yaml]\n", "fragments/base.yaml": BASIC_GLOBAL}
    files |= {f"apps/app-{index}.yaml": BASIC_APP for index in range(apps)}
    repo.commit_files(files, f"{apps} apps")
    mirror, builder = builder_of(repo, tmp_path / f"mirror-{apps}.git")
    assert isinstance(builder.build(mirror.resolve()), Snapshot)
    repo.commit_files({"apps/app-0.yaml": BASIC_APP.replace("512", "768")})
    mirror.fetch()
    gc.collect()
    gc.disable()
    try:
        assert isinstance(builder.build(mirror.resolve()), Snapshot)
        return gc.collect()
    finally:
        gc.enable()


def test_a_rebuild_leaves_no_cyclic_garbage_per_app(tmp_path: Path) -> None:
    """Freed by reference counting at once, not left for a full collection that walks the
    served snapshot: a recursive closure per app used to leave 9 such objects per app."""
    few, many = (
        cyclic_garbage_of_a_rebuild(tmp_path, 10),
        cyclic_garbage_of_a_rebuild(tmp_path, 210),
    )
    assert many - few < 50, (few, many)


def test_garbage_of_many_rebuilds_in_a_quiet_process_does_not_pile_up(
    config_repo: ConfigRepo, tmp_path: Path
) -> None:
    """GitPython leaves cycles behind each build, which only a full collection frees. With
    the served objects frozen in every build, a process that only rebuilds would keep
    them all; an unfrozen build every FROZEN_BUILDS_IN_A_ROW frees them."""
    mirror, builder = builder_of(config_repo, tmp_path / "mirror.git")
    builds = 4 * FROZEN_BUILDS_IN_A_ROW
    shas = [
        config_repo.commit_files({"apps/test-app.yaml": BASIC_APP.replace("512", str(value))})
        for value in range(520, 520 + 8 * (builds + 1), 8)
    ]
    mirror.fetch()  # nothing but the builds from here on: the quietest process there is
    assert isinstance(builder.build(shas[0]), Snapshot)
    gc.collect()
    gc.disable()
    try:
        assert isinstance(builder.build(shas[1]), Snapshot)
    finally:
        gc.enable()
    garbage_of_one = gc.collect()  # the cycles one rebuild leaves
    assert garbage_of_one > 0
    for sha in shas[2:]:
        assert isinstance(builder.build(sha), Snapshot)
    # At most FROZEN_BUILDS_IN_A_ROW builds' worth, and a build's own, wait for the next walk.
    # (Without the unfrozen builds, all 4x as many would: 3,410 objects against 880.)
    assert gc.collect() <= garbage_of_one * (FROZEN_BUILDS_IN_A_ROW + 1)
