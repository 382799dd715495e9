"""Reloaded files on their own: one outcome per change, the old value kept when a new one fails."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.base.reloading import ReloadedFile, Watched, WatchedDirectory, dir_stamp, file_stamp
from server.base.secret_file import read_secret_file
from tests.support.mounted_secret import MountedSecret


def apply_change(watched: Watched) -> None:
    change = watched.poll()
    assert change is not None, "the change was not seen"
    change()


def test_each_change_is_taken_or_refused_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    mount = MountedSecret(tmp_path / "mount", {"token": "one\n"})
    reloaded = ReloadedFile(
        setting="token_file",
        path=mount.file("token"),
        load=lambda path: read_secret_file(path, "--token-file"),
    )
    assert reloaded.current.value == "one"
    assert reloaded.poll() is None

    # The kubelet's swap changes neither the key's path nor its symlink: its target does.
    mount.update({"token": "two\n"})
    apply_change(reloaded)
    assert reloaded.current.value == "two"
    assert reloaded.poll() is None

    mount.update({"token": "\n"})
    apply_change(reloaded)
    assert reloaded.current.value == "two"
    assert reloaded.status.error == f"--token-file {mount.file('token')} is empty"
    since = reloaded.status.error_since
    assert since is not None
    for _ in range(3):
        assert reloaded.poll() is None  # said once, not at every poll
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1

    mount.update({"token": "three\n"})
    apply_change(reloaded)
    assert reloaded.current.value == "three"
    fixed = reloaded.status
    assert (fixed.error, fixed.error_since) == (None, None)
    assert "two" not in caplog.text
    assert "three" not in caplog.text


def test_a_file_written_in_place_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    reloaded = ReloadedFile(
        setting="token_file", path=str(path), load=lambda p: read_secret_file(p, "--token-file")
    )
    path.write_text("a longer one")
    apply_change(reloaded)
    assert reloaded.current.value == "a longer one"
    path.unlink()
    apply_change(reloaded)
    assert reloaded.current.value == "a longer one"
    assert "cannot read" in str(reloaded.status.error)
    assert reloaded.poll() is None


def test_an_unexpected_loader_error_keeps_the_old_value(tmp_path: Path) -> None:
    path = tmp_path / "number"
    path.write_text("1")
    reloaded = ReloadedFile(
        setting="number_file", path=str(path), load=lambda p: int(Path(p).read_text())
    )
    path.write_text("not a number")
    apply_change(reloaded)
    assert reloaded.current.value == 1
    assert reloaded.status.error == "unexpected ValueError"


def test_a_secrets_directory_swap_is_one_change(tmp_path: Path) -> None:
    mount = MountedSecret(tmp_path / "secrets", {"a": "1", "b": "2"})
    seen: list[str] = []
    directory = WatchedDirectory(setting="secrets_dir", path=str(mount.path))
    directory.listeners.append(lambda: seen.append("changed"))
    stamp = dir_stamp(str(mount.path))
    assert stamp is not None
    assert [name for name, _ in stamp] == ["a", "b"]  # not ..data, ..data_tmp, ..2026_...
    assert directory.poll() is None
    mount.update({"a": "1", "b": "3"})
    apply_change(directory)
    assert seen == ["changed"]
    assert directory.poll() is None
    assert file_stamp(str(tmp_path / "nothing-here")) is None
