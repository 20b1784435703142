"""Network namespaces for data plane tests, removed by name at the end.

:class:`Namespaces` makes named namespaces (each name carries a random
suffix, so parallel runs do not meet), veth pairs between them, and runs
commands inside; :meth:`Namespaces.cleanup` kills what runs in them (by
the PIDs ``ip netns pids`` names) and deletes them, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid

#: What a host of the data plane runs (``.ci/run`` installs the missing ones
#: through nubes.testing.libvirtd.DEBIAN_PACKAGES).
TOOLS = ("ip", "bridge", "nft", "dnsmasq", "busybox")


def missing() -> str | None:
    """Why namespaces with a data plane cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    return None


class Namespaces:
    def __init__(self, prefix: str = "nbt") -> None:
        self.tag = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []

    def add(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        return name

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], check=check, capture_output=True, text=True
        )

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        subprocess.run(
            ["ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b,
             "netns", ns_b],
            check=True,
        )  # fmt: skip
        self.run(ns_a, "ip", "link", "set", name_a, "up")
        self.run(ns_b, "ip", "link", "set", name_b, "up")

    def cleanup(self) -> None:
        for name in reversed(self.names):
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names.clear()
