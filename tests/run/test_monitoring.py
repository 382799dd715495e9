"""deploy/kubernetes/monitoring and deploy/grafana: checked by promtool, and against /metrics.

The PrometheusRule's groups go through the real ``promtool check rules`` and
``promtool test rules`` (Debian's ``prometheus`` package, ``make test-tools``);
every metric the rules and the dashboard name must be in a real server's
exposition, so the files cannot drift from the code.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from server import __version__
from server.config.schema import BUNDLED_VERSION
from server.sync.state import SyncTrigger
from tests.support.gitrepo import ConfigRepo
from tests.support.metrics import Samples, scrape, value
from tests.support.paths import ROOT
from tests.support.redis import RedisServer
from tests.support.servers import ServerFactory
from tests.support.webhooks import SECRET, github_headers, push_body

MONITORING = ROOT / "deploy" / "kubernetes" / "monitoring"
DASHBOARD = ROOT / "deploy" / "grafana" / "lmcache-config-server.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# What the rules and the dashboard may name: the server's own metrics and the standard ones.
METRIC_NAME = re.compile(r"\b(?:lmcache_config_|process_|python_)[a-zA-Z0-9_]+")
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool is not installed: run `make test-tools`")
    return found


def manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MONITORING / name).read_text())
    return document


def rules() -> list[dict[str, Any]]:
    groups = manifest("prometheusrule.yaml")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rules_file(directory: Path) -> Path:
    """The PrometheusRule's groups as the plain rules file promtool reads."""
    path = directory / "rules.yaml"
    groups = manifest("prometheusrule.yaml")["spec"]["groups"]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def run_promtool(*args: str) -> None:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-"))
    return anchors


def test_monitoring_is_kept_out_of_the_default_kustomization() -> None:
    # `kubectl apply -k deploy/kubernetes` must work without the Prometheus operator's CRDs.
    base = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    assert not any("monitoring" in resource for resource in base["resources"])
    kustomization = manifest("kustomization.yaml")
    assert set(kustomization["resources"]) == {path.name for path in MONITORING.glob("*.yaml")} - {
        "kustomization.yaml"
    }


def test_service_monitor_scrapes_metrics_with_a_token_from_a_secret() -> None:
    monitor = manifest("servicemonitor.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    service = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "service.yaml").read_text())
    base = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    # The base labels every object (the Service too) with what the monitor selects.
    common = {k: v for entry in base["labels"] for k, v in entry["pairs"].items()}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= common.items()
    # Each pod scraped once: every other Service of the base opts out (the headless one).
    (opt_out,) = monitor["spec"]["selector"]["matchExpressions"]
    assert opt_out["operator"] == "NotIn"
    scraped = [
        document["metadata"]["name"]
        for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and document["kind"] == "Service"
        if document["metadata"].get("labels", {}).get(opt_out["key"]) not in opt_out["values"]
    ]
    assert scraped == [service["metadata"]["name"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # --protect-metrics wants an admin token as a bearer token (docs/operations.md).
    assert endpoint["authorization"]["type"] == "Bearer"
    assert set(endpoint["authorization"]["credentials"]) == {"name", "key"}


def test_prometheus_rule_passes_promtool_check(tmp_path: Path) -> None:
    assert manifest("prometheusrule.yaml")["kind"] == "PrometheusRule"
    run_promtool("check", "rules", str(rules_file(tmp_path)))
    anchors = heading_anchors(OPERATIONS.read_text())
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts))
    for rule in rules():
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        # Each runbook is an entry of docs/operations.md's alert section.
        page, anchor = annotations["runbook_url"].rsplit("#", 1)
        assert page.endswith("/docs/operations.md"), rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, rule["alert"]


def expected_annotations(alert: str, labels: dict[str, str], value: str) -> dict[str, str]:
    """The rule's annotations rendered as Prometheus would, for its simple templates."""
    (rule,) = (rule for rule in rules() if rule.get("alert") == alert)
    rendered = {}
    for key, template in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], template)
        rendered[key] = text.replace("{{ $value }}", value)
    return rendered


