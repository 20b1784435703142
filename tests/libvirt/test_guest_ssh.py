"""The test guest's ssh variant boots and lets its key pair in over ssh.

The image Tempest's guest validation logs into (``guestimage.build(ssh=True)``,
registered as ``nubes-guest-ssh``): a real guest on a network, with a key
pair, answers ssh from its host (whose bridge holds the network's gateway
address) as Tempest's RemoteClient would ask: its hostname from the
metadata service, ``sudo``, its CPUs, its disks through ``lsblk`` and the
metadata through ``curl``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from nubes.api import images, keypairs
from nubes.api.allinone import register_guest_images
from nubes.network import ports
from nubes.network.resources import NetworkService
from nubes.testing import guestimage
from nubes.testing.netlab import Namespaces
from nubes.testing.realhosts import RealHostsCloud, context

pytestmark = [pytest.mark.timeout(420), pytest.mark.libvirt]

#: What Tempest's checks run, one per line of output (separated by a marker).
COMMANDS = (
    "hostname",
    "sudo id -u",
    "grep -c ^processor /proc/cpuinfo",
    "lsblk -lb --nodeps",
    "curl -V >/dev/null && curl http://169.254.169.254/openstack/latest/meta_data.json",
)


def _ssh(
    lab: Namespaces, ns: str, key: Path, address: str, command: str
) -> subprocess.CompletedProcess[str]:
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    options += ["-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "-i", str(key)]
    return lab.run(ns, "ssh", *options, f"{guestimage.SSH_USER}@{address}", command, check=False)


async def test_the_ssh_guest_lets_its_key_pair_in(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path, hosts=1)
    lab = Namespaces()
    try:
        db = real.cloud.db
        assert db is not None
        ctxt = context()
        conf = real._conf()
        image_id = await register_guest_images(db, conf, ctxt, real.image_dir, 1 << 30, ssh=True)
        image = await images.get_active_image(db, ctxt, image_id)
        assert image["properties"]["os_command_line"] == guestimage.SSH_CMDLINE
        service = NetworkService(db, conf)
        net = await service.create_network(ctxt, {"name": "ssh"})
        await service.create_subnet(ctxt, {"network_id": net["id"], "cidr": "10.88.0.0/24"})
        group = await service.create_security_group(ctxt, {"name": "ssh"})
        rule = {"direction": "ingress", "protocol": "tcp", "port_range_min": 22}
        rule["port_range_max"] = 22
        await service.create_rule(ctxt, {"security_group_id": group["id"], **rule})
        key = await keypairs.create(
            db,
            conf,
            project_id=ctxt.project_id,
            user_id=ctxt.user_id,
            name="ssh-key",
            key_type="ssh",
            public_key=None,
        )
        key_file = tmp_path / "key.pem"
        key_file.write_text(key["private_key"])
        key_file.chmod(0o600)
        nics = await ports.resolve(service, ctxt, [{"uuid": net["id"]}], [{"name": "ssh"}], 1)
        uuid = await real.create_server("ssh-0", image, network_requests=nics, key_name="ssh-key")
        row = await real.wait(uuid, lambda r: r["vm_state"] == "active", 180)
        console = await real.wait_console(row["host"], uuid, guestimage.SSH_MARKER, timeout=240)
        assert f"{guestimage.SSH_MARKER} {row['hostname']} key yes" in console, console[-800:]
        async with db.reader() as conn:
            (port,) = await ports.interfaces(conn, uuid)
        fixed = port["fixed_ips"][0]["ip_address"]
        (host,) = real.net.hosts

        done: subprocess.CompletedProcess[str] | None = None
        for _ in range(30):  # dropbear makes its host key at the first connection
            done = await asyncio.to_thread(
                _ssh, lab, host.netns, key_file, fixed, " ; echo @@ ; ".join(COMMANDS)
            )
            if done.returncode == 0:
                break
        assert done is not None and done.returncode == 0, done and done.stderr
        hostname, uid, cpus, disks, meta = (part.strip() for part in done.stdout.split("@@"))
        assert hostname == row["hostname"]
        assert uid == "0"
        assert cpus == "1"
        header, *rows = disks.splitlines()
        column = header.index("TYPE")
        assert [r.split()[0] for r in rows if r[column : column + 4] == "disk"] == ["vda"]
        assert json.loads(meta)["uuid"] == uuid

        # Someone else's key is refused.
        other = tmp_path / "other.pem"
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)]
        await asyncio.to_thread(subprocess.run, keygen, check=True)
        refused = await asyncio.to_thread(_ssh, lab, host.netns, other, fixed, "true")
        assert refused.returncode != 0
    finally:
        lab.cleanup()
        await real.stop()
