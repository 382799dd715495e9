"""HTTP as clients and browsers expect it: Allow on 405, HEAD wherever GET, Retry-After on
503, dashboard errors as pages, redirects to the dashboard, GitHub's form-encoded webhooks."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from server.web.auth import hash_token
from tests.support.gitrepo import ConfigRepo
from tests.support.servers import ServerFactory
from tests.support.webhooks import SECRET, github_headers, push_body

ADMIN_TOKEN = "admin-token-0123456789abcdef"
CLIENT_TOKEN = "client-token-0123456789abcdef"


def _allowed(header: str) -> set[str]:
    return {method.strip() for method in header.split(",")}


async def test_405_says_which_methods_are_allowed(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    response = await server.client.put("/config")
    assert response.status == 405
    assert _allowed(response.headers["Allow"]) == {"GET", "HEAD", "POST"}
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    response = await server.client.post("/status")
    assert response.status == 405
    assert _allowed(response.headers["Allow"]) == {"GET", "HEAD"}
    assert response.content_type == "application/json"


async def test_head_answers_like_get_without_a_body(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    head = await server.client.head("/config", params={"appId": "test-app"})
    assert head.status == 200
    assert await head.read() == b""
    # A HEAD is a check (a probe, curl -I), not a worker starting: /fleet never saw it.
    assert (await (await server.client.get("/fleet")).json())["tracked"] == 0
    get = await server.client.get("/config", params={"appId": "test-app"})
    body = await get.read()
    assert head.headers["X-Config-Version"] == get.headers["X-Config-Version"]
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert (await (await server.client.get("/fleet")).json())["tracked"] == 1

    # Wherever GET is routed, so is HEAD; and a real HEAD answers as its GET does.
    for route in server.app.router.routes():
        if route.method == "GET":
            resource = route.resource
            assert resource is not None
            methods = {r.method for r in resource}
            assert "HEAD" in methods, resource.canonical
    for path in ("/status", "/healthz", "/readyz", "/metrics", "/dashboard", "/dashboard/apps"):
        get = await server.client.get(path)
        head = await server.client.head(path)
        assert (head.status, await head.read()) == (get.status, b""), path


async def test_every_503_says_when_to_retry(tmp_path: Path, start_server: ServerFactory) -> None:
    # A repository that is not there: the first sync fails, nothing is served yet.
    server = await start_server(tmp_path / "missing", poll_interval=3600.0)
    for path in ("/config?appId=test-app", "/readyz", "/history?app=test-app"):
        response = await server.client.get(path)
        assert response.status == 503, path
        # The poll interval, bounded to a minute: the first sync may come at any poll.
        assert response.headers["Retry-After"] == "60", path
    page = await server.client.get("/dashboard/apps")
    assert page.status == 503
    assert page.headers["Retry-After"] == "60"
    assert page.content_type == "text/html"
    assert "no validated commit loaded yet" in await page.text()

    quick = await start_server(tmp_path / "missing", poll_interval=0.2)
    response = await quick.client.get("/config")
    assert (response.status, response.headers["Retry-After"]) == (503, "1")


async def test_dashboard_errors_are_pages_and_api_errors_stay_json(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    for path in ("/dashboard/nothing-here", "/dashboard/apps/has%20space"):
        response = await server.client.get(path)
        assert response.status == 404, path
        assert response.content_type == "text/html", path
        text = await response.text()
        assert '<h1 id="error-status">404 Not Found</h1>' in text
        assert 'href="/dashboard"' in text  # the way back
    response = await server.client.post("/dashboard")
    assert (response.status, response.content_type) == (405, "text/html")
    assert _allowed(response.headers["Allow"]) == {"GET", "HEAD"}
    for path in ("/nothing-here", "/dashboardx"):
        response = await server.client.get(path)
        assert (response.status, response.content_type) == (404, "application/json"), path


async def test_dashboard_auth_errors_are_pages(
    config_repo: ConfigRepo, start_server: ServerFactory, tmp_path: Path
) -> None:
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        f"clients:\n  - name: fleet\n    token_sha256: {hash_token(CLIENT_TOKEN)}\n"
        f'    apps: ["*"]\nadmins:\n  - name: oncall\n    token_sha256: {hash_token(ADMIN_TOKEN)}\n'
    )
    server = await start_server(config_repo.path, auth_file=str(auth))
    response = await server.client.get("/dashboard")
    assert response.status == 401
    assert response.content_type == "text/html"
    assert response.headers["WWW-Authenticate"].startswith("Basic")  # the browser asks
    assert "401 Unauthorized" in await response.text()
    response = await server.client.get(
        "/dashboard", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}
    )
    assert (response.status, response.content_type) == (403, "text/html")
    response = await server.client.get("/fleet")
    assert (response.status, response.content_type) == (401, "application/json")
    response = await server.client.get(
        "/dashboard", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert (response.status, response.content_type) == (200, "text/html")


async def test_the_address_and_trailing_slashes_reach_the_dashboard(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    server = await start_server(config_repo.path)
    expected = {
        "/": (302, "/dashboard"),
        "/dashboard/": (308, "/dashboard"),
        "/dashboard/apps/?q=test": (308, "/dashboard/apps?q=test"),
        "/dashboard/apps/test-app/": (308, "/dashboard/apps/test-app"),
        "/dashboard/fleet/": (308, "/dashboard/fleet"),
    }
    for path, (status, location) in expected.items():
        response = await server.client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (status, location), path
        followed = await server.client.get(path)
        assert (followed.status, followed.content_type) == (200, "text/html"), path
    assert "test-app" in await (await server.client.get("/dashboard/apps/?q=test")).text()


def _form(payload: bytes) -> bytes:
    return urlencode({"payload": payload.decode()}).encode()


def _form_headers(body: bytes) -> dict[str, str]:
    return {**github_headers(body), "Content-Type": "application/x-www-form-urlencoded"}


async def test_github_form_encoded_webhooks_are_accepted(
    config_repo: ConfigRepo, start_server: ServerFactory
) -> None:
    """GitHub's default content type: payload=<urlencoded JSON>, signed over the raw body."""
    server = await start_server(config_repo.path, webhook_secret=SECRET)
    body = _form(push_body())
    response = await server.client.post("/webhook/github", data=body, headers=_form_headers(body))
    assert response.status == 202
    assert await response.json() == {"accepted": True, "sync": "queued", "ref": "refs/heads/main"}

    # Signed over the decoded JSON instead of the bytes sent: refused before any decoding.
    headers = {**github_headers(push_body()), "Content-Type": "application/x-www-form-urlencoded"}
    response = await server.client.post("/webhook/github", data=body, headers=headers)
    assert response.status == 401

    # A form without its payload field, or JSON that is not: 400, naming the fix.
    for bad in (b"other=1", _form(b"{not json")):
        response = await server.client.post("/webhook/github", data=bad, headers=_form_headers(bad))
        assert response.status == 400
        assert "application/json" in (await response.json())["error"]["message"]
    text = b"ref=refs/heads/main"
    response = await server.client.post("/webhook/github", data=text, headers=github_headers(text))
    assert response.status == 400
    message = (await response.json())["error"]["message"]
    assert "set the webhook's content type to application/json" in message
    assert json.loads(push_body())["ref"] == "refs/heads/main"
