"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

Screenshots of each page are saved under test-artifacts/ for people to look at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from server.sync.state import SyncTrigger
from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.paths import ROOT
from tests.support.servers import RunningServer, ServerFactory, secret_scopes

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

APP = """
overrides:
  chunk_size: 512
  remote_url: "lm://cache:${secret:cache-password}@cache:65432"
rules:
  - name: h100
    when: {env: {GPU_TYPE: "H100*"}}
    overrides: {max_local_cpu_size: 40.0}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make test-tools`"
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


SECRET = "planted-dashboard-secret"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> str:
    """The server-side secret the example app refers to; it must never reach a page."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "cache-password").write_text(SECRET)
    return str(directory)


def scopes_for(secrets_dir: str) -> str:
    """Every app may have the example's secret."""
    return secret_scopes(Path(secrets_dir).parent, {"cache-password": ["*"]})


async def open_page(browser: Browser, server: RunningServer) -> tuple[str, Page]:
    """The server's base URL and a fresh browser tab."""
    return str(server.client.make_url("")), await browser.new_page()


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    repo = ConfigRepo(tmp_path / "repo")
    repo.commit_files(
        {
            "global.yaml": "defaults: {local_cpu: true}\n",
            "apps/test-app.yaml": APP,
            "apps/other-app.yaml": "defaults: {chunk_size: 128}\n",
        },
        "initial config",
    )
    return repo


async def test_overview_after_a_commit_and_a_rejected_commit(
    tmp_path: Path,
    repo: ConfigRepo,
    browser: Browser,
    start_server: ServerFactory,
    secrets_dir: str,
) -> None:
    server = await start_server(
        repo.path, secrets_dir=secrets_dir, secret_scopes=scopes_for(secrets_dir)
    )
    base, page = await open_page(browser, server)

    await page.goto(f"{base}/dashboard")
    served = await page.inner_text("#served")
    assert repo.head()[:12] in served
    assert "initial config" in served
    assert "No commit has been rejected" in await page.inner_text("#rejected")
    await page.screenshot(path=ARTIFACTS / "dashboard-overview.png", full_page=True)

    changed = repo.commit_files({"apps/other-app.yaml": "defaults: {chunk_size: 64}\n"}, "smaller")
    await server.syncer.sync(SyncTrigger.MANUAL)
    await page.reload()
    assert changed[:12] in await page.inner_text("#served")
    assert "updated" in await page.inner_text("#recent-syncs")

    bad = repo.commit_files({"apps/other-app.yaml": "defaults: {chunk_sise: 64}\n"}, "typo")
    await server.syncer.sync(SyncTrigger.MANUAL)
    await page.reload()
    assert changed[:12] in await page.inner_text("#served")  # still the good one
    rejected = await page.inner_text("#rejected")
    assert bad[:12] in rejected
    assert "apps/other-app.yaml:1:12: error: unknown LMCache config key 'chunk_sise'" in rejected
    await page.screenshot(path=ARTIFACTS / "dashboard-overview-rejected.png", full_page=True)
    assert SECRET not in await page.content()


async def test_apps_search_and_app_answer(
    tmp_path: Path,
    repo: ConfigRepo,
    browser: Browser,
    start_server: ServerFactory,
    secrets_dir: str,
) -> None:
    server = await start_server(
        repo.path, secrets_dir=secrets_dir, secret_scopes=scopes_for(secrets_dir)
    )
    base, page = await open_page(browser, server)

    await page.goto(f"{base}/dashboard/apps")
    assert "other-app" in await page.inner_text("#apps")
    await page.fill("input[name=q]", "test")
    await page.click("button[type=submit]")
    listing = await page.inner_text("#apps")
    assert "test-app" in listing
    assert "other-app" not in listing
    assert "q=test" in page.url  # a link that can be shared
    await page.screenshot(path=ARTIFACTS / "dashboard-apps.png", full_page=True)

    await page.click("text=test-app")
    await page.fill("textarea[name=env]", "GPU_TYPE=H100-SXM")
    await page.click("button[type=submit]")
    answer = await page.inner_text("#answer")
    assert "max_local_cpu_size" in answer
    assert "40.0" in answer
    assert "apps/test-app.yaml:7 (rule 'h100')" in answer
    assert "${secret:cache-password}" in answer  # shown as written, never resolved
    assert "(applies)" in await page.inner_text("#rules")
    assert "GPU_TYPE" in page.url
    await page.screenshot(path=ARTIFACTS / "dashboard-app.png", full_page=True)
    assert SECRET not in await page.content()


