"""The dashboard in a real browser against a real all-in-one (issue #19's list).

A member logs in, launches two servers from the form and watches them become
ACTIVE without a reload, opens one, reads its console log, stops and starts
it, creates and downloads a key pair, deletes the servers; an admin sees both
hypervisors with their usage, disables a host and sees it, sees a live
migration in progress; a wrong password and an expired session lead to the
login page; a name holding markup is shown as text.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from nubes.dashboard.session import COOKIE, Sealer, Session
from tests.browser.conftest import SESSION_KEY, password
from tests.functional.api.cli import Cloud

# ~20 s each on a quiet machine; the margin is for a loaded one (password
# hashing at login is the slowest step then).
pytestmark = pytest.mark.timeout(180)

#: Markup in a server name: it must show as these characters, never as an element.
MARKUP_NAME = "<i>web</i>"
#: Milliseconds a test waits for something the page shows by itself.
WAIT_MS = 45_000
#: Seconds an HTTP call of a test may take.
HTTP_TIMEOUT = 60.0


def _base(cloud: Cloud) -> str:
    return f"http://127.0.0.1:{cloud.port}/dashboard"


async def _login(page: Any, cloud: Cloud, user: str, secret: str, project: str) -> None:
    page.set_default_timeout(WAIT_MS)
    await page.goto(_base(cloud) + "/login")
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", secret)
    await page.fill("input[name=project]", project)
    await page.click("#login button[type=submit]")


async def _shot(page: Any, screenshots: Path, name: str) -> None:
    await page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


async def test_member_launches_watches_inspects_and_deletes(
    cloud: Cloud, browser: Any, screenshots: Path
) -> None:
    page = await browser.new_page(accept_downloads=True)
    await _login(page, cloud, "demo", "not-the-password", "demo")
    assert "/login" in page.url
    assert "Wrong user name, password or project" in await page.inner_text("[role=alert]")
    await _shot(page, screenshots, "login-failed")

    await _login(page, cloud, "demo", password(cloud, "demo"), "demo")
    assert page.url.endswith("/dashboard/overview")
    # count() does not wait: on a busy machine the page may still be loading.
    await page.locator("figure.usage svg").first.wait_for()
    assert await page.locator("figure.usage svg").count() >= 4
    await _shot(page, screenshots, "overview")

    await page.goto(_base(cloud) + "/servers/launch")
    await page.fill("input[name=name]", MARKUP_NAME)
    await page.fill("input[name=count]", "2")
    await page.select_option("select[name=flavor]", label="m1.tiny (1 vCPU, 512 MiB, 1 GiB)")
    await _shot(page, screenshots, "launch")
    await page.click("#launch button[type=submit]")
    assert page.url.startswith(_base(cloud) + "/servers")
    # A mark the page keeps only as long as it is not reloaded.
    await page.evaluate("window.notReloaded = true")
    rows = page.locator("#servers tbody tr[data-id]")
    await expect(page.locator("#servers td.status-active")).to_have_count(2, timeout=WAIT_MS)
    assert await page.evaluate("window.notReloaded === true")
    assert await rows.count() == 2
    # Markup in a name is text: shown as typed, no element made of it.
    names = sorted(await page.locator("#servers a.name").all_inner_texts())
    assert names == [f"{MARKUP_NAME}-1", f"{MARKUP_NAME}-2"]
    assert await page.locator("#servers i").count() == 0
    await _shot(page, screenshots, "servers")

    await page.locator("#servers a.name").first.click()
    assert await page.inner_text("h1.name") in names
    status = page.locator("#server-status dd.status")
    assert await status.inner_text() == "ACTIVE"
    await _shot(page, screenshots, "server-detail")

    detail = page.url
    await page.click("#console-link")
    assert (await page.inner_text("#console-output")).strip()
    await _shot(page, screenshots, "console-log")
    await page.goto(detail)

    for action, want in (("Stop", "SHUTOFF"), ("Start", "ACTIVE")):
        await page.click(f"button:text-is('{action}')")
        await expect(status).to_have_text(want, timeout=WAIT_MS)
        await expect(page.locator("#server-status dd.task")).to_have_text("", timeout=WAIT_MS)

    await page.goto(_base(cloud) + "/keypairs")
    await page.fill("#create-keypair input[name=name]", "dash-key")
    async with page.expect_download() as waiting:
        await page.click("#create-keypair button[type=submit]")
    download = await waiting.value
    assert download.suggested_filename == "dash-key.pem"
    key = await asyncio.to_thread(Path(await download.path()).read_text)
    assert "PRIVATE KEY-----" in key
    await page.goto(_base(cloud) + "/keypairs")
    assert "dash-key" in await page.locator("#keypairs td.name").all_inner_texts()
    await _shot(page, screenshots, "keypairs")

    for name in ("images", "networks", "security-groups"):
        await page.goto(_base(cloud) + f"/{name}")
        await _shot(page, screenshots, name)

    await page.goto(_base(cloud) + "/servers")
    for left in (1, 0):
        await rows.first.locator("a.name").click()
        await page.click("button:text-is('Delete')")
        assert page.url.startswith(_base(cloud) + "/servers")
        await expect(rows).to_have_count(left, timeout=WAIT_MS)
    assert await page.inner_text("#servers td.empty") == "No servers."


async def _admin_api(cloud: Cloud) -> httpx.AsyncClient:
    base = f"http://127.0.0.1:{cloud.port}"
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.post(
            f"{base}/identity/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"id": "default"},
                                "password": password(cloud, "admin"),
                            }
                        },
                    },
                    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
                }
            },
        )
        response.raise_for_status()
    return httpx.AsyncClient(
        timeout=HTTP_TIMEOUT,
        base_url=f"{base}/compute/v2.1",
        headers={
            "X-Auth-Token": response.headers["X-Subject-Token"],
            "OpenStack-API-Version": "compute 2.61",
        },
    )


async def _boot_and_live_migrate(api: httpx.AsyncClient) -> str:
    """A server booted and live-migrating (slowly: the fake driver's migration_delay)."""
    flavors = (await api.get("/flavors")).json()["flavors"]
    body = {
        "server": {
            "name": "moving",
            "flavorRef": next(f["id"] for f in flavors if f["name"] == "m1.tiny"),
            "imageRef": await _image(api),
            "networks": "none",
        }
    }
    response = await api.post("/servers", json=body)
    assert response.status_code == 202, response.text
    server_id = response.json()["server"]["id"]
    deadline = time.monotonic() + 30
    while (await api.get(f"/servers/{server_id}")).json()["server"]["status"] != "ACTIVE":
        assert time.monotonic() < deadline
        await _pause()
    response = await api.post(
        f"/servers/{server_id}/action",
        json={"os-migrateLive": {"host": None, "block_migration": "auto"}},
    )
    assert response.status_code == 202, response.text
    return server_id


async def _image(api: httpx.AsyncClient) -> str:
    base = str(api.base_url).rsplit("/compute", 1)[0]
    response = await api.get(f"{base}/image/v2/images")
    return str(response.json()["images"][0]["id"])


async def _pause() -> None:
    await asyncio.sleep(0.2)


async def test_admin_sees_hosts_capacity_services_and_a_migration(
    cloud: Cloud, browser: Any, screenshots: Path
) -> None:
    api = await _admin_api(cloud)
    async with api:
        server_id = await _boot_and_live_migrate(api)

        page = await browser.new_page()
        await _login(page, cloud, "admin", password(cloud, "admin"), "admin")

        await page.goto(_base(cloud) + "/admin/migrations")
        row = page.locator(f"#migrations-active tr[data-server='{server_id}']")
        await row.wait_for(timeout=WAIT_MS)
        assert await row.locator("svg[aria-label^='Progress']").count() == 1
        await _shot(page, screenshots, "admin-migrations")

        await page.goto(_base(cloud) + "/admin/hypervisors")
        hosts = await page.locator("#hypervisors td.name").all_inner_texts()
        assert hosts == ["fake-0", "fake-1"]
        for host in hosts:
            bars = page.locator(f"#hypervisors tr[data-host='{host}'] svg[aria-label]")
            assert await bars.count() == 3
        used = await page.locator("#hypervisors svg[aria-label^='vCPU']").evaluate_all(
            "els => els.map(e => e.getAttribute('aria-label'))"
        )
        assert any(not label.startswith("vCPU: 0 of") for label in used), used
        await _shot(page, screenshots, "admin-hypervisors")

        await page.goto(_base(cloud) + "/admin/services")
        compute = page.locator("#services tr[data-host='fake-1'][data-binary$='-compute']")
        await compute.locator("input[name=reason]").fill("maintenance <b>now</b>")
        await compute.locator("button[value=disable]").click()
        compute = page.locator("#services tr[data-host='fake-1'][data-binary$='-compute']")
        await expect(compute.locator("td.status")).to_have_text(
            "disabled (maintenance <b>now</b>)", timeout=WAIT_MS
        )
        await _shot(page, screenshots, "admin-services")
        await page.goto(_base(cloud) + "/admin/hypervisors")
        status = page.locator("#hypervisors tr[data-host='fake-1'] td.status")
        assert (await status.inner_text()).startswith("disabled")
        await page.goto(_base(cloud) + "/admin/services")
        await compute.locator("button[value=enable]").click()
        await expect(compute.locator("td.status")).to_have_text("enabled", timeout=WAIT_MS)

        await page.goto(_base(cloud) + "/admin/inventory")
        await _shot(page, screenshots, "admin-inventory")
        # The health view: the backlog (builds done, the live migration still running)
        # and each service's version, from the os-nubes-status extension.
        await page.goto(_base(cloud) + "/admin/health")
        kinds = await page.locator("#backlog tr[data-kind]").all_inner_texts()
        assert any("running: 1" in k for k in kinds), kinds
        assert await page.locator("#service-versions tbody tr").count() >= 4
        await _shot(page, screenshots, "admin-health")
        await api.delete(f"/servers/{server_id}")


async def test_expired_session_leads_to_login(cloud: Cloud, browser: Any) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await _login(page, cloud, "demo", password(cloud, "demo"), "demo")
    await page.goto(_base(cloud) + "/servers")
    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    # The same session, sealed as if made longer ago than the session lasts.
    sealer = Sealer(SESSION_KEY, ttl=3600)
    session = sealer.open(cookie["value"])
    assert isinstance(session, Session)
    stale = sealer.seal(session, at=time.time() - 7200)
    await context.add_cookies([{**cookie, "value": stale}])
    # The live update of the open page notices and sends the browser to the login page.
    await page.wait_for_url("**/dashboard/login*", timeout=WAIT_MS)
    await page.goto(_base(cloud) + "/overview")
    assert "/dashboard/login" in page.url
    await context.close()


async def test_forms_without_the_session_csrf_token_are_refused(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=_base(cloud), timeout=HTTP_TIMEOUT) as client:
        response = await client.get("/servers")
        assert response.status_code == 303 and "/dashboard/login" in response.headers["location"]
        form = {"user": "demo", "password": password(cloud, "demo"), "project": "demo"}
        refused = await client.post("/login", data={**form, "csrf": "forged"})
        assert refused.status_code == 401 and COOKIE not in refused.cookies
        # The refusal offers a new form, whose token goes with the cookie it set.
        csrf = refused.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        response = await client.post("/login", data={**form, "csrf": csrf})
        assert response.status_code == 303 and COOKIE in response.cookies
        assert "httponly" in response.headers["set-cookie"].lower()
        assert "samesite=lax" in response.headers["set-cookie"].lower()
        launch = {"name": "no-token", "count": "1", "flavor": "1", "image": "x"}
        response = await client.post("/servers/launch", data=launch)
        assert response.status_code == 403
        assert "not sent by this session" in response.text


async def _http_login(client: httpx.AsyncClient, cloud: Cloud, user: str) -> str:
    """Log ``client`` in through the form; the session's CSRF token."""
    page = await client.get("/login")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = {"user": user, "password": password(cloud, user), "project": user, "csrf": csrf}
    response = await client.post("/login", data=form)
    assert response.status_code == 303, response.text
    overview = await client.get("/overview")
    return overview.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_member_manages_networks_and_security_groups(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=_base(cloud), timeout=HTTP_TIMEOUT) as client:
        csrf = await _http_login(client, cloud, "demo")
        name = "<b>net</b>"
        form = {"csrf": csrf, "name": name, "cidr": "10.0.7.0/24"}
        response = await client.post("/networks", data=form)
        assert "Created+network" in response.headers["location"]
        page = (await client.get("/networks")).text
        assert "&lt;b&gt;net&lt;/b&gt;" in page and "<b>net</b>" not in page
        assert "10.0.7.0/24" in page
        # A bad range: the API's message on the page, and no network left half made.
        bad = await client.post("/networks", data={**form, "name": "bad", "cidr": "10.0.0.0/99"})
        assert "error=" in bad.headers["location"]
        page = (await client.get(f"http://127.0.0.1:{cloud.port}{bad.headers['location']}")).text
        assert 'role="alert"' in page and ">bad<" not in page

        response = await client.post(
            "/security-groups", data={"csrf": csrf, "name": "web", "description": "http"}
        )
        assert "Created+security+group" in response.headers["location"]
        page = (await client.get("/security-groups")).text
        group_id = page.split('data-group="web"', 1)[1].split('name="group_id" value="', 1)[1]
        group_id = group_id.split('"', 1)[0]
        rule = {"csrf": csrf, "group_id": group_id, "direction": "ingress", "protocol": "tcp"}
        response = await client.post(
            "/security-groups/rules", data={**rule, "port_min": "80", "port_max": "80"}
        )
        assert "Added+the+rule" in response.headers["location"]
        section = (await client.get("/security-groups")).text.split('data-group="web"', 1)[1]
        assert "<td>tcp</td>" in section.split("</section>", 1)[0]


async def test_member_uploads_and_deletes_an_image(cloud: Cloud) -> None:
    async with httpx.AsyncClient(base_url=_base(cloud), timeout=HTTP_TIMEOUT) as client:
        csrf = await _http_login(client, cloud, "demo")
        query = {"name": "tiny-disk", "disk_format": "raw"}
        refused = await client.post("/images/upload", params=query, content=b"x" * 1024)
        assert refused.status_code == 403  # no CSRF header: the page's script sends one
        response = await client.post(
            "/images/upload",
            params=query,
            content=b"x" * 1024,
            headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 204, response.text
        page = (await client.get("/images")).text
        row = page.split('<td class="name">tiny-disk</td>', 1)[1].split("</tr>", 1)[0]
        assert "<td>active</td>" in row and "<td>1024</td>" in row
        image_id = row.split('name="id" value="', 1)[1].split('"', 1)[0]
        response = await client.post("/images/delete", data={"csrf": csrf, "id": image_id})
        assert "Deleted+the+image" in response.headers["location"]
        assert "tiny-disk" not in (await client.get("/images")).text
