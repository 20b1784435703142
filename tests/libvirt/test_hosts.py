"""Compute hosts as hosts: ``nubes compute`` and its own libvirtd in a network
namespace each, reaching the broker and each other but never the database.
"""

from __future__ import annotations

import configparser
import shutil
from pathlib import Path

import libvirt
import pytest
from sqlalchemy.engine import make_url

from nubes.testing.netns import HostNetwork
from nubes.testing.processes import ProcessCloud

pytestmark = [pytest.mark.timeout(180), pytest.mark.libvirt]


def _host_uuid(uri: str) -> str:
    """The host UUID a libvirtd reports (its capabilities' first <uuid>)."""
    conn = libvirt.open(uri)
    try:
        return conn.getCapabilities().split("<uuid>", 1)[1].split("</uuid>", 1)[0]
    finally:
        conn.close()


async def test_namespaced_computes_reach_the_broker_and_each_other_never_the_database(
    host_network: HostNetwork, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create one broker user per identity")
    net = host_network
    cloud = ProcessCloud(rabbit_url, postgres_url, tmp_path / "cloud", hosts=2)
    try:
        await cloud.setup(conductors=("a",))
        await cloud.start_conductor("a")
        broker_url = make_url(rabbit_url.replace("rabbit://", "amqp://", 1))
        broker = net.forward(broker_url.port or 5672)
        computes = []
        for name, host in zip(cloud.host_names, net.hosts, strict=True):
            host.start_libvirtd()
            options = host.compute_options(f"http://{net.gateway}:9/image")
            computes.append(
                await cloud.start_compute(name, options=options, broker=broker, wrap=host.wrap(()))
            )
        await cloud.wait_hosts_registered(timeout=90)

        # Each compute runs inside its host's namespace, on its own libvirtd.
        for proc, host in zip(computes, net.hosts, strict=True):
            assert proc.pid in host.pids()
        uris = [h.libvirtd.uri for h in net.hosts if h.libvirtd is not None]
        assert len({_host_uuid(u) for u in uris}) == 2

        # Hosts reach each other's migration port, and the broker through the gateway.
        a, b = net.hosts
        assert a.can_connect(b.address, 16509) and b.can_connect(a.address, 16509)
        assert a.can_connect(*broker)

        # The database is not reachable from a compute namespace, at any address.
        db = make_url(postgres_url)
        db_port = db.port or 5432
        for address in (net.gateway, "127.0.0.1", db.host or "127.0.0.1"):
            assert not a.can_connect(address, db_port), f"database reachable at {address}"
        assert a.can_connect(net.gateway, broker[1])  # the check can succeed at all

        # And the compute's configuration holds no database credentials.
        for name in cloud.host_names:
            text = (cloud.workdir / f"compute-{name}.conf").read_text()
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(text)
            assert not parser.has_section("database")
            assert cloud.db_name not in text and "postgresql" not in text
            for section in parser.sections():
                assert "connection" not in parser[section], section
    finally:
        await cloud.cleanup()
