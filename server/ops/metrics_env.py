"""Where prometheus_client's multiprocess mode keeps this run's files (``--workers N``).

prometheus_client picks its storage when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``. So the command line calls
:func:`prepare_metrics_dir` before anything imports prometheus_client; this
module must therefore never import it itself (a check in ``make lint`` holds
the CLI to that order).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..base.errors import SettingsError
from ..git.data_dir import data_dir_problem

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(metrics_root: Path, processes: int) -> None:
    """Point prometheus_client's multiprocess mode at a directory of this run's own.

    The directory is per leader pid, so a second server that is refused the
    data dir lock cannot disturb the running one's files; the leader deletes
    older runs' directories once it holds the lock.
    """
    if processes < 2:
        # One process counts in memory, whatever the environment says.
        os.environ.pop(METRICS_ENV, None)
        return
    # Always a directory of our own, never an inherited one: it is deleted on stop.
    run_dir = metrics_root / f"run-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the data dir's first write with --workers: the same causes
        raise SettingsError(data_dir_problem(metrics_root.parent, exc)) from None
    os.environ[METRICS_ENV] = str(run_dir)


def metrics_dir_in_use() -> Path:
    path = os.environ.get(METRICS_ENV)
    if not path:
        raise SettingsError("--workers above 1 is set up by the command line: run `serve`")
    return Path(path)


def remove_old_metrics(current: Path) -> None:
    """Delete the directories of earlier runs (only while holding the data dir lock)."""
    for old in current.parent.glob("run-*"):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
