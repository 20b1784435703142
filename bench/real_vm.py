"""Real guests: what nubes adds to a boot and to a live migration, and the agent's RSS.

    sudo python bench/real_vm.py [--guests 10] [--rounds 3]

Needs root, the packages of nubes.testing.libvirtd.DEBIAN_PACKAGES, RabbitMQ
and PostgreSQL (NUBES_TEST_RABBIT_URL / NUBES_TEST_POSTGRES_URL). It starts a
nubes.testing.realhosts cloud: controllers as processes, two compute hosts
each in its own network namespace with its own libvirtd, and measures side
by side, on the same guest image (the busybox test guest, 96 MiB, TCG):

- boot: ``POST /servers`` (ServersAPI.create_servers, as the API does) to
  ACTIVE, against the same guest made directly on the same host's libvirtd
  (qcow2 overlay over the cached image, ``defineXML`` and ``create``), each
  a median of ``--rounds`` (after one warm-up boot that fills the cache);
- live migration: ``os-migrateLive`` to the migration ``completed`` and the
  instance settled on the other host, against ``virsh migrate --live --p2p
  --copy-storage-inc`` of the directly made guest between the same two
  libvirtd, medians of ``--rounds`` (back and forth);
- the compute agent's RSS with ``--guests`` guests running on it.

Targets: nubes adds at most 30 % (or 0.5 s) to a boot and to a live
migration. The last line ends with the boot ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from nubes.compute.virt.libvirt.guest import GuestSpec, InstanceFiles, domain_xml
from nubes.testing.realhosts import FLAVOR, RealHostsCloud
from nubes.testing.servers import POSTGRES_URL, RABBIT_URL


def _active(r: dict[str, Any]) -> bool:
    return r["vm_state"] == "active" and r["task_state"] is None


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Direct:
    """The same guest made straight on a host's libvirtd, without nubes."""

    def __init__(self, real: RealHostsCloud, host: str) -> None:
        self.real = real
        self.host = host
        self.uuid = str(uuid.uuid4())
        self.name = f"direct-{self.uuid[:8]}"

    def files(self, host: str) -> InstanceFiles:
        return self.real.files(host, self.uuid)

    def overlay(self, host: str) -> None:
        """The guest's files on ``host`` over that host's cache (as pre_live does)."""
        files = self.files(host)
        base = self.real.host(host).workdir / "instances" / "_base"
        files.directory.mkdir(parents=True, exist_ok=True)
        image = self.real.image
        props = image["properties"]
        for name, target in (
            (props["kernel_id"], files.kernel),
            (props["ramdisk_id"], files.ramdisk),
        ):
            if not target.exists():
                target.hardlink_to(base / name)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(base / image["id"]), str(files.disk), f"{FLAVOR['root_gb']}G"],
            check=True,
        )  # fmt: skip

    def xml(self, host: str) -> str:
        spec = GuestSpec(
            uuid=self.uuid, virt_type="qemu", memory_mb=FLAVOR["memory_mb"], vcpus=1,
            files=self.files(host), direct_kernel=True, with_ramdisk=True,
        )  # fmt: skip
        return domain_xml(spec).replace(f"nubes-{self.uuid}", self.name)

    def boot(self) -> float:
        import libvirt

        lv = self.real.host(self.host).libvirtd
        assert lv is not None
        started = time.perf_counter()
        self.overlay(self.host)
        conn = libvirt.open(lv.uri)
        try:
            conn.defineXML(self.xml(self.host)).create()
        finally:
            conn.close()
        return time.perf_counter() - started

    def remove(self) -> None:
        import libvirt

        lv = self.real.host(self.host).libvirtd
        assert lv is not None
        conn = libvirt.open(lv.uri)
        try:
            dom = conn.lookupByName(self.name)
            dom.destroy()
            dom.undefine()
        finally:
            conn.close()
        subprocess.run(["rm", "-rf", str(self.files(self.host).directory)], check=True)

    def migrate(self, dest: str) -> float:
        source_lv, dest_lv = self.real.host(self.host).libvirtd, self.real.host(dest).libvirtd
        assert source_lv is not None and dest_lv is not None and dest_lv.tcp_uri is not None
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as xml:
            xml.write(self.xml(dest))
            xml.flush()
            started = time.perf_counter()
            self.overlay(dest)
            subprocess.run(
                ["virsh", "-c", source_lv.uri, "migrate", "--live", "--p2p", "--persistent",
                 "--undefinesource", "--copy-storage-inc", "--migrate-disks", "vda",
                 "--xml", xml.name, "--persistent-xml", xml.name, self.name, dest_lv.tcp_uri],
                check=True, capture_output=True,
            )  # fmt: skip
            took = time.perf_counter() - started
        subprocess.run(["rm", "-rf", str(self.files(self.host).directory)], check=True)
        self.host = dest
        return took


