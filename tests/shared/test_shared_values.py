"""The values of ``server/shared/``: rows, the buffer, heartbeats, names and the settings."""

from __future__ import annotations

import pytest

from server.base.clock import rfc3339
from server.base.errors import SettingsError
from server.ops.fleet import FleetTable, Sighting
from server.settings import Settings, check_settings
from server.shared.health import Health
from server.shared.peers import Heartbeat
from server.shared.rows import SightingBuffer, decode_row, encode_row
from server.shared.target import fleet_namespace, replica_name


def sighting(instance: str, seen_at: float = 100.0) -> Sighting:
    return Sighting("app", instance, (("HOSTNAME", "gpu-1"),), "10.0.0.1", "a" * 40, seen_at, "r1")


def test_a_row_round_trips_and_a_bad_one_is_refused() -> None:
    row = sighting("w1")
    assert decode_row(encode_row(row)) == row
    for bad in ("", "[]", '{"a": 1}', '["app", 1, [], null, "c", 1.0, "r"]', "[1,2,3,4,5,6,7]"):
        assert decode_row(bad) is None


def test_only_what_the_fleet_table_keeps_reaches_a_row() -> None:
    table = FleetTable(capacity=10, env_allow_list=["HOSTNAME"])
    table.replica = "r1"
    sent: list[Sighting] = []
    table.on_sighting = sent.append
    table.record(
        app_id="app",
        env={"HOSTNAME": "gpu-1", "API_KEY": "planted-secret"},
        instance_id="w1",
        peer="10.0.0.1",
        commit="a" * 40,
        now=1.0,
    )
    (row,) = sent
    assert row.replica == "r1"
    assert "planted-secret" not in encode_row(row)


def test_the_buffer_keeps_the_latest_per_worker_and_counts_what_it_drops() -> None:
    buffer = SightingBuffer(2)
    buffer.offer(sighting("w1", 1.0))
    buffer.offer(sighting("w1", 2.0))  # the same worker: replaced, not counted
    buffer.offer(sighting("w2"))
    buffer.offer(sighting("w3"))  # full
    assert (len(buffer), buffer.dropped) == (2, 1)
    taken = buffer.take()
    assert [s.seen_at for _, s in taken] == [2.0, 100.0]
    assert len(buffer) == 0


def test_heartbeats_decode_and_flag_behind_and_stale() -> None:
    beat = Heartbeat(
        replica="r2", serving="b" * 40, tip=None, last_success_at=1.0, sync_stale=False,
        heartbeat_at=100.0,
    )  # fmt: skip
    assert Heartbeat.decode(beat.encode()) == beat
    assert Heartbeat.decode("{}") is None
    shown = beat.as_json(served="a" * 40, now=107.0, interval=2.0, own="r1")
    assert (shown["behind"], shown["stale"], shown["self"]) == (True, True, False)
    assert not beat.as_json(served="b" * 40, now=105.0, interval=2.0, own="r2")["stale"]


def test_names() -> None:
    assert replica_name("", {"POD_NAME": "pod-1"}, "host", 8088) == "pod-1:8088"
    assert replica_name("", {}, "host", 8088) == "host:8088"
    assert replica_name("given", {"POD_NAME": "pod-1"}, "host", 8088) == "given"
    assert fleet_namespace("git://a/b", "main", "") != fleet_namespace("git://a/c", "main", "")
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_errors_are_shown_without_the_password() -> None:
    health = Health("file-password-123")
    health.failed("heartbeat", OSError("auth file-password-123 at redis://u:url-pass-456@h:1"))
    assert health.error is not None
    assert "file-password-123" not in health.error
    assert "url-pass-456" not in health.error
    assert health.as_json()["unavailable_since"] is not None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": "http://h:1"}, "must be a redis://"),
        ({"redis": "redis://:p@h:1", "redis_password_file": "/f"}, "not both"),
        ({"redis_password_file": "/f"}, "needs --redis"),
        ({"redis": "redis://h", "redis_interval": 0.0}, "--redis-interval"),
    ],
)
def test_redis_settings_are_checked(values: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        check_settings(Settings(repo="/r", **values))  # type: ignore[arg-type]
    assert ":p@" not in str(raised.value)
