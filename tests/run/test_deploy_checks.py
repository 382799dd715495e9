"""deploy/ checked by real tools: kustomize and the Kubernetes API schema, zizmor, the kernel.

The manifests are rendered the way `kubectl apply -k` renders them (the
Makefile's pinned kustomize, or `kubectl kustomize`), and every object is validated against the Kubernetes API's JSON
schema (kubernetes-validate, strict: an unknown field fails). The example
GitHub workflow goes through zizmor; the core-dump limit is read from a real
server process's /proc/<pid>/limits.
"""

from __future__ import annotations

import configparser
import re
import resource
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate.utils as kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.requirements import Requirement

from server.settings import SETTING_FIELDS, Settings, env_var_name
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT
from tests.support.procs import ServerProcess

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
TLS_OVERLAY = DEPLOY / "overlays" / "tls"
WORKFLOW = ROOT / "config-repo-example" / ".github" / "workflows" / "lmcache-config.yml"
# The oldest Kubernetes still commonly run, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate: checked by hand below.
CUSTOM_KINDS = {("cert-manager.io/v1", "Certificate")}
SERVER_LABELS = {
    "app.kubernetes.io/name": "lmcache-config-server",
    "app.kubernetes.io/component": "server",
}


# Installed by `make test-tools` (pinned; see the Makefile).
PINNED_KUSTOMIZE = ROOT / ".tools" / "bin" / "kustomize"


def kustomize_command() -> list[str]:
    """How to run kustomize here: the Makefile's pinned binary, else kubectl's built-in one."""
    if PINNED_KUSTOMIZE.exists():
        return [str(PINNED_KUSTOMIZE), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            f"kustomize is needed to render deploy/kubernetes: run `make test-tools` "
            f"(installs {PINNED_KUSTOMIZE.relative_to(ROOT)}), or put kubectl on PATH"
        )
    return [kubectl, "kustomize"]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would send."""
    rendered = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def the(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def validate_all(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(
                    f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {exc.message}"
                ) from None


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def with_tls() -> list[dict[str, Any]]:
    return kustomize(TLS_OVERLAY)


def test_the_rendered_base_passes_the_kubernetes_schema(base: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in base}
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    validate_all(base)


def test_the_schema_check_is_real(base: list[dict[str, Any]]) -> None:
    # A field the API does not have is refused: the validator above is not a no-op.
    deployment = the(base, "Deployment", "lmcache-config-server")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_the_base_renders_no_secret_and_no_placeholder(base: list[dict[str, Any]]) -> None:
    assert by_kind(base, "Secret") == []
    text = yaml.safe_dump_all(base)
    assert "REPLACE-ME" not in text
    assert not re.search(r"\b([0-9a-f])\1{63}\b", text)  # no all-zero (or all-one) token hash


def test_the_pod_gets_no_service_account_token(base: list[dict[str, Any]]) -> None:
    pod = the(base, "Deployment", "lmcache-config-server")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_the_network_policy_guards_the_server_port(base: list[dict[str, Any]]) -> None:
    policy = the(base, "NetworkPolicy", "lmcache-config-server")["spec"]
    deployment = the(base, "Deployment", "lmcache-config-server")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    for rule in policy["ingress"]:
        assert {port["port"] for port in rule["ports"]} <= port_names
        assert rule["from"]  # never "from anywhere"
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {53, 443, 22, 6379} <= egress_ports  # DNS, the git host (https, ssh), Redis


def test_the_headless_service_has_a_record_per_ready_pod(base: list[dict[str, Any]]) -> None:
    service = the(base, "Service", "lmcache-config-server-pods")["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is False
    assert service["selector"] == SERVER_LABELS
    (port,) = service["ports"]
    assert (port["port"], port["targetPort"]) == (Settings().port, "http")
    # The monitoring ServiceMonitor skips it (it would scrape every pod twice).
    labels = the(base, "Service", "lmcache-config-server-pods")["metadata"]["labels"]
    assert labels["lmcache-config-server/scrape"] == "false"


def test_the_tls_overlay_serves_https_from_cert_manager(with_tls: list[dict[str, Any]]) -> None:
    validate_all(with_tls)
    certificate = the(with_tls, "Certificate", "lmcache-config-server")["spec"]
    assert certificate["issuerRef"]["name"]
    assert all(name.startswith("lmcache-config-server") for name in certificate["dnsNames"])
    assert "server auth" in certificate["usages"]

    pod = the(with_tls, "Deployment", "lmcache-config-server")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    settings = {env_var_name(field.name): field.name for field in SETTING_FIELDS}
    assert set(env) <= set(settings)
    values = {settings[name]: value for name, value in env.items()}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for name, key in (("tls_cert", "tls.crt"), ("tls_key", "tls.key")):
        directory, file_name = values[name].rsplit("/", 1)
        assert file_name == key  # the keys cert-manager writes
        assert volumes[mounts[directory]]["secret"]["secretName"] == certificate["secretName"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert by_kind(with_tls, "Secret") == []


def test_the_example_workflow_passes_zizmor() -> None:
    zizmor = Path(sys.executable).parent / "zizmor"
    # --offline: no GitHub API; the pedantic persona is the strictest set of audits.
    result = subprocess.run(
        [str(zizmor), "--offline", "--persona=pedantic", "--no-progress", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_the_example_workflow_pins_actions_and_spares_forks_and_other_comments() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["validate-and-diff"]["steps"]
    for step in steps:
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    text = WORKFLOW.read_text()
    assert re.search(r"@[0-9a-f]{40}\s+# v\d+\.\d+\.\d+", text)  # the version beside each sha
    assert "--edit-last" not in text
    (comment,) = [step for step in steps if step.get("name") == "Comment on the pull request"]
    # A fork's pull request has a read-only token: the comment step does not run for it.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]


def test_the_containerfile_pins_its_base_and_dependencies() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    # An exact Python release (x.y.z) and Debian release, and the image's digest.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    assert "pip install --no-cache-dir -c /src/constraints.txt /src" in text
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        pinned = pins[requirement.name.lower()]
        assert requirement.specifier.contains(pinned), (requirement, pinned)


def test_the_systemd_unit_turns_core_dumps_off() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "lmcache-config-server.service")
    assert unit["Service"]["LimitCORE"] == "0"


def core_limits(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit line")


@pytest.fixture
def core_dumps_allowed() -> Iterator[None]:
    """Core dumps as allowed as this user may (ulimit -c <hard limit>) for children started here."""
    saved = resource.getrlimit(resource.RLIMIT_CORE)
    if saved[1] == 0:
        pytest.skip("the hard core limit is already 0 here: nothing to turn off")
    resource.setrlimit(resource.RLIMIT_CORE, (saved[1], saved[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, saved)


@pytest.mark.usefixtures("core_dumps_allowed")
def test_the_server_process_turns_core_dumps_off(tmp_path: Path, config_repo: ConfigRepo) -> None:
    # The server starts with core dumps allowed (inherited from here)...
    assert resource.getrlimit(resource.RLIMIT_CORE)[0] != 0
    server = ServerProcess(tmp_path, "server", "--repo", str(config_repo.path))
    try:
        # ...and by the time it serves, has turned them off, soft and hard.
        server.wait_ready()
        assert core_limits(server.process.pid) == ("0", "0")
    finally:
        assert server.stop() == 0