async def _nubes_boot(real: RealHostsCloud, name: str) -> tuple[str, float]:
    started = time.perf_counter()
    uuid_ = await real.create_server(name)
    await real.wait(uuid_, _active, timeout=300, poll=0.02)
    return uuid_, time.perf_counter() - started


async def _nubes_migrate(real: RealHostsCloud, uuid_: str) -> float:
    before = (await real.row(uuid_))["host"]
    started = time.perf_counter()
    await real.moves(lambda api, ctxt: api.live_migrate_server(ctxt, uuid_))
    await real.wait(uuid_, lambda r: _active(r) and r["host"] != before, timeout=300, poll=0.02)
    return time.perf_counter() - started


def _ratio(nubes: float, direct: float) -> str:
    added = nubes - direct
    ok = added <= max(0.3 * direct, 0.5)
    return f"{nubes / direct:.2f}x (+{added:.2f} s, {'within' if ok else 'over'} target)"


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="nubes-realvm-"))
    real = await RealHostsCloud.start(RABBIT_URL, POSTGRES_URL, workdir)
    try:
        a, b = real.cloud.host_names
        # Warm-up: the image cache of both hosts filled (a boot, a migration).
        warm, _ = await _nubes_boot(real, "warm")
        await _nubes_migrate(real, warm)
        await _nubes_migrate(real, warm)
        host = (await real.row(warm))["host"]

        nubes_boots, direct_boots = [], []
        servers = [warm]
        direct: Direct | None = None
        for i in range(args.rounds):
            made, took = await _nubes_boot(real, f"boot-{i}")
            servers.append(made)
            nubes_boots.append(took)
            if direct is not None:
                await asyncio.to_thread(direct.remove)  # one direct guest at a time
            direct = Direct(real, host)
            direct_boots.append(await asyncio.to_thread(direct.boot))
        assert direct is not None
        nb, db = statistics.median(nubes_boots), statistics.median(direct_boots)
        print(
            f"boot to ACTIVE: nubes {nb:.2f} s, libvirt define+start {db:.2f} s "
            f"(median of {args.rounds})"
        )

        nubes_moves, direct_moves = [], []
        for _ in range(args.rounds):
            nubes_moves.append(await _nubes_migrate(real, warm))
            direct_moves.append(
                await asyncio.to_thread(direct.migrate, b if direct.host == a else a)
            )
        nm, dm = statistics.median(nubes_moves), statistics.median(direct_moves)
        print(
            f"live migration: nubes {nm:.2f} s, virsh migrate --live {dm:.2f} s "
            f"(median of {args.rounds})"
        )

        # RSS of the agents once --guests nubes guests run (the scheduler spreads them).
        await asyncio.to_thread(direct.remove)
        pending = [await real.create_server(f"rss-{i}") for i in range(args.guests - len(servers))]
        for made in pending:
            await real.wait(made, _active, timeout=600)
        servers += pending
        hosts = [(await real.row(u))["host"] for u in servers]
        for h in (a, b):
            rss = _rss_mib(real.computes[h].pid)
            print(f"compute agent on {h}: {rss:.0f} MiB RSS with {hosts.count(h)} guests")
        print(f"live migration ratio: {_ratio(nm, dm)}")
        print(f"boot ratio: {_ratio(nb, db)}")
    finally:
        with contextlib.suppress(Exception):
            await real.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guests", type=int, default=10, help="guests for the RSS reading")
    parser.add_argument("--rounds", type=int, default=3, help="boots and migrations measured")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