def test_alerts_fire_from_synthetic_series(tmp_path: Path) -> None:
    rules_file(tmp_path)
    target = {"job": "lmcache-config-server", "namespace": "lmcache", "pod": "a"}
    series = ",".join(f'{key}="{value}"' for key, value in target.items())
    other = series.replace('pod="a"', 'pod="b"')
    stale_labels = {**target, "severity": "warning"}
    not_served_labels = {**target, "severity": "warning"}
    disagree_labels = {"job": target["job"], "namespace": target["namespace"]}
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # Stale from minute 2 on: the alert waits its 5m `for`.
                    {"series": f"lmcache_config_stale{{{series}}}", "values": "0 0 1x20"},
                    # Replica a's tip is rejected; b's too, but b is pinned (expected).
                    {"series": f"lmcache_config_tip_served{{{series}}}", "values": "0x30"},
                    {"series": f"lmcache_config_ready{{{series}}}", "values": "1x30"},
                    {"series": f"lmcache_config_pinned{{{series}}}", "values": "0x30"},
                    {"series": f"lmcache_config_tip_served{{{other}}}", "values": "0x30"},
                    {"series": f"lmcache_config_ready{{{other}}}", "values": "1x30"},
                    {"series": f"lmcache_config_pinned{{{other}}}", "values": "1x30"},
                    # a and b serve different commits throughout.
                    {
                        "series": f'lmcache_config_served_commit_info{{{series},commit="c1"}}',
                        "values": "1x30",
                    },
                    {
                        "series": f'lmcache_config_served_commit_info{{{other},commit="c2"}}',
                        "values": "1x30",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "LMCacheConfigStale", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "LMCacheConfigStale",
                        "exp_alerts": [
                            {
                                "exp_labels": stale_labels,
                                "exp_annotations": expected_annotations(
                                    "LMCacheConfigStale", target, ""
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "LMCacheConfigTipNotServed",
                        "exp_alerts": [
                            {
                                "exp_labels": not_served_labels,
                                "exp_annotations": expected_annotations(
                                    "LMCacheConfigTipNotServed", target, ""
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "LMCacheConfigReplicasDisagree",
                        "exp_alerts": [
                            {
                                "exp_labels": {**disagree_labels, "severity": "warning"},
                                "exp_annotations": expected_annotations(
                                    "LMCacheConfigReplicasDisagree", disagree_labels, "2"
                                ),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    run_promtool("test", "rules", str(path))


def exported_names(text: str) -> set[str]:
    """Every sample name the exposition can hold, from its TYPE lines (also of empty families)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            if kind == "counter":
                names.add(f"{name.removesuffix('_total')}_created")
    return names


def names_used() -> dict[str, set[str]]:
    used = {"prometheusrule.yaml": set[str]()}
    for rule in rules():
        used["prometheusrule.yaml"] |= set(METRIC_NAME.findall(rule["expr"]))
    dashboard = json.loads(DASHBOARD.read_text())
    used[DASHBOARD.name] = set(METRIC_NAME.findall(json.dumps(dashboard)))
    return used


def webhook_outcomes(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: count
        for (name, labels), count in samples.items()
        if name == "lmcache_config_webhooks_total" and dict(labels)["provider"] == "github"
    }


async def test_every_metric_the_files_name_is_exported(
    tmp_path: Path, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    redis = RedisServer(tmp_path)  # the shared-state metrics exist with --redis only
    redis.start()
    try:
        server = await start_server(
            config_repo.path, webhook_secret=SECRET, redis=redis.url, replica_name="one"
        )
        assert (await server.config("test-app"))[0] == 200
        body = push_body()
        headers = github_headers(body)
        deliveries = [
            (headers, body, 202),  # accepted
            (headers, body, 200),  # the same delivery again: a replay
            ({**github_headers(body), "X-Hub-Signature-256": "sha256=00"}, body, 401),
            (github_headers(push_body("refs/heads/other")), push_body("refs/heads/other"), 202),
        ]
        for sent, payload, status in deliveries:
            response = await server.client.post("/webhook/github", data=payload, headers=sent)
            assert response.status == status, await response.text()
        assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "unchanged"

        response = await server.client.get("/metrics")
        text = await response.text()
        samples = await scrape(server)
    finally:
        redis.kill()

    exported = exported_names(text)
    for file, used in names_used().items():
        assert used, file
        assert used <= exported, f"{file} names metrics /metrics lacks: {sorted(used - exported)}"

    # The standard collectors, and what is running.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert name in exported
    assert any(name.startswith("python_gc_") for name in exported)
    build = {"version": __version__, "python": platform.python_version()}
    assert (
        value(samples, "lmcache_config_server_build_info", **build, lmcache_schema=BUNDLED_VERSION)
        == 1
    )

    # Each sync observed the histogram, by trigger and result.
    histogram = "lmcache_config_sync_duration_seconds_count"
    assert value(samples, histogram, trigger="startup", result="updated") == 1
    assert value(samples, histogram, trigger="manual", result="unchanged") >= 1
    assert (
        value(
            samples, "lmcache_config_sync_duration_seconds_sum", trigger="startup", result="updated"
        )
        > 0
    )

    assert webhook_outcomes(samples) == {
        "accepted": 1,
        "replay": 1,
        "bad_signature": 1,
        "ignored_ref": 1,
    }

    # Timestamps where Prometheus convention wants them; the old gauges kept, deprecated.
    loaded = value(samples, "lmcache_config_snapshot_loaded_timestamp_seconds")
    synced = value(samples, "lmcache_config_last_successful_sync_timestamp_seconds")
    assert 0 < loaded <= synced
    assert "Deprecated" in text.split("# HELP lmcache_config_snapshot_age_seconds ")[1]
    help_line = text.split("# HELP lmcache_config_seconds_since_last_successful_sync ")[1]
    assert help_line.startswith("Deprecated")


@pytest.mark.parametrize("provider", ["github", "nowhere"])
async def test_refused_webhooks_are_counted(
    provider: str, config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)  # no webhook secret: webhooks are off
    body = push_body()
    response = await server.client.post(
        f"/webhook/{provider}", data=body, headers=github_headers(body)
    )
    expected = {
        "github": (403, "github", "disabled"),
        "nowhere": (404, "unknown", "unknown_provider"),
    }
    status, label, outcome = expected[provider]
    assert response.status == status
    samples = await scrape(server)
    assert value(samples, "lmcache_config_webhooks_total", provider=label, outcome=outcome) == 1
