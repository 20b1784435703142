"""The metadata proxy's HTTP side: who a request is attributed to, and its answers.

The conductor's answer is a real InstanceMetadata handed in through the
proxy's ``fetch`` seam (``tests/functional/test_metadata.py`` covers the
path through the conductor): what is under test is how the proxy names the
guest and the network, and what it answers.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.metadata import content
from nubes.metadata.proxy import MetadataProxy, parse_listen
from nubes.objects.instance_metadata import InstanceMetadata

UUID = "6f1c1b2a-1111-4222-8333-944455556666"
PORT = {
    "id": "9d0e5d6e-aaaa-4bbb-8ccc-ddddeeeeffff",
    "mac_address": "fa:16:3e:00:00:01",
    "network_id": "net-1",
    "mtu": 1450,
    "fixed_ips": [
        {
            "ip_address": "10.1.0.5",
            "subnet": {
                "id": "s1",
                "ip_version": 4,
                "cidr": "10.1.0.0/24",
                "gateway_ip": "10.1.0.1",
                "dns_nameservers": [],
                "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}],
                "enable_dhcp": True,
                "ipv6_address_mode": None,
            },
        },
        {
            "ip_address": "fd00::5",
            "subnet": {
                "id": "s6",
                "ip_version": 6,
                "cidr": "fd00::/64",
                "gateway_ip": None,
                "dns_nameservers": ["fd00::53"],
                "host_routes": [],
                "enable_dhcp": True,
                "ipv6_address_mode": None,
            },
        },
    ],
}


def _meta() -> InstanceMetadata:
    return InstanceMetadata(uuid=UUID, name="vm", hostname="vm", network_info=json.dumps([PORT]))


class Conductor:
    """What the conductor answered, and who was asked for."""

    def __init__(self, error: Exception | None = None) -> None:
        self.asked: list[tuple[str, str]] = []
        self.error = error

    async def fetch(self, ctxt: RequestContext, network_id: str, address: str) -> InstanceMetadata:
        self.asked.append((network_id, address))
        if self.error is not None:
            raise self.error
        return _meta()


async def test_a_guest_is_its_source_address_on_its_listeners_network() -> None:
    conductor = Conductor()
    proxy = MetadataProxy(fetch=conductor.fetch)
    # Headers from a guest are ignored: it cannot claim another address or network.
    forged = {"x-forwarded-for": "10.1.0.99", "x-nubes-network-id": "net-2"}
    status, body, _ = await proxy.respond(
        "10.1.0.5", "/latest/meta-data/local-ipv4", forged, "net-1"
    )
    assert (status, body) == (200, b"10.1.0.5")
    assert conductor.asked == [("net-1", "10.1.0.5")]
    # Cached: a second read asks no more.
    assert (await proxy.respond("10.1.0.5", "/openstack", {}, "net-1"))[0] == 200
    assert conductor.asked == [("net-1", "10.1.0.5")]


async def test_a_local_forwarder_names_guest_and_network() -> None:
    conductor = Conductor()
    proxy = MetadataProxy(fetch=conductor.fetch, cache_expiration=0)
    headers = {"x-forwarded-for": "10.1.0.5, 127.0.0.1", "x-nubes-network-id": "net-1"}
    status, _, ctype = await proxy.respond(
        "127.0.0.1", "/openstack/latest/meta_data.json?x=1", headers, None
    )
    assert (status, ctype) == (200, "application/json")
    # The listener's own network when the forwarder names none.
    await proxy.respond("::1", "/", {"x-forwarded-for": "10.1.0.5"}, "net-7")
    assert conductor.asked == [("net-1", "10.1.0.5"), ("net-7", "10.1.0.5")]
    for headers in ({}, {"x-forwarded-for": "10.1.0.5"}, {"x-forwarded-for": "not-an-ip"}):
        status, *_ = await proxy.respond("127.0.0.1", "/", headers, None)
        assert status == 400, headers


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (exception.Forbidden(reason="not yours"), 404),
        (exception.InstanceNotFound(instance_id="x"), 404),
        (exception.MessagingTimeout("no conductor"), 503),
    ],
)
async def test_refusals_and_outages(error: Exception, status: int) -> None:
    proxy = MetadataProxy(fetch=Conductor(error).fetch)
    assert (await proxy.respond("10.1.0.5", "/", {}, "net-1"))[0] == status


async def test_over_http() -> None:
    proxy = MetadataProxy(fetch=Conductor().fetch)
    await proxy.start()
    host, port = await proxy.listen("127.0.0.1", 0)

    async def send(raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(raw)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    try:
        who = b"X-Forwarded-For: 10.1.0.5\r\nX-Nubes-Network-Id: net-1\r\n\r\n"
        ok = await send(b"GET /latest/meta-data/hostname HTTP/1.1\r\n" + who)
        assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"\r\n\r\nvm")
        head = await send(b"HEAD /latest/meta-data/hostname HTTP/1.1\r\n" + who)
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert (await send(b"POST / HTTP/1.1\r\n" + who)).startswith(b"HTTP/1.1 405 ")
        assert (await send(b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        missing = await send(b"GET /latest/meta-data/nothing HTTP/1.1\r\n" + who)
        assert missing.startswith(b"HTTP/1.1 404 ")
        await proxy.close("net-x")  # another network's: this listener stays
        assert len(proxy.listeners) == 1
    finally:
        await proxy.stop()


def test_network_data_and_listen_values() -> None:
    data = content.network_data(_meta())
    v4, v6 = data["networks"]
    assert (v4["type"], v4["netmask"], v6["type"]) == ("ipv4", "255.255.255.0", "ipv6")
    assert v4["routes"] == [
        {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.1.0.254"},
        {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.1.0.1"},
    ]
    assert v6["routes"] == [] and data["services"] == [{"type": "dns", "address": "fd00::53"}]
    assert data["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:01"
    assert content.lookup(_meta(), "/openstack/latest/user_data") is None
    assert (
        content.lookup(_meta(), "/") == "\n".join((*content.EC2_VERSIONS, content.LATEST)).encode()
    )
    assert parse_listen("[::1]:8775") == ("::1", 8775)
    assert parse_listen(":8775") == ("127.0.0.1", 8775)
    for bad in ("8775", "host:", "h:99999", "h:x"):
        with pytest.raises(exception.ConfigError):
            parse_listen(bad)


async def test_a_cached_answer_for_a_guest_gone_from_the_host_is_asked_again() -> None:
    # Its address may be another instance's by now: IPAM reuses freed addresses.
    conductor = Conductor()
    running = {UUID}

    async def present(uuid: str) -> bool:
        return uuid in running

    proxy = MetadataProxy(fetch=conductor.fetch, present=present)
    await proxy.respond("10.1.0.5", "/", {}, "net-1")
    await proxy.respond("10.1.0.5", "/", {}, "net-1")
    assert len(conductor.asked) == 1
    running.clear()
    await proxy.respond("10.1.0.5", "/", {}, "net-1")
    assert len(conductor.asked) == 2


async def test_a_guest_posts_its_password_once_and_reads_it_back() -> None:
    """``POST /openstack/latest/password`` as Nova's metadata handler takes it:
    at most 256 bytes, once (409 after), only at versions that have it."""
    stored: dict[str, str] = {}

    async def fetch(ctxt: RequestContext, network_id: str, address: str) -> InstanceMetadata:
        meta = _meta()
        meta.password = stored.get(address, "")
        return meta

    async def store(ctxt: RequestContext, network_id: str, address: str, pw: str) -> bool:
        if stored.get(address):
            return False
        stored[address] = pw
        return True

    # The conductor's side (InstanceMetadata.set_password) is tested in
    # tests/security/test_compromised_host.py; here, what the proxy does.
    proxy = MetadataProxy(cache_expiration=60, fetch=fetch, store=store)
    try:
        host, port = await proxy.listen("127.0.0.1", 0, "net-1")

        async def http(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.5\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            answer = await reader.read()
            writer.close()
            head, _, payload = answer.partition(b"\r\n\r\n")
            return int(head.split()[1]), payload

        assert await http("GET", "/openstack/latest/password") == (200, b"")
        assert (await http("POST", "/openstack/latest/password", b"z" * 257))[0] == 400
        assert (await http("POST", "/openstack/2012-08-10/password", b"enc"))[0] == 405
        assert (await http("POST", "/openstack/latest/meta_data.json", b"enc"))[0] == 405
        assert (await http("POST", "/openstack/2013-04-04/password", b"enc"))[0] == 200
        # The cached metadata was dropped: the new password shows at once.
        assert await http("GET", "/openstack/latest/password") == (200, b"enc")
        assert (await http("POST", "/openstack/latest/password", b"other"))[0] == 409
        assert stored == {"10.0.0.5": "enc"}
        # Never part of the config drive's files.
        assert content.lookup(_meta(), "/openstack/latest/password") is None
    finally:
        await proxy.stop()
