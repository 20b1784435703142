"""A private libvirtd for tests and all-in-one: its own config, state and socket.

A root libvirtd keeps its state in fixed places (``/etc/libvirt``,
``/run/libvirt``, ``/var/lib/libvirt`` ...), so two of them on one machine
would share domains. :class:`PrivateLibvirtd` starts one in its own mount
namespace (``unshare -m``) with those directories bind-mounted from a
directory of its own, and its socket in that directory, reachable from
outside through :attr:`uri`. It is stopped by its PID (never by name), after
its guests are destroyed: QEMU processes outlive the daemon that started them.

QEMU runs as root (``user = "root"`` in its qemu.conf): as the default
unprivileged user libvirt re-probes QEMU's capabilities and a start takes
seconds instead of a fraction of one. The console goes straight to files
(``stdio_handler = "file"``), so no virtlogd is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from nubes import exception

#: The directories a root libvirtd keeps its state in, bind-mounted per daemon.
_STATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

#: libvirt's cache, shared by every private daemon of the machine: probing
#: QEMU's capabilities takes ~8 s on a busy 2-core machine, and libvirt
#: checks the cached result against the QEMU binary and itself before use.
SHARED_CACHE = Path("/var/tmp/nubes-libvirt-cache")

_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
stdio_handler = "file"
security_driver = "none"
"""

#: Debian packages a libvirt host and its tests need: the daemons and QEMU,
#: what ``pip install 'nubes[libvirt]'`` builds the binding with, and what
#: the test guest is made of (cpio checks its initramfs), and the network
#: data plane's tools. ``.ci/run``
#: installs the missing ones.
DEBIAN_PACKAGES = (
    "qemu-system-x86",
    "qemu-utils",
    "libvirt-daemon-system",
    "libvirt-clients",
    "libvirt-dev",
    "pkg-config",
    "gcc",
    "python3-dev",
    "busybox-static",
    # The test guest's ssh variant (guestimage.build(ssh=True)).
    "dropbear-bin",
    "linux-image-cloud-amd64",
    "cpio",
    # The disk image that boots through its own bootloader (guestimage.build_bootable).
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
    # Guests' ephemeral disks (mkfs of ext4 or vfat, disks.py) and the tests' blkid.
    "e2fsprogs",
    "util-linux",
    # Compute hosts in network namespaces (nubes.testing.netns), and the
    # network data plane (nubes/compute/network): bridges, veth and VXLAN,
    # security groups, DHCP for the host's own ports.
    "iproute2",
    "nftables",
    "dnsmasq-base",
)


def missing() -> str | None:
    """Why a private libvirtd cannot run here (None: it can)."""
    for tool in ("libvirtd", "unshare", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "a private libvirtd needs root (a mount namespace and QEMU as root)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "the libvirt python binding is not installed (pip install libvirt-python)"
    return None


def _libvirtd() -> str:
    return shutil.which("libvirtd") or "/usr/sbin/libvirtd"


class PrivateLibvirtd:
    """One libvirtd of our own; :meth:`start` it, use :attr:`uri`, :meth:`stop` it."""

    def __init__(
        self,
        base: str | Path | None = None,
        *,
        netns: str | None = None,
        listen_address: str | None = None,
    ) -> None:
        # A short path: the socket's must fit in sun_path (108 bytes).
        self.base = Path(base or tempfile.mkdtemp(prefix="nubes-lv-"))
        self.host_uuid = str(uuid.uuid4())
        self.process: subprocess.Popen[bytes] | None = None
        #: The network namespace the daemon (and so its guests) runs in.
        self.netns = netns
        #: Where the daemon takes migrations: its TCP listener (no auth, for a
        #: private test network only) and the address QEMU receives on.
        self.listen_address = listen_address

    @property
    def tcp_uri(self) -> str | None:
        """How another daemon reaches this one for a peer-to-peer migration."""
        if self.listen_address is None:
            return None
        return f"qemu+tcp://{self.listen_address}/system"

    @property
    def socket(self) -> Path:
        return self.base / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def log_path(self) -> Path:
        return self.base / "libvirtd.log"

    def _prepare(self) -> Path:
        for name in (*_STATE_DIRS, "sock"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        SHARED_CACHE.mkdir(parents=True, exist_ok=True)
        etc = self.base / "etc"
        (etc / "qemu").mkdir(exist_ok=True)
        qemu_conf = _QEMU_CONF
        listen = ""
        if self.listen_address is not None:
            # The hostname resolves to the machine's address, not this host's:
            # a migration's destination must name the address it listens on.
            qemu_conf += (
                f'migration_address = "{self.listen_address}"\n'
                f'migration_host = "{self.listen_address}"\n'
            )
            listen = (
                "listen_tcp = 1\n"
                "listen_tls = 0\n"
                'auth_tcp = "none"\n'
                f'listen_addr = "{self.listen_address}"\n'
            )
        (etc / "qemu.conf").write_text(qemu_conf)
        conf = self.base / "libvirtd.conf"
        conf.write_text(
            f'unix_sock_dir = "{self.base / "sock"}"\n'
            'unix_sock_rw_perms = "0700"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
            f'log_outputs = "3:file:{self.log_path}"\n' + listen
        )
        return conf

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait for its socket; ConfigError if it cannot run."""
        why = missing()
        if why is not None:
            raise exception.ConfigError(reason=why)
        conf = self._prepare()
        mounts = []
        for name, target in _STATE_DIRS.items():
            source = SHARED_CACHE if name == "cache" else self.base / name
            mounts.append(f"mkdir -p {target} && mount --bind {source} {target}")
        script = " && ".join(
            [
                *mounts,
                f"exec {_libvirtd()} --config {conf} --pid-file {self.base / 'libvirtd.pid'}"
                + (" --listen" if self.listen_address is not None else ""),
            ]
        )
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        # ip netns exec and unshare exec (no --fork), so the PID we hold is
        # libvirtd's own.
        with open(self.base / "libvirtd.stderr", "wb") as stderr:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise exception.ConfigError(
                    reason=f"libvirtd exited with {self.process.returncode}: {self._tail()}"
                )
            if self.socket.exists() and self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise exception.ConfigError(reason=f"libvirtd did not answer within {timeout}s")

    def _tail(self) -> str:
        out = []
        for name in ("libvirtd.stderr", "libvirtd.log"):
            with contextlib.suppress(OSError):
                out.append((self.base / name).read_text(errors="replace")[-2000:])
        return "\n".join(out)

    def _answers(self) -> bool:
        import libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return False
        conn.close()
        return True

    def destroy_all_domains(self) -> None:
        """Stop and undefine every guest: QEMU would outlive the daemon."""
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.uri)
            try:
                for dom in conn.listAllDomains():
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefine()
            finally:
                conn.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Destroy the guests, then end the daemon by its PID."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.destroy_all_domains()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def cleanup(self) -> None:
        """:meth:`stop` and remove the directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
