"""User data, a key pair and a config drive with the unmodified openstack CLI,
read back through the metadata proxy of the server's host.

``server create --user-data FILE --config-drive true --key-name k1`` on a
network; the server shows ``config_drive`` True; its host's metadata proxy
(``[metadata] listen``: the fleet's host i on the port plus i) serves
meta_data.json with the public key and the user data to a local forwarder
naming the server's address and network; the other host's proxy is refused.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.functional.api.cli import Cloud, free_port, free_port_run, parallel

pytestmark = pytest.mark.timeout(300)

DEMO = "nubes-demo"
USER_DATA = "#cloud-config\nhostname: from-user-data\n"


def _get(url: str, address: str, network_id: str) -> bytes:
    request = urllib.request.Request(
        url, headers={"X-Forwarded-For": address, "X-Nubes-Network-Id": network_id}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def test_server_create_with_user_data_and_a_config_drive(tmp_path: Path) -> None:
    from nubes.api.bootstrap import DEFAULT_IMAGE_NAME as image

    conf = tmp_path / "metadata.conf"
    cloud = Cloud(tmp_path / "state", 0, config_files=(conf,))
    base = 0

    def ports() -> None:
        # Two fake hosts: their proxies listen on base and base + 1.
        nonlocal base
        base = free_port_run(2)
        conf.write_text(f"[metadata]\nlisten = 127.0.0.1:{base}\n")
        cloud.port = free_port()

    ports()
    cloud.start_retrying(ports)
    try:

        def network() -> dict[str, str]:
            net = cloud.json(DEMO, "network", "create", "net1")
            cloud.openstack(DEMO, "subnet", "create", "--network", "net1",
                            "--subnet-range", "10.8.0.0/24", "s1")  # fmt: skip
            return dict(net)

        net, _ = parallel(network, lambda: cloud.openstack(DEMO, "keypair", "create", "k1"))
        data = tmp_path / "user-data"
        data.write_text(USER_DATA)
        server = cloud.json(
            DEMO, "server", "create", "--flavor", "m1.tiny", "--image", image,
            "--network", "net1", "--key-name", "k1", "--user-data", str(data),
            "--config-drive", "true", "--wait", "vm1",
        )  # fmt: skip
        assert server["status"] == "ACTIVE"
        assert str(server["config_drive"]) == "True"
        address = server["addresses"]["net1"][0]
        # Two fake hosts, a proxy each: only the server's host's answers.
        answers = {}
        for index in range(2):
            url = f"http://127.0.0.1:{base + index}"
            try:
                answers[index] = _get(f"{url}/openstack/latest/meta_data.json", address, net["id"])
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
        ((index, body),) = answers.items()
        meta = json.loads(body)
        assert meta["uuid"] == server["id"] and list(meta["public_keys"]) == ["k1"]
        assert meta["public_keys"]["k1"].startswith("ssh-")
        url = f"http://127.0.0.1:{base + index}"
        assert _get(f"{url}/openstack/latest/user_data", address, net["id"]).decode() == USER_DATA
        assert _get(f"{url}/latest/meta-data/local-ipv4", address, net["id"]).decode() == address
    finally:
        cloud.stop()
