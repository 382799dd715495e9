"""deploy/: the manifests, unit and container file agree with the server they run.

No cluster, container engine or systemd here: these tests parse the files and
check them against the server's own settings, flags and endpoints, so a
renamed setting or a changed default breaks a test instead of a rollout.
"""

from __future__ import annotations

import configparser
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import yaml

from server.cli.main import build_parser
from server.settings import (
    SETTING_FIELDS,
    Settings,
    env_var_name,
    load_settings_file,
    settings_from,
)
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SETTING_ENV_VARS = {env_var_name(field.name) for field in SETTING_FIELDS}
DEFAULTS = Settings()


def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"], path
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


def server_container() -> dict[str, Any]:
    deployment = k8s_documents()[("Deployment", "lmcache-config-server")]
    container: dict[str, Any]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_deployment_has_three_replicas_and_probes_on_the_server_endpoints() -> None:
    deployment = k8s_documents()[("Deployment", "lmcache-config-server")]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    container = server_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": DEFAULTS.port}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == DEFAULTS.port
    # preStop + shutdown timeout + git timeout fit in the grace period.
    settings = deployed_settings()
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + settings.shutdown_timeout + settings.git_timeout < grace


def deployed_settings() -> Settings:
    """The settings the Deployment's container would start with."""
    container = server_container()
    configmap = k8s_documents()[("ConfigMap", "lmcache-config-server")]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_file = container["args"][container["args"].index("--config-file") + 1]
    assert mounts[config_file]["subPath"] == "settings.yaml"
    env = {item["name"]: "from-a-secret" for item in container.get("env", [])}
    assert set(env) <= SETTING_ENV_VARS
    return Settings(**load_configmap_settings(configmap))


def load_configmap_settings(configmap: dict[str, Any]) -> dict[str, Any]:
    # Through the server's own loader: unknown keys or wrong types fail here.
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "settings.yaml"
        path.write_text(configmap["data"]["settings.yaml"])
        return load_settings_file(str(path))


def test_configmap_settings_load_and_match_the_mounts() -> None:
    settings = deployed_settings()
    assert (settings.host, settings.port, settings.log_format) == ("0.0.0.0", DEFAULTS.port, "json")
    assert settings.repo.startswith("https://")
    assert "@" not in settings.repo  # credentials come from git_token_file, not the URL
    container = server_container()
    deployment = k8s_documents()[("Deployment", "lmcache-config-server")]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[settings.data_dir]]  # one data dir per pod
    documented = documented_secrets()
    for path in (settings.git_token_file, settings.webhook_secret_file, settings.auth_file):
        directory, key = path.rsplit("/", 1)
        secret_name = volumes[mounts[directory]]["secret"]["secretName"]
        assert key in documented[secret_name]


def documented_secrets() -> dict[str, set[str]]:
    """The Secrets deploy/kubernetes/README.md creates (`kubectl create secret`), and their keys."""
    text = (K8S / "README.md").read_text().replace("\\\n", " ")
    secrets: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.startswith("kubectl create secret generic "):
            continue
        argv = shlex.split(line)
        keys = {
            arg.split("=", 2)[1]
            for arg in argv
            if arg.startswith(("--from-file=", "--from-literal=")) and arg.count("=") >= 2
        }
        secrets[argv[4]] = keys
    return secrets


def test_no_secret_in_the_base_and_each_mounted_one_is_documented() -> None:
    # An apply of the base must never overwrite real Secrets with placeholders.
    documents = k8s_documents()
    assert not [name for kind, name in documents if kind == "Secret"]
    deployment = documents[("Deployment", "lmcache-config-server")]
    secrets = [
        volume["secret"]["secretName"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    ]
    assert len(secrets) == 3
    documented = documented_secrets()
    for name in secrets:
        assert documented[name], name
    for item in server_container().get("env", []):
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["key"] in documented[ref["name"]]


def test_service_targets_the_server_port() -> None:
    service = k8s_documents()[("Service", "lmcache-config-server")]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["port"] == DEFAULTS.port
    template_labels = k8s_documents()[("Deployment", "lmcache-config-server")]["spec"]["template"][
        "metadata"
    ]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()


def test_every_variable_named_in_deploy_is_a_setting() -> None:
    named = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"LMCACHE_CONFIG_SERVER_[A-Z_]+[A-Z]", path.read_text()))
    assert named
    assert named <= SETTING_ENV_VARS, named - SETTING_ENV_VARS


def test_example_settings_file_loads() -> None:
    values = load_settings_file(str(DEPLOY / "settings.example.yaml"))
    assert values["port"] == DEFAULTS.port
    assert values["log_format"] == "json"


def test_systemd_install_steps_create_every_file_the_example_settings_name() -> None:
    """Followed literally, the unit's install steps start a server: every /etc file its
    settings name exists (an auth_file that is not there stops startup with exit 2)."""
    values = load_settings_file(str(DEPLOY / "settings.example.yaml"))
    unit = (DEPLOY / "systemd" / "lmcache-config-server.service").read_text()
    steps = [line for line in unit.splitlines() if line.startswith("#   install ")]
    created = {line.split()[-1] for line in steps}
    named = {v for v in values.values() if isinstance(v, str) and v.startswith("/etc/")}
    assert "/etc/lmcache-config-server/settings.yaml" in created
    assert named <= created, named - created
    # Auth stays one uncommented line away, with the steps that make its file.
    example = (DEPLOY / "settings.example.yaml").read_text()
    assert "# auth_file: /etc/lmcache-config-server/auth.yaml" in example
    assert "hash-token" in example


class CaseKeepingParser(configparser.ConfigParser):
    """An INI parser that keeps keys as written (ConfigParser lowercases them)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def test_systemd_unit_runs_a_valid_command() -> None:
    unit = CaseKeepingParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "lmcache-config-server.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "lmcache-config-server"
    # The unit's flags, with the example settings file standing in for /etc's.
    argv = [
        str(DEPLOY / "settings.example.yaml") if arg.startswith("/etc/") else arg
        for arg in argv[1:]
    ]
    settings = settings_from(build_parser().parse_args(argv), {})
    assert settings.repo.startswith("https://")
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > settings.shutdown_timeout + settings.git_timeout
    assert "/var/lib/" + service["StateDirectory"] == settings.data_dir


def test_containerfile_matches_the_server() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert f"EXPOSE {DEFAULTS.port}" in text
    assert f"127.0.0.1:{DEFAULTS.port}/healthz" in text
    assert 'ENTRYPOINT ["lmcache-config-server", "serve"]' in text
    assert "STOPSIGNAL SIGTERM" in text
    # The files the image copies exist.
    for source in re.findall(r"^COPY (.+) /src/?\S*$", text, flags=re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), name
