"""Consoles, snapshots and diagnostics through the unmodified openstack CLI
against ``nubes all-in-one`` (``cloud`` from this directory's conftest)."""

from __future__ import annotations

import asyncio
import shutil
import urllib.parse

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from nubes.compute.virt.fake import FAKE_BOOT_LOG
from tests.functional.api.cli import Cloud, connect_sdk, wait_status

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("openstack") is None,
        reason="python-openstackclient is not installed (pip install -e '.[test]')",
    ),
]

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def _create(cloud: Cloud, name: str) -> dict[str, str]:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME

    create = ("server", "create", "--flavor", "m1.tiny", "--image", DEFAULT_IMAGE_NAME)
    result: dict[str, str] = cloud.json(DEMO, *create, "--nic", "none", "--wait", name)
    return result


def test_server_show_diagnostics_reads_the_guests_counters(cloud: Cloud) -> None:
    """``openstack server show --diagnostics`` (admin): the API asks the
    server's host (compute RPC get_instance_diagnostics)."""
    vm = _create(cloud, "diag1")
    diags = cloud.json(ADMIN, "server", "show", "--diagnostics", vm["id"])
    # "libvirt": Nova's closed list of driver names, as Nova's fake driver answers.
    assert diags["driver"] == "libvirt" and diags["state"] == "running", diags
    assert diags["num_cpus"] == len(diags["cpu_details"]) >= 1, diags
    # The root disk had the guest's boot lines written to it.
    assert diags["disk_details"][0]["write_requests"] == len(FAKE_BOOT_LOG) + 1, diags
    assert diags["memory_details"]["maximum"] > 0, diags
    # Diagnostics are an admin's: the project's member is refused.
    refused = cloud.openstack(DEMO, "server", "show", "--diagnostics", "diag1", check=False)
    assert refused.returncode != 0, refused.stderr
    assert "Policy doesn't allow os_compute_api:os-server-diagnostics" in refused.stderr
    # A stopped server has no running guest to ask: Nova's 409.
    cloud.openstack(DEMO, "server", "stop", "diag1")
    wait_status(connect_sdk(cloud, DEMO), vm["id"], "SHUTOFF")
    stopped = cloud.openstack(ADMIN, "server", "show", "--diagnostics", vm["id"], check=False)
    assert stopped.returncode != 0, stopped.stderr
    assert "power_state shutdown" in stopped.stderr or "not running" in stopped.stderr


def test_console_url_show_opens_the_guests_vnc_through_the_proxy(cloud: Cloud) -> None:
    """``openstack console url show`` (remote-consoles, noVNC): the URL's token
    opens the fake guest's VNC through all-in-one's console proxy once."""
    vm = _create(cloud, "con1")
    shown = cloud.json(DEMO, "console", "url", "show", "con1")
    assert shown["type"] == "novnc" and shown["protocol"] == "vnc", shown
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(shown["url"]).query)
    path = query["path"][0]
    token = urllib.parse.parse_qs(path.lstrip("?"))["token"][0]
    proxy = urllib.parse.urlsplit(shown["url"]).netloc

    # The admin reads the token's details without spending it (2.31+).
    sdk = connect_sdk(cloud, ADMIN)
    details = sdk.compute.get(f"/os-console-auth-tokens/{token}", microversion="2.31").json()
    assert details["console"]["instance_uuid"] == vm["id"], details

    async def read_greeting() -> bytes:
        async with websockets.connect(f"ws://{proxy}/{path}") as ws:
            greeting = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(greeting, bytes)
            return greeting

    assert asyncio.run(read_greeting()) == b"RFB 003.008\n"
    with pytest.raises(InvalidStatus):
        asyncio.run(read_greeting())  # spent
    gone = sdk.compute.get(f"/os-console-auth-tokens/{token}", microversion="2.31")
    assert gone.status_code == 404, gone.text

    # Consoles nubes does not offer: Nova's answer for one switched off.
    for option in ("--spice", "--serial"):
        refused = cloud.openstack(DEMO, "console", "url", "show", option, "con1", check=False)
        assert refused.returncode != 0, refused.stderr
        assert "Unavailable console type" in refused.stderr, refused.stderr