async def test_dashboard_needs_an_admin_when_auth_is_on(
    tmp_path: Path,
    repo: ConfigRepo,
    browser: Browser,
    start_server: ServerFactory,
    secrets_dir: str,
) -> None:
    auth = tmp_path / "auth.yaml"
    auth.write_text(f"admins:\n  - name: oncall\n    token_sha256: {hash_token('admin-secret')}\n")
    server = await start_server(
        repo.path,
        auth_file=str(auth),
        secrets_dir=secrets_dir,
        secret_scopes=scopes_for(secrets_dir),
    )
    base = str(server.client.make_url(""))

    anonymous = await browser.new_page()
    refused = await anonymous.request.get(f"{base}/dashboard")
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    context = await browser.new_context(
        http_credentials={"username": "oncall", "password": "admin-secret"}
    )
    admin = await context.new_page()
    response = await admin.goto(f"{base}/dashboard")
    assert response is not None
    assert response.status == 200
    assert repo.head()[:12] in await admin.inner_text("#served")
    await context.close()


async def test_app_history_diff_and_links_to_a_past_commit(
    tmp_path: Path,
    repo: ConfigRepo,
    browser: Browser,
    start_server: ServerFactory,
    secrets_dir: str,
) -> None:
    first = repo.head()
    second = repo.commit_files(
        {"apps/test-app.yaml": APP.replace("chunk_size: 512", "chunk_size: 1024")}, "bigger chunks"
    )
    repo.commit_files({"apps/other-app.yaml": "defaults: {chunk_size: 32}\n"}, "other app only")
    server = await start_server(
        repo.path, secrets_dir=secrets_dir, secret_scopes=scopes_for(secrets_dir)
    )
    base, page = await open_page(browser, server)

    await page.goto(f"{base}/dashboard/apps/test-app")
    history = await page.inner_text("#history")
    assert "bigger chunks" in history
    assert "initial config" in history
    assert "other app only" not in history  # did not change test-app
    await page.click("#show-diff")
    assert await page.inner_text("#diff-title") == f"Diff {first[:12]} → {second[:12]}: changed"
    diff = await page.inner_text("#diff")
    assert "chunk_size" in diff
    assert "512 (override)" in diff
    assert "1024 (override)" in diff
    assert f"from={first}" in page.url
    await page.screenshot(path=ARTIFACTS / "dashboard-app-diff.png", full_page=True)

    await page.click(f"text={first[:12]}")
    assert "Showing commit" in await page.inner_text("#pinned")
    assert "512" in await page.inner_text("#answer")
    assert f"commit={first}" in page.url


async def test_app_history_says_when_its_walk_stopped_short(
    repo: ConfigRepo, start_server: ServerFactory, secrets_dir: str
) -> None:
    server = await start_server(
        repo.path, secrets_dir=secrets_dir, secret_scopes=scopes_for(secrets_dir)
    )
    page = await (await server.client.get("/dashboard/apps/test-app")).text()
    assert 'id="history-partial"' not in page  # the whole history is listed
    for size in range(21):  # more changes than the page lists (20)
        repo.commit_files({"apps/test-app.yaml": APP.replace("512", str(600 + size))})
    assert (await server.syncer.sync(SyncTrigger.MANUAL)).result == "updated"
    response = await server.client.get("/dashboard/apps/test-app")
    assert response.status == 200
    page = await response.text()
    assert 'id="history-partial"' in page
    assert "20 changes shown" in page
    assert "older changes of this app are not listed" in page


async def test_fleet_page_highlights_workers_behind(
    tmp_path: Path,
    repo: ConfigRepo,
    browser: Browser,
    start_server: ServerFactory,
    secrets_dir: str,
) -> None:
    server = await start_server(
        repo.path, secrets_dir=secrets_dir, secret_scopes=scopes_for(secrets_dir)
    )
    old = repo.head()
    for index in range(3):
        body = {
            "current_config": {"lmcache_instance_id": f"worker-{index}"},
            "env_variables": {"HOSTNAME": f"gpu-node-{index}", "API_KEY": "planted-fleet-secret"},
        }
        assert (await server.config("test-app", body))[0] == 200
    new = repo.commit_files({"apps/other-app.yaml": "defaults: {chunk_size: 16}\n"}, "new commit")
    await server.syncer.sync(SyncTrigger.MANUAL)
    body = {
        "current_config": {"lmcache_instance_id": "worker-new"},
        "env_variables": {"HOSTNAME": "gpu-node-9"},
    }
    assert (await server.config("test-app", body))[0] == 200

    base, page = await open_page(browser, server)
    await page.goto(f"{base}/dashboard/fleet")
    table = page.locator("table.fleet-app[data-app=test-app]")
    assert await table.locator("tr.behind").count() == 3
    text = await table.inner_text()
    assert "gpu-node-0" in text
    assert "worker-new" in text
    assert old[:12] in text
    assert new[:12] in text
    chart = await page.locator("#per-commit").text_content() or ""
    assert old[:12] in chart
    assert new[:12] in chart
    assert "planted-fleet-secret" not in await page.content()
    await page.screenshot(path=ARTIFACTS / "dashboard-fleet.png", full_page=True)

    await page.goto(f"{base}/dashboard")
    assert "4" in await page.inner_text("#counts")
    assert "3 worker(s) on an older commit" in await page.inner_text("#counts")
