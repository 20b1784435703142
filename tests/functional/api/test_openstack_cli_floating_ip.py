"""Routers and floating IPs with the unmodified openstack CLI and openstacksdk.

An admin makes the external network (as a private cloud's operator does);
a project makes a router with its gateway there and its network behind it,
boots a server, takes a floating IP and adds it to the server; the server
shows it as a floating address, the floating IP list shows the mapping,
and removing it, the router's interface and the router all work back.
"""

from __future__ import annotations

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, parallel

pytestmark = pytest.mark.timeout(300)

ADMIN, DEMO = "nubes-admin", "nubes-demo"


def test_openstack_cli_router_and_floating_ip(cloud: Cloud) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    def public() -> dict[str, object]:
        cloud.openstack(
            ADMIN, "network", "create", "--external", "--provider-network-type", "flat",
            "--provider-physical-network", "physnet1", "public",
        )  # fmt: skip
        made = cloud.json(
            ADMIN, "subnet", "create", "--network", "public", "--subnet-range", "203.0.113.0/24",
            "--no-dhcp", "--allocation-pool", "start=203.0.113.10,end=203.0.113.50", "public-sub",
        )  # fmt: skip
        return dict(made)

    def private() -> None:
        cloud.openstack(DEMO, "network", "create", "net1")
        cloud.openstack(
            DEMO, "subnet", "create", "--network", "net1", "--subnet-range", "10.9.0.0/24", "sub1"
        )
        cloud.openstack(DEMO, "router", "create", "r1")
        cloud.openstack(DEMO, "router", "add", "subnet", "r1", "sub1")

    parallel(public, private)
    cloud.openstack(DEMO, "router", "set", "--external-gateway", "public", "r1")
    router = cloud.json(DEMO, "router", "show", "r1")
    gateway = router["external_gateway_info"]
    assert gateway["external_fixed_ips"][0]["ip_address"] == "203.0.113.10", router
    assert router["interfaces_info"][0]["ip_address"] == "10.9.0.1", router
    shown = cloud.json(ADMIN, "network", "show", "public")
    assert shown["provider:network_type"] == "flat"
    assert shown["provider:physical_network"] == "physnet1"

    server = cloud.json(
        DEMO, "server", "create", "--flavor", "m1.tiny", "--image", image, "--network", "net1",
        "--wait", "vm1",
    )  # fmt: skip
    assert server["addresses"] == {"net1": ["10.9.0.2"]}, server["addresses"]
    fip = cloud.json(DEMO, "floating", "ip", "create", "public")
    assert fip["floating_ip_address"] == "203.0.113.11" and fip["status"] == "DOWN"
    cloud.openstack(DEMO, "server", "add", "floating", "ip", "vm1", "203.0.113.11")
    listed = cloud.json(DEMO, "floating", "ip", "list")
    assert [(f["Floating IP Address"], f["Fixed IP Address"]) for f in listed] == [
        ("203.0.113.11", "10.9.0.2")
    ]
    shown = cloud.json(DEMO, "server", "show", "vm1")
    assert shown["addresses"] == {"net1": ["10.9.0.2", "203.0.113.11"]}, shown["addresses"]
    assert cloud.json(DEMO, "floating", "ip", "show", "203.0.113.11")["status"] == "ACTIVE"

    # openstacksdk sees it as the server's public address (what Ansible reads),
    # and its create_server(auto_ip=True) (Ansible's default) gives a new
    # server on the routed network a floating IP of its own.
    sdk = connect_sdk(cloud, DEMO)
    assert sdk.get_server("vm1").public_v4 == "203.0.113.11"
    made = sdk.create_server(
        "vm2", image=image, flavor="m1.tiny", network="net1", wait=True, auto_ip=True, timeout=60
    )
    assert made.addresses["net1"][-1]["addr"] == "203.0.113.12", made.addresses
    assert sdk.get_server("vm2").public_v4 == "203.0.113.12"
    sdk.delete_server("vm2", wait=True, delete_ips=True, timeout=60)
    assert [f["Floating IP Address"] for f in cloud.json(DEMO, "floating", "ip", "list")] == [
        "203.0.113.11"
    ]

    # Neutron's refusals reach the CLI: the interface carries a floating IP.
    refused = cloud.openstack(DEMO, "router", "remove", "subnet", "r1", "sub1", check=False)
    assert refused.returncode != 0 and "required by one or more floating IPs" in refused.stderr

    cloud.openstack(DEMO, "server", "remove", "floating", "ip", "vm1", "203.0.113.11")
    assert cloud.json(DEMO, "floating", "ip", "show", "203.0.113.11")["port_id"] is None
    cloud.openstack(DEMO, "server", "delete", "--wait", "vm1")
    cloud.openstack(DEMO, "floating", "ip", "delete", "203.0.113.11")
    cloud.openstack(DEMO, "router", "remove", "subnet", "r1", "sub1")
    cloud.openstack(DEMO, "router", "unset", "--external-gateway", "r1")
    cloud.openstack(DEMO, "router", "delete", "r1")
    assert cloud.json(DEMO, "router", "list") == []
    assert cloud.json(DEMO, "floating", "ip", "list") == []
    cloud.openstack(ADMIN, "network", "delete", "public")
