"""The data dir lock: one server per directory, told at once; free again once released."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.base.errors import SettingsError
from server.git.data_dir import DataDirLock


def test_a_second_holder_is_refused_at_once_and_may_take_it_once_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "lock"
    first, second = DataDirLock(path), DataDirLock(path)
    first.acquire()  # creates the data dir
    with pytest.raises(SettingsError) as refused:
        second.acquire()
    assert str(refused.value) == (
        f"data dir {tmp_path / 'data'} is in use by another server process; "
        "give each server its own --data-dir"
    )
    # Released from another thread than the one that took it: still released.
    releaser = threading.Thread(target=first.release)
    releaser.start()
    releaser.join()
    assert path.exists()  # left in place: a waiter and a newcomer share one file
    second.acquire()
    with pytest.raises(SettingsError, match="in use"):
        first.acquire()
    second.release()
    second.release()  # twice is harmless


def test_a_data_dir_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    in_the_way = tmp_path / "file"
    in_the_way.write_text("")
    with pytest.raises(SettingsError, match="is a file, not a directory"):
        DataDirLock(in_the_way / "lock").acquire()
