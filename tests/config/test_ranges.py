"""Values in range: sizes, counts, timeouts, ports, text and lengths LMCache can use."""

from __future__ import annotations

import fnmatch
import json
import textwrap

import pytest

from server.config.limits import bundled_ranges, parse_ranges
from server.config.loader import load_config_set
from server.config.schema import SchemaChoice, bundled_schema, bundled_versions
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory


def problems(text: str, versions: str = "") -> list[str]:
    head = f"lmcache_versions: [{versions}]\n" if versions else ""
    files = {"apps/x.yaml": textwrap.dedent(text).lstrip("\n").encode()}
    if head:
        files["global.yaml"] = head.encode()
    config_set, issues = load_config_set(files, SchemaChoice())
    assert (config_set is None) == bool(issues)
    return [str(issue) for issue in issues]


PORT = "a TCP port is 1 to 65535"
PATH = "a file system path never holds one, and a NUL cuts it short"
URL = "a URL never holds one, and LMCache uses it as written"

# (a line under "defaults:" in apps/x.yaml, the error: every one at line 2).
ABSURD = {
    "chunk_size 0": (
        "chunk_size: 0",
        "apps/x.yaml:2:15: error: 'chunk_size' must be at least 1 (LMCache splits the KV cache "
        "into chunks of this many tokens): got 0",
    ),
    "chunk_size negative": (
        "chunk_size: -256",
        "apps/x.yaml:2:15: error: 'chunk_size' must be at least 1 (LMCache splits the KV cache "
        "into chunks of this many tokens): got -256",
    ),
    "cpu cache negative": (
        "max_local_cpu_size: -1",
        "apps/x.yaml:2:23: error: 'max_local_cpu_size' must be at least 0 (the CPU cache size, "
        "in GB): got -1",
    ),
    "disk cache negative": (
        "max_local_disk_size: -0.5",
        "apps/x.yaml:2:24: error: 'max_local_disk_size' must be at least 0 (the disk cache size, "
        "in GB): got -0.5",
    ),
    "min_retrieve_tokens negative": (
        "min_retrieve_tokens: -1",
        "apps/x.yaml:2:24: error: 'min_retrieve_tokens' must be at least 0 (a number of tokens; "
        "LMCache's own validate() refuses a negative one): got -1",
    ),
    "timeout 0": (
        "lookup_timeout_ms: 0",
        "apps/x.yaml:2:22: error: 'lookup_timeout_ms' must be at least 1 (a timeout in "
        "milliseconds: 0 would give up at once): got 0",
    ),
    "pd timeout 0": (
        "pd_allocation_timeout_sec: 0",
        "apps/x.yaml:2:30: error: 'pd_allocation_timeout_sec' must be more than 0 (a timeout in "
        "seconds: 0 would give up at once): got 0",
    ),
    "port 0": (
        "mp_port: 0",
        f"apps/x.yaml:2:12: error: 'mp_port' must be at least 1 ({PORT}): got 0",
    ),
    "port too big": (
        "pd_proxy_port: 65536",
        f"apps/x.yaml:2:18: error: 'pd_proxy_port' must be at most 65535 ({PORT}): got 65536",
    ),
    "port in a list": (
        "lmcache_worker_ports: [8000, 70000]",
        "apps/x.yaml:2:25: error: item 1 of 'lmcache_worker_ports' must be at most 65535 "
        f"({PORT}): got 70000",
    ),
    "port 0 in a list": (
        "p2p_init_ports: [0]",
        f"apps/x.yaml:2:19: error: item 0 of 'p2p_init_ports' must be at least 1 ({PORT}): got 0",
    ),
    "empty worker ports": (
        "lmcache_worker_ports: []",
        "apps/x.yaml:2:25: error: 'lmcache_worker_ports' must not be an empty list (the "
        "controller reaches each worker on its own port, so it needs one per worker): got []; "
        "leave the key out (or null) for none",
    ),
    "empty peer ports": (
        "pd_peer_init_port: []",
        "apps/x.yaml:2:22: error: 'pd_peer_init_port' must not be an empty list (a feature given "
        "a list of ports needs one per worker): got []; leave the key out (or null) for none",
    ),
    "NUL in remote_url": (
        'remote_url: "lm://cache:65432\\0"',
        f"apps/x.yaml:2:15: error: 'remote_url' must not contain control characters ({URL}): "
        "got U+0000 at character 17",
    ),
    "newline in a controller url": (
        'controller_pull_url: "tcp://ctl:8300\\nX-Forged: 1"',
        f"apps/x.yaml:2:24: error: 'controller_pull_url' must not contain control characters "
        f"({URL}): got U+000A at character 15",
    ),
    "C1 control in local_disk": (
        'local_disk: "file:///cache\\x85"',
        "apps/x.yaml:2:15: error: 'local_disk' must not contain control characters (the disk "
        "cache's path never holds one, and a NUL cuts it short): got U+0085 at character 14",
    ),
    "line separator in a path": (
        'gds_path: "/mnt/gds\\u2028"',
        f"apps/x.yaml:2:13: error: 'gds_path' must not contain control characters ({PATH}): "
        "got U+2028 at character 9",
    ),
    "paragraph separator in a host": (
        'pd_peer_host: "10.0.0.1\\u2029"',
        "apps/x.yaml:2:17: error: 'pd_peer_host' must not contain control characters (a host "
        "name or address never holds one): got U+2029 at character 9",
    ),
    "escape in a host": (
        'internal_api_server_host: "\\e[31mlocalhost"',
        "apps/x.yaml:2:29: error: 'internal_api_server_host' must not contain control "
        "characters (a host name or address never holds one): got U+001B at character 1",
    ),
    "long string": (
        f"lmcache_instance_id: {'x' * 5000}",
        "apps/x.yaml:2:24: error: 'lmcache_instance_id' must be at most 4096 bytes (no LMCache "
        "setting needs a longer value): got 5000 bytes",
    ),
    "long path in a list": (
        f"runtime_plugin_locations: [/ok, /{'p' * 4096}]",
        "apps/x.yaml:2:29: error: item 1 of 'runtime_plugin_locations' must be at most 4096 "
        "bytes (no LMCache setting needs a longer value): got 4097 bytes",
    ),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_an_absurd_value_is_rejected_with_its_reason_and_line(case: str) -> None:
    line, message = ABSURD[case]
    assert problems(f"defaults:\n  {line}\n") == [message]


@pytest.mark.parametrize("case", ["chunk_size 0", "port in a list", "NUL in remote_url"])
def test_ranges_hold_under_declared_versions_too(case: str) -> None:
    line, message = ABSURD[case]
    found = problems(f"defaults:\n  {line}\n", versions='"0.4.1", "0.5.6"')
    assert found == [message]


def test_a_big_extra_config_is_rejected() -> None:
    # A 300 KB string inside extra_config: under the 1 MB file limit, far over 64 KB as JSON.
    blob = "x" * (300 * 1024)
    found = problems(f"overrides:\n  extra_config:\n    blob: {blob}\n")
    size = len(json.dumps({"blob": blob}, separators=(",", ":")))
    assert found == [
        "apps/x.yaml:3:5: error: 'extra_config' must be at most 65536 bytes as JSON (extra_config "
        f"is sent to every worker at every start): got {size} bytes"
    ]
    # ...and just over 64 KB in many small values.
    many = "".join(f"    k{index}: {'v' * 60}\n" for index in range(1100))
    assert problems(f"overrides:\n  extra_config:\n{many}")[0].startswith(
        "apps/x.yaml:3:5: error: 'extra_config' must be at most 65536 bytes as JSON"
    )
    # A 300 KB extra_config written as a string is not a mapping at all.
    assert problems(f"overrides:\n  extra_config: '{blob}'\n") == [
        "apps/x.yaml:2:17: error: 'extra_config' must be a mapping, got string"
    ]


def test_values_at_the_edges_are_accepted() -> None:
    assert (
        problems(
            """
            defaults:
              chunk_size: 1
              max_local_cpu_size: 0
              max_local_disk_size: 0.0
              min_retrieve_tokens: 0
              mp_port: 65535
              pd_proxy_port: 1
              lmcache_worker_ports: [1, 65535]
              lmcache_worker_ids: null
              remote_url: "lm://cache:65432/path?x=1\\u00e9"
              lmcache_instance_id: "{instance}"
              pd_allocation_timeout_sec: 0.001
            overrides:
              extra_config: {{note: "{note}"}}
            """.format(instance="i" * 4096, note="n" * 60000)
        )
        == []
    )


def test_conditions_match_out_of_range_values() -> None:
    # A condition matches what a worker sends, so it is checked for type only.
    text = """
        rules:
          - name: broken-workers
            when: {config: {chunk_size: 0}}
            overrides: {chunk_size: 256}
    """
    assert problems(text) == []


def test_every_row_of_the_ranges_file_matches_a_field() -> None:
    every = set().union(*(bundled_schema(v).fields for v in bundled_versions()))
    for row in bundled_ranges():
        assert fnmatch.filter(every, row.field), row.field


def test_a_malformed_ranges_file_is_refused() -> None:
    header = "field\tversions\tmin\tmax\tnon_empty\tmax_length\tplain_text\treason\n"
    with pytest.raises(ValueError, match="not a number"):
        parse_ranges(header + "chunk_size\t*\tone\t\t\t\t\twhy\n")
    with pytest.raises(ValueError, match="header"):
        parse_ranges("field\tmin\n")
    rows = parse_ranges(header + "chunk_size\t0.4.1..0.4.7\t2\t\t\t\t\told rule\n")
    assert rows[0].applies("chunk_size", "0.4.5")
    assert not rows[0].applies("chunk_size", "0.5.0")


async def test_server_rejects_an_absurd_value_with_its_reason(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    good = config_repo.head()
    config_repo.commit_files({"apps/test-app.yaml": "overrides:\n  lmcache_worker_ports: []\n"})
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "rejected"
    errors = (await server.status())["last_rejected"]["errors"]
    assert errors == [
        "apps/test-app.yaml:2:25: error: 'lmcache_worker_ports' must not be an empty list (the "
        "controller reaches each worker on its own port, so it needs one per worker): got []; "
        "leave the key out (or null) for none"
    ]
    assert server.served_sha == good
