"""Real guests read their metadata, and keep their connectivity through a live migration.

Controllers as processes, two compute hosts each in its own namespace with
its own libvirtd and network agent (nubes.testing.realhosts). Two guests
with a key pair and user data, on one network, on different hosts; the
test guest's ``/init`` (nubes.testing.guestimage, ``nubes.metadata=1`` and
``nubes.configdrive=1``) prints on its console what it read:

- from ``http://169.254.169.254`` (its host's metadata proxy, through the
  agent's DNAT): its own ``meta_data.json`` (instance uuid, hostname,
  public key), the EC2 ``public-keys/0/openssh-key`` and its user data;
- the same request sent from the other guest's address (claimed on its
  NIC): never answered, so a guest cannot read another instance's metadata;
- from its config drive (an IDE cdrom, ISO 9660) when it has one: the same
  ``meta_data.json``.

Then the first guest is live-migrated to the other host while the second
pings it every second: its address and its port move with it (the binding
names the destination, its tap is on the destination's bridge and gone from
the source's), and the pings resume; how many were lost is printed.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from nubes.api import keypairs
from nubes.compute.network import names
from nubes.db.api import network as net_db
from nubes.network import ports
from nubes.network.resources import NetworkService
from nubes.objects.states import MigrationStatus
from nubes.testing.realhosts import RealHostsCloud, context

pytestmark = [pytest.mark.timeout(480), pytest.mark.libvirt]

ADDRESSES = ("10.89.0.10", "10.89.0.11")
CMDLINE = (
    f"console=ttyS0 no_timer_check nubes.dhcp=1 nubes.ping={','.join(ADDRESSES)} "
    "nubes.metadata=1 nubes.configdrive=1"
)


def _field(console: str, name: str, end: str = "md-end") -> str:
    """The text the guest printed between ``NUBES-GUEST <name>`` and its end marker."""
    found = re.search(rf"NUBES-GUEST {name} (.*?) ?NUBES-GUEST {end}", console)
    assert found is not None, f"no {name!r} on the console:\n{console[-800:]}"
    return found.group(1).strip()


def _pings(console: str, address: str) -> tuple[int, int]:
    """How many pings of ``address`` the console says answered, and failed."""
    return (
        console.count(f"NUBES-GUEST ping {address} ok"),
        console.count(f"NUBES-GUEST ping {address} fail"),
    )


async def test_guests_read_their_own_metadata_and_a_live_migration_keeps_connectivity(
    namespaced_hosts: None, rabbit_url: str, postgres_url: str, tmp_path: Path
) -> None:
    real = await RealHostsCloud.start(rabbit_url, postgres_url, tmp_path)
    try:
        db = real.cloud.db
        assert db is not None
        ctxt = context()
        conf = real._conf()
        service = NetworkService(db, conf)
        net = await service.create_network(ctxt, {"name": "md"})
        await service.create_subnet(
            ctxt, {"network_id": net["id"], "ip_version": 4, "cidr": "10.89.0.0/24"}
        )
        group = await service.create_security_group(ctxt, {"name": "md"})
        await service.create_rule(
            ctxt, {"security_group_id": group["id"], "direction": "ingress", "protocol": "icmp"}
        )
        key = await keypairs.create(
            db,
            conf,
            project_id=ctxt.project_id,
            user_id=ctxt.user_id,
            name="md-key",
            key_type="ssh",
            public_key=None,
        )
        image = {
            **real.image,
            "properties": {**real.image["properties"], "os_command_line": CMDLINE},
        }
        uuids: list[str] = []
        for i, address in enumerate(ADDRESSES):
            nics = await ports.resolve(
                service, ctxt, [{"uuid": net["id"], "fixed_ip": address}], [{"name": "md"}], 1
            )
            hints = {"different_host": uuids} if uuids else None
            uuid = await real.create_server(
                f"md-{i}",
                image,
                network_requests=nics,
                scheduler_hints=hints,
                key_name="md-key",
                user_data=base64.b64encode(f"hello from md-{i}".encode()).decode(),
                # Only the first has a config drive: the second shows there is none.
                config_drive=i == 0,
            )
            uuids.append(uuid)
        rows = [await real.wait(u, lambda r: r["vm_state"] == "active", 180) for u in uuids]
        hosts = [r["host"] for r in rows]
        assert hosts[0] != hosts[1]

        # 1. Each guest read its own metadata through its host's proxy.
        for i, (uuid, host, row) in enumerate(zip(uuids, hosts, rows, strict=True)):
            console = await real.wait_console(host, uuid, "NUBES-GUEST md-as", timeout=180)
            meta = json.loads(_field(console, "md-json"))
            assert meta["uuid"] == uuid
            assert meta["hostname"] == row["hostname"]
            assert meta["public_keys"] == {"md-key": key["public_key"]}
            assert meta["keys"][0]["data"] == key["public_key"]
            assert _field(console, "md-key") == key["public_key"]
            assert _field(console, "md-user") == f"hello from md-{i}"
        # 2. ... and nobody else's: the request from the other guest's address
        # is dropped (anti-spoofing at the tap), and would be refused anyway.
        for uuid, host, other, other_uuid in zip(
            uuids, hosts, reversed(ADDRESSES), reversed(uuids), strict=True
        ):
            console = real.console(host, uuid)
            assert _field(console, f"md-as {other}") == "fail", console[-800:]
            assert other_uuid not in console
        # 3. The config drive holds the same document; the guest without one has none.
        console = await real.wait_console(hosts[0], uuids[0], "NUBES-GUEST cd-end", timeout=60)
        drive = json.loads(_field(console, "cd-json", "cd-end"))
        assert drive["uuid"] == uuids[0]
        assert drive["public_keys"] == {"md-key": key["public_key"]}
        await real.wait_console(hosts[1], uuids[1], "NUBES-GUEST configdrive none", timeout=60)

        # 4. Live migration of the first guest to the second's host while the
        # second pings it every second.
        mover, watcher = uuids[0], uuids[1]
        source, destination = hosts
        await real.wait_console(destination, watcher, f"NUBES-GUEST ping {ADDRESSES[0]} ok")
        ok_before, fail_before = _pings(real.console(destination, watcher), ADDRESSES[0])
        start = time.monotonic()
        await real.moves(lambda api, c: api.live_migrate_server(c, mover))
        row = await real.wait(
            mover, lambda r: r["host"] == destination and r["task_state"] is None, 180
        )
        migrated = time.monotonic() - start
        assert row["vm_state"] == "active"
        [migration] = await real.migrations(mover)
        assert migration["status"] == MigrationStatus.COMPLETED, migration
        # The pings resume: three more answered after the move ended.
        ok_after, _ = _pings(real.console(destination, watcher), ADDRESSES[0])
        await real.wait_console(
            destination, watcher, f"NUBES-GUEST ping {ADDRESSES[0]} ok", count=ok_after + 3
        )
        ok_end, fail_end = _pings(real.console(destination, watcher), ADDRESSES[0])
        lost = fail_end - fail_before
        print(
            f"\nlive migration took {migrated:.1f} s; {lost} of "
            f"{lost + ok_end - ok_before} pings lost"
        )
        # The moved guest kept its address and reaches the other from its new host.
        moved = await real.wait_console(destination, mover, f"NUBES-GUEST ping {ADDRESSES[1]} ok")
        assert moved.count("NUBES-GUEST boot") == 1, "the guest rebooted"
        async with db.reader() as conn:
            [port] = await net_db.ports_of_devices(conn, [mover])
            fixed = await net_db.fixed_ips_by_port(conn, [port["id"]])
        assert port["binding_host_id"] == destination
        assert [ip["ip_address"] for ip in fixed[port["id"]]] == [ADDRESSES[0]]
        bridge = names.bridge(net["id"])
        taps = real.host(destination).run(["ip", "-o", "link", "show", "master", bridge]).stdout
        assert names.tap(port["id"]) in taps
        left = real.host(source).run(
            ["ip", "-o", "link", "show", names.tap(port["id"])], check=False
        )
        assert left.returncode != 0, left.stdout
    finally:
        await real.stop()
