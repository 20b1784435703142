"""Consoles end to end with fake guests, and the attacks on them.

Every service in one process (memory:// + SQLite; fake hosts under their own
bus identities, each with its console relay), the real console proxy on a
free port, and a websocket client (the ``websockets`` library) in place of
noVNC. A fake guest's VNC server speaks the start of RFB 3.8, so a console
that opens shows "RFB 003.008". Refused: a spent token, an expired one, a
token presented at another host's relay, a token of a guest that moved away,
and a page of another origin; a refusal at the wrong host leaves the token
usable where it belongs.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from nubes import exception
from nubes.api import consoles as api_consoles
from nubes.api.state import ApiState
from nubes.compute.console_relay import MAGIC, ConsoleRelay
from nubes.compute.rpcapi import ComputeAPI
from nubes.compute.virt.fake import RFB_SERVER_INIT
from nubes.conductor.rpcapi import ConductorAPI
from nubes.console.proxy import ConsoleProxyServer
from nubes.context import RequestContext
from nubes.db.api import consoles as consoles_db
from nubes.db.api import flavors
from nubes.db.api import instances as instances_db
from nubes.testing.allinone import AllInOne

pytestmark = pytest.mark.timeout(120)

IMAGE = {"id": "img-1", "properties": {}}
CTXT = RequestContext(user_id="u1", project_id="p1", roles=["member"])


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[AllInOne]:
    c = await AllInOne.start(
        f"sqlite:///{tmp_path / 'con.sqlite'}",
        hosts=2,
        overrides={"vnc": {"novncproxy_port": 0}},
    )
    async with c.db.writer() as conn:
        await flavors.create(
            conn, {"flavorid": "one", "name": "one", "vcpus": 1, "memory_mb": 256, "root_gb": 1}
        )
    yield c
    await c.stop()


@pytest.fixture
async def proxy(cloud: AllInOne) -> AsyncIterator[ConsoleProxyServer]:
    server = ConsoleProxyServer(cloud.conf, cloud.db, follow_port=True)
    await server.start()
    yield server
    await server.stop()


async def _server(cloud: AllInOne) -> dict[str, Any]:
    (inst,) = await cloud.api.create_servers(CTXT, name="c", flavor="one", image=IMAGE)
    await cloud.wait_tasks([inst.uuid])
    (row,) = await cloud.instances([inst.uuid])
    assert row["vm_state"] == "active", row
    return row


async def _compute(cloud: AllInOne) -> ComputeAPI:
    state = ApiState(conf=cloud.conf, db=cloud.db, transport=cloud.api_transport)
    await state.refresh_caps()
    api: ComputeAPI = state.compute_api()
    return api


async def _console_url(cloud: AllInOne, row: dict[str, Any]) -> str:
    compute = await _compute(cloud)
    endpoint = await compute.get_vnc_console(CTXT, row["host"], row["uuid"])
    return await api_consoles.issue(cloud.db, cloud.conf, row, "novnc", endpoint)


def _ws_url_of(url: str) -> tuple[str, str]:
    """The websocket path noVNC would open for console URL ``url``, and its token."""
    path = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["path"][0]
    token = urllib.parse.parse_qs(path.lstrip("?"))["token"][0]
    return path, token


def _ws_url(proxy: ConsoleProxyServer, url: str) -> tuple[str, str]:
    path, token = _ws_url_of(url)
    return f"ws://127.0.0.1:{proxy.port}/{path}", token


async def _rfb(ws_url: str, **kw: Any) -> bytes:
    async with websockets.connect(ws_url, subprotocols=["binary"], **kw) as ws:  # type: ignore[list-item]
        greeting = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(greeting, bytes)
        # The client's version, then the server offers one security type (None).
        await ws.send(b"RFB 003.008\n")
        security = await asyncio.wait_for(ws.recv(), 10)
        assert security == bytes([1, 1])
        # Security None chosen: success, then ClientInit gets the ServerInit.
        await ws.send(b"\x01")
        assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x00\x00\x00"
        await ws.send(b"\x01")
        init = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(init, bytes) and init == RFB_SERVER_INIT
        assert init[24:] == b"nubes fake guest" and init[20:24] == (16).to_bytes(4, "big")
        return greeting


async def _refused(ws_url: str, **kw: Any) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(ws_url, **kw):
            pass
    assert caught.value.response.status_code == 403


async def _relay(address: tuple[str, int], token: str) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(MAGIC + token.encode() + b"\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return answer


def _relay_of(cloud: AllInOne, host: str) -> tuple[str, int]:
    for hook in cloud.computes[host].hooks:
        if isinstance(hook, ConsoleRelay) and hook.address is not None:
            return hook.address
    raise AssertionError(f"no relay for {host}")


async def test_a_console_url_opens_the_guests_vnc_once(
    cloud: AllInOne, proxy: ConsoleProxyServer
) -> None:
    row = await _server(cloud)
    url = await _console_url(cloud, row)
    assert url.startswith(f"http://127.0.0.1:{proxy.port}/vnc_auto.html?path=%3Ftoken%3D")
    ws_url, token = _ws_url(proxy, url)
    assert await _rfb(ws_url) == b"RFB 003.008\n"
    # Single use: the same URL opens nothing a second time.
    await _refused(ws_url)
    # Only the token's hash is stored.
    async with cloud.db.reader() as conn:
        assert await consoles_db.get_valid(conn, token) is None
    # A new URL opens it again.
    again, _ = _ws_url(proxy, await _console_url(cloud, row))
    assert await _rfb(again) == b"RFB 003.008\n"


async def test_expired_unknown_and_foreign_origin_tokens_open_nothing(
    cloud: AllInOne, proxy: ConsoleProxyServer
) -> None:
    row = await _server(cloud)
    ws_url, token = _ws_url(proxy, await _console_url(cloud, row))
    await _refused(ws_url.replace(token, token[:-2] + "xx"))
    await _refused(f"ws://127.0.0.1:{proxy.port}/")
    # A page elsewhere may not open a user's console in the user's browser.
    await _refused(ws_url, origin="http://evil.example")  # type: ignore[arg-type]
    # ... and that refusal did not spend it.
    assert await _rfb(ws_url, origin=f"http://127.0.0.1:{proxy.port}") == b"RFB 003.008\n"  # type: ignore[arg-type]

    # An expired token: refused by the proxy, and by the relay through the conductor.
    compute = await _compute(cloud)
    endpoint = await compute.get_vnc_console(CTXT, row["host"], row["uuid"])
    async with cloud.db.writer() as conn:
        await consoles_db.create(
            conn,
            "expired-token",
            -1,
            {
                "console_type": "novnc",
                "instance_uuid": row["uuid"],
                "compute_host": row["host"],
                "host": endpoint["host"],
                "port": endpoint["port"],
                "internal_access_path": None,
                "access_url_base": "http://x/",
            },
        )
    await _refused(f"ws://127.0.0.1:{proxy.port}/?token=expired-token")
    answer = await _relay(_relay_of(cloud, row["host"]), "expired-token")
    assert answer.startswith(b"ERR Token not found"), answer


async def test_a_token_opens_nothing_at_another_hosts_relay_or_after_the_guest_moved(
    cloud: AllInOne, proxy: ConsoleProxyServer
) -> None:
    row = await _server(cloud)
    other = next(h for h in ("fake-0", "fake-1") if h != row["host"])
    _, token = _ws_url(proxy, await _console_url(cloud, row))
    # Presented at the other host's relay: the conductor refuses that host.
    answer = await _relay(_relay_of(cloud, other), token)
    assert answer.startswith(b"ERR "), answer
    # The refusal spent nothing: the token still opens the console where it belongs.
    assert await _relay(_relay_of(cloud, row["host"]), token) == b"OK\n"

    # The guest's row now says another host (it moved): its old host may not open it.
    _, token = _ws_url(proxy, await _console_url(cloud, row))
    async with cloud.db.writer() as conn:
        await instances_db.update(conn, row["uuid"], {"host": other, "node": other})
    answer = await _relay(_relay_of(cloud, row["host"]), token)
    assert answer.startswith(b"ERR "), answer
    # The other host does not own the token either.
    answer = await _relay(_relay_of(cloud, other), token)
    assert answer.startswith(b"ERR "), answer


async def test_only_a_compute_host_may_spend_a_token(cloud: AllInOne) -> None:
    row = await _server(cloud)
    _, token = _ws_url_of(await _console_url(cloud, row))
    # The API's identity (a controller) may not spend a user's token.
    with pytest.raises(exception.Forbidden):
        await ConductorAPI(cloud.api_transport).open_console(CTXT, token)
    async with cloud.db.reader() as conn:
        assert await consoles_db.get_valid(conn, token) is not None
