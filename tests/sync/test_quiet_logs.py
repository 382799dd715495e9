"""Log and record what changed; one event, one line; JSON events carry ``message``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from server.base.logs import JsonFormatter, TextFormatter, log_event
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory


async def test_polls_that_change_nothing_are_counted_not_recorded_or_logged(
    tmp_path: Path, start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files({"apps/a.yaml": "overrides: {chunk_size: 512}\n"})
    server = await start_server(repo.path)
    caplog.set_level(logging.INFO, logger="server.sync")
    for _ in range(5):
        assert (await server.syncer.sync(SyncTrigger.POLL)).result == "unchanged"
    bad = repo.commit_files({"apps/a.yaml": "overrides: {chunk_sise: 1}\n"})
    for _ in range(4):
        assert (await server.syncer.sync(SyncTrigger.POLL)).result == "rejected"

    recent = (await server.status())["recent_syncs"]
    assert [(r["result"], r["repeats"]) for r in recent] == [
        ("rejected", 3),  # newest first: rejected once, then "still rejected" three times
        ("unchanged", 4),
        ("updated", 0),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "server.sync"]
    assert sum("result=unchanged" in line for line in lines) == 1
    assert sum("result=rejected" in line for line in lines) == 1
    (rejection,) = [line for line in lines if line.startswith("rejected ")]
    assert "\n" not in rejection
    assert f"commit={bad[:12]}" in rejection
    assert "unknown LMCache config key 'chunk_sise'" in rejection


def test_json_events_have_a_message_and_lists_stay_lists() -> None:
    logger = logging.getLogger("test.events")
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(
            logger,
            logging.ERROR,
            "rejected",
            {"commit": "abc123", "errors": ["a.yaml:1:1: error: x\nforged line", "b"]},
        )
    finally:
        logger.removeHandler(handler)
    (record,) = captured
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "rejected"
    assert line["commit"] == "abc123"
    assert line["errors"] == ["a.yaml:1:1: error: x\nforged line", "b"]
    assert line["message"].startswith("rejected commit=abc123 errors=")
    text = TextFormatter().format(record)
    assert "\n" not in text  # the newline inside an error is escaped: no forged line
