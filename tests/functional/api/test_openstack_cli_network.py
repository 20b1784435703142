"""Networking and key pairs with the unmodified openstack CLI and openstacksdk.

A user makes a network, a subnet, a port, a security group with a rule and
a key pair; boots a server on the network with the key pair and the group
and sees its address; openstacksdk's ``create_server(wait=True)`` (what
Ansible's openstack.cloud.server runs) ends ACTIVE with an address instead
of deleting the server; then everything is deleted again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.api.cli import Cloud, connect_sdk, parallel

pytestmark = pytest.mark.timeout(300)

DEMO = "nubes-demo"


def test_openstack_cli_network_keypair_and_a_server_with_an_address(
    cloud: Cloud, tmp_path: Path
) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    def network() -> tuple[dict[str, object], dict[str, object]]:
        cloud.openstack(DEMO, "network", "create", "net1")
        subnet = cloud.json(
            DEMO, "subnet", "create", "--network", "net1", "--subnet-range", "10.9.0.0/24", "sub1"
        )
        port = cloud.json(DEMO, "port", "create", "--network", "net1", "p1")
        return subnet, port

    def security() -> list[dict[str, object]]:
        cloud.openstack(DEMO, "security", "group", "create", "web")
        cloud.openstack(
            DEMO, "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22",
            "web",
        )  # fmt: skip
        return list(cloud.json(DEMO, "security", "group", "rule", "list", "web"))

    def keypair() -> str:
        return cloud.openstack(DEMO, "keypair", "create", "k1").stdout

    (subnet, port), rules, private_key = parallel(network, security, keypair)
    assert subnet["gateway_ip"] == "10.9.0.1" and subnet["cidr"] == "10.9.0.0/24"
    assert port["fixed_ips"][0]["ip_address"] == "10.9.0.2"  # type: ignore[index]
    assert port["mac_address"].startswith("fa:16:3e:")  # type: ignore[attr-defined]
    shown = sorted((str(r["IP Protocol"]), r["Direction"], r["Port Range"]) for r in rules)
    assert shown == [("None", "egress", ""), ("None", "egress", ""), ("tcp", "ingress", "22:22")], (
        rules
    )
    # The CLI makes an ed25519 key itself and imports its public half.
    assert "PRIVATE KEY-----" in private_key

    server = cloud.json(
        DEMO, "server", "create", "--flavor", "m1.tiny", "--image", image, "--network", "net1",
        "--key-name", "k1", "--security-group", "web", "--wait", "vm1",
    )  # fmt: skip
    assert server["status"] == "ACTIVE" and server["key_name"] == "k1"
    assert server["addresses"] == {"net1": ["10.9.0.3"]}, server["addresses"]
    # `server ssh` finds the fixed address in the server's `addresses` (there
    # is no floating IP: --private) and runs ssh to it; an ssh of our own on
    # PATH writes down what it was asked to run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "ssh-args"}\n')
    ssh.chmod(0o755)
    cloud.openstack(
        DEMO, "server", "ssh", "--private", "vm1", "--", "-i", "k1.pem", path=str(bin_dir)
    )
    assert (tmp_path / "ssh-args").read_text().split() == ["10.9.0.3", "-i", "k1.pem", "-l", "demo"]

    sdk = connect_sdk(cloud, DEMO)
    made = sdk.create_server(
        "sdk-vm", image=image, flavor="m1.tiny", network="net1", wait=True, timeout=60
    )
    assert made.status == "ACTIVE" and made.private_v4 == "10.9.0.4", made.addresses

    listed, networks, ports, keys = parallel(
        lambda: cloud.json(DEMO, "server", "list", "--ip", "10.9.0.3"),
        lambda: cloud.json(DEMO, "network", "list"),
        lambda: cloud.json(DEMO, "port", "list", "--server", "vm1"),
        lambda: cloud.json(DEMO, "keypair", "list"),
    )
    assert [s["Name"] for s in listed] == ["vm1"]
    assert [n["Name"] for n in networks] == ["net1"]
    assert [p["Status"] for p in ports] == ["ACTIVE"]
    assert [k["Name"] for k in keys] == ["k1"]

    cloud.openstack(DEMO, "server", "delete", "--wait", "vm1", "sdk-vm")
    parallel(
        lambda: cloud.openstack(DEMO, "port", "delete", "p1"),
        lambda: cloud.openstack(DEMO, "keypair", "delete", "k1"),
    )
    parallel(
        lambda: cloud.openstack(DEMO, "network", "delete", "net1"),
        lambda: cloud.openstack(DEMO, "security", "group", "delete", "web"),
    )
    left = parallel(
        lambda: cloud.json(DEMO, "port", "list"),
        lambda: cloud.json(DEMO, "network", "list"),
        lambda: cloud.json(DEMO, "security", "group", "list"),
    )
    assert left[0] == [] and left[1] == []
    assert [g["Name"] for g in left[2]] == ["default"]
