"""The bundled example repository is valid and shows fragments, rollouts and the CI files."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.clirun import call, spawn
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config-repo-example"


def test_example_is_valid_on_disk() -> None:
    result = spawn("validate", "config-repo-example", "--format", "json", cwd=ROOT)
    report = json.loads(result.out)
    assert (result.code, report["issues"]) == (0, [])
    assert report["apps"] == ["production-app", "test-app"]
    assert report["fragments"] == ["profiles/h100.yaml"]


def test_example_render_shows_fragment_and_rollout(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["render", "test-app", "--repo", str(EXAMPLE), "--env", "GPU_TYPE=H100-SXM"]
    text = call(capsys, *args).out
    assert "rule applied: h100-bigger-cpu-cache (profiles/h100.yaml:" in text
    assert "(rule 'h100-bigger-cpu-cache')" in text
    answers = [
        json.loads(
            call(
                capsys,
                "render",
                "production-app",
                "--repo",
                str(EXAMPLE),
                "--env",
                f"HOSTNAME=gpu-{n}",
                "--format",
                "json",
            ).out
        )
        for n in range(200)
    ]
    canary = [a for a in answers if "cachegen-canary" in a["applied_rules"]]
    assert 5 <= len(canary) <= 40  # about 10% of 200 hosts


def test_ci_and_pre_commit_files_run_validate_and_diff() -> None:
    workflow = yaml.safe_load((EXAMPLE / ".github/workflows/lmcache-config.yml").read_text())
    steps = workflow["jobs"]["validate-and-diff"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "lmcache-config-server validate --ref HEAD" in commands
    # The base branch comes in through env (BASE_REF), never expanded into the script.
    assert 'lmcache-config-server diff "origin/${BASE_REF}" HEAD' in commands
    assert "${{" not in commands
    assert "gh pr comment" in commands
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    config = yaml.safe_load((EXAMPLE / ".pre-commit-config.yaml").read_text())
    assert [hook["id"] for hook in hooks] == [
        hook["id"] for repo in config["repos"] for hook in repo["hooks"]
    ]
    assert hooks[0]["entry"] == "lmcache-config-server validate"
    assert hooks[0]["pass_filenames"] is False
