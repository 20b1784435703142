"""A real guest's VNC console and diagnostics, through ``nubes all-in-one
--virt libvirt`` and the unmodified openstack CLI: a websocket client reads
the RFB handshake QEMU's VNC server sends, through the console proxy, the
host's console relay and the conductor's consent."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from nubes.testing.libvirtd import PrivateLibvirtd
from tests.functional.api.cli import Cloud, free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.libvirt]


async def _greeting(ws_url: str) -> bytes:
    async with websockets.connect(ws_url, subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        data = await asyncio.wait_for(ws.recv(), 30)
        assert isinstance(data, bytes)
        return data


def test_a_real_guests_vnc_console_and_diagnostics(
    libvirtd: PrivateLibvirtd, tmp_path: Path
) -> None:
    options = ("--virt", "libvirt", "--private-libvirtd")
    cloud = Cloud(tmp_path / "state", free_port(), options=options)
    cloud.start()
    try:
        create = ("server", "create", "--flavor", "m1.tiny", "--image", "nubes-guest")
        server = cloud.json("nubes-demo", *create, "--nic", "none", "--wait", "vm1")
        assert server["status"] == "ACTIVE"

        shown = cloud.json("nubes-demo", "console", "url", "show", "--novnc", "vm1")
        url = urllib.parse.urlsplit(shown["url"])
        path = urllib.parse.parse_qs(url.query)["path"][0]
        ws_url = f"ws://{url.netloc}/{path}"
        greeting = asyncio.run(_greeting(ws_url))
        assert re.fullmatch(rb"RFB 003\.00[3-8]\n", greeting), greeting
        with pytest.raises(InvalidStatus):
            asyncio.run(_greeting(ws_url))  # single use

        diags = cloud.json("nubes-admin", "server", "show", "--diagnostics", server["id"])
        assert diags["driver"] == "libvirt" and diags["state"] == "running", diags
        assert diags["num_cpus"] >= 1 and diags["cpu_details"][0]["time"] > 0, diags
        # The root disk was read at boot.
        assert diags["num_disks"] >= 1 and diags["disk_details"][0]["read_bytes"] > 0, diags
        assert diags["memory_details"]["maximum"] > 0, diags
    finally:
        stopped = cloud.stop()
        assert stopped == 0, "".join(cloud.output[-40:])
