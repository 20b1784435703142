"""A tiny test guest built from Debian packages: the cloud kernel and a busybox initramfs.

The kernel is the machine's ``linux-image-cloud-amd64`` (it boots in 80 MiB);
the initramfs holds ``busybox-static`` and an ``/init`` that prints markers on
the serial console (so on the console log):

* ``NUBES-GUEST boot`` once per boot,
* ``NUBES-GUEST tick N`` every second,
* ``NUBES-GUEST power-button`` then powers off when the ACPI power button is
  pressed (a clean shutdown or soft reboot asked through libvirt),
* ``NUBES-GUEST poweroff`` then powers off after N ticks when the kernel
  command line says ``nubes.poweroff=N`` (a guest that shuts itself down),
* with ``nubes.dhcp=1``: ``NUBES-GUEST ip <address>`` once busybox
  ``udhcpc`` got the address of its first NIC (``NUBES-GUEST dhcp failed``
  if not), and with ``nubes.ping=<a>,<b>``: ``NUBES-GUEST ping <a> ok`` (or
  ``fail``) for each address on every tick; with ``nubes.spoof=<c>`` too,
  ``NUBES-GUEST spoof <a> ok`` (or ``fail``): the same ping sent from
  address ``c``, which is not the guest's; with ``nubes.spoofmac=<m>``,
  ``NUBES-GUEST spoofmac <a> ok`` (or ``fail``): the same ping with the
  NIC's MAC changed to ``m`` for it (and put back after).
* with ``nubes.metadata=1`` (after DHCP): ``NUBES-GUEST md-json <doc>
  NUBES-GUEST md-end`` with its ``meta_data.json`` read from
  169.254.169.254 (empty if none came), ``NUBES-GUEST md-key <key> ...``
  with the EC2 ``public-keys/0/openssh-key``, ``NUBES-GUEST md-user <data>
  ...`` with its user data, and per ping target that is
  not its own address ``NUBES-GUEST md-as <a> ok <doc>`` (or ``fail``): the
  same request sent from address ``a`` (claimed on its NIC for the request);
* with ``nubes.disk=1``: ``NUBES-GUEST disks vda vdb ...`` (its virtio
  disks), ``NUBES-GUEST disk <dev> <what it holds>`` for each (the start of
  the disk, letters, digits and dashes only), and on a root disk that holds
  nothing yet ``NUBES-GUEST disk-wrote <token>``: a token written there, so
  a later boot from that disk (or of a copy of it) shows it again; then
  ``NUBES-GUEST ephemeral /dev/vdX`` (``none``), the disk labelled
  ``ephemeral0``, and ``NUBES-GUEST ephemeral-holds <token>``: the token in
  its sector :data:`EPHEMERAL_TOKEN_SECTOR` (written if it held none), and per disk holding swap
  ``NUBES-GUEST swap <dev> on`` once ``swapon`` took it (``failed`` if not);
* ``NUBES-GUEST size cpus <n> mem <KiB> vda <sectors>`` once per boot:
  its CPUs, its memory (MemTotal) and its root disk's size (``none`` when
  it sees no ``vda``: the disk driver loads with ``nubes.disk=1``);
* with ``nubes.configdrive=1``: ``NUBES-GUEST cd-json <doc> NUBES-GUEST
  cd-end`` with ``meta_data.json`` of the config drive (the cdrom), then
  ``NUBES-GUEST cd-file <path> <contents> NUBES-GUEST cd-end`` for each
  personality file it wrote and ``NUBES-GUEST cd-files-done``; or
  ``NUBES-GUEST configdrive none`` without a drive.
* with ``nubes.configdrive=1`` or ``nubes.ssh=1``, a guest with a config
  drive first copies its personality files (``meta_data.json``'s ``files``:
  each ``path`` and its ``content_path``) to their paths, as cirros does, so
  Tempest's personality tests find them when they log in.

:func:`build_bootable` puts the same kernel and initramfs on a whole-disk
image that boots through its own bootloader (SYSLINUX on FAT), for the
disk-image boot path.

Built files are cached under ``NUBES_GUEST_CACHE`` (default
``/var/tmp/nubes-guest``) by a digest of their inputs, so a test session
builds them once per machine.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from nubes import exception

BOOT_MARKER = "NUBES-GUEST boot"
#: ``<marker> <token>``: the token a guest with ``nubes.disk=1`` wrote on its root disk.
DISK_WROTE_MARKER = "NUBES-GUEST disk-wrote"
#: ``<marker> /dev/vdX``: the disk labelled ephemeral0 (``none``), with ``nubes.disk=1``.
EPHEMERAL_MARKER = "NUBES-GUEST ephemeral"
#: ``<marker> <token>``: the token in the ephemeral disk's sector :data:`EPHEMERAL_TOKEN_SECTOR`.
EPHEMERAL_HOLDS_MARKER = "NUBES-GUEST ephemeral-holds"
#: Where that token is: the last 512-byte sector of the disk's first GiB.
EPHEMERAL_TOKEN_SECTOR = (1 << 30) // 512 - 1
#: ``<marker> <dev> on``: a swap disk the guest put to use.
SWAP_MARKER = "NUBES-GUEST swap"
TICK_MARKER = "NUBES-GUEST tick"
#: ``<marker> cpus <n> mem <KiB> vda <sectors>``: what the guest was given, once per boot.
SIZE_MARKER = "NUBES-GUEST size"
POWER_BUTTON_MARKER = "NUBES-GUEST power-button"
POWEROFF_MARKER = "NUBES-GUEST poweroff"
#: ``<marker> <hostname> key yes``: the ssh variant's server listens (``key``
#: empty when the metadata service gave no public key).
SSH_MARKER = "NUBES-GUEST ssh up"
#: The user the ssh variant lets in (an alias of root, as Tempest expects
#: ``sudo`` to work) with the metadata service's key or this password.
SSH_USER = "cirros"
SSH_PASSWORD = "gocubsgo"
#: The kernel command line the ssh variant's image boots with.
SSH_CMDLINE = "console=ttyS0 no_timer_check nubes.dhcp=1 nubes.ssh=1"
#: Debian packages the ssh variant is made of beyond the plain guest's.
SSH_PACKAGES = ("dropbear-bin",)

_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
echo "NUBES-GUEST boot"
# Loopback up: a ping of the guest's own address answers at once instead of
# waiting out its timeout (the ping loop's period is the time to see a loss).
ifconfig lo up
# The ACPI power button (and the input events it sends) are modules in this kernel.
insmod /lib/evdev.ko 2>/dev/null
insmod /lib/button.ko 2>/dev/null
for ev in /dev/input/event*; do
  [ -e "$ev" ] || continue
  ( dd if="$ev" bs=24 count=1 >/dev/null 2>&1
    echo "NUBES-GUEST power-button"; poweroff -f ) &
done
off=$(sed -n 's/.*nubes[.]poweroff=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
targets=$(sed -n 's/.*nubes[.]ping=\\([0-9.,]*\\).*/\\1/p' /proc/cmdline | tr , ' ')
spoof=$(sed -n 's/.*nubes[.]spoof=\\([0-9.]*\\).*/\\1/p' /proc/cmdline)
spoofmac=$(sed -n 's/.*nubes[.]spoofmac=\\([0-9a-f:]*\\).*/\\1/p' /proc/cmdline)
if grep -q 'nubes[.]dhcp=1' /proc/cmdline; then
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \\
      failover net_failover virtio_net; do
    insmod /lib/$m.ko 2>/dev/null
  done
  echo '#!/bin/sh' > /bin/dhcp.sh
  echo '[ "$1" = bound ] || exit 0' >> /bin/dhcp.sh
  echo 'ifconfig "$interface" "$ip" netmask "$subnet"' >> /bin/dhcp.sh
  echo '[ -n "$router" ] && route add default gw "$router"' >> /bin/dhcp.sh
  echo 'echo "$ip" > /tmp/ip; echo "$router" > /tmp/router' >> /bin/dhcp.sh
  echo 'echo "NUBES-GUEST ip $ip" > /dev/console' >> /bin/dhcp.sh
  chmod +x /bin/dhcp.sh
  for i in 1 2 3 4 5; do [ -e /sys/class/net/eth0 ] && break; sleep 1; done
  ifconfig eth0 up
  udhcpc -i eth0 -n -q -t 30 -T 1 -s /bin/dhcp.sh >/dev/null 2>&1 || echo "NUBES-GUEST dhcp failed"
  [ -n "$spoof" ] && ip addr add "$spoof/32" dev eth0
fi
md=http://169.254.169.254
get() { timeout 5 wget -q -O - "$md/$1" 2>/dev/null | tr -d '\n'; }
# The config drive (an IDE cdrom holding ISO 9660: the cloud kernel has no
# AHCI driver), mounted on /mnt/cd when the guest has one.
mount_cd() {
  for m in scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs; do
    insmod /lib/$m.ko 2>/dev/null
  done
  for i in 1 2 3 4 5; do [ -e /dev/sr0 ] && break; sleep 1; done
  mkdir -p /mnt/cd
  mount -t iso9660 -o ro /dev/sr0 /mnt/cd 2>/dev/null
}
# Its personality files copied to their paths, as cirros's init does:
# meta_data.json's "files" pairs each path with its content_path (under
# openstack/). The paths written go to /tmp/injected, one a line.
write_files() {
  tr -d '\n' < /mnt/cd/openstack/latest/meta_data.json \\
    | grep -o '"path": "[^"]*", "content_path": "[^"]*"' \\
    | while read -r entry; do
        path=$(echo "$entry" | sed 's/^"path": "\\([^"]*\\)".*/\\1/')
        src=$(echo "$entry" | sed 's/.*"content_path": "\\([^"]*\\)"$/\\1/')
        mkdir -p "$(dirname "$path")"
        cp "/mnt/cd/openstack$src" "$path" && echo "$path" >> /tmp/injected
      done
}
drive=
if grep -q 'nubes[.]configdrive=1\\|nubes[.]ssh=1' /proc/cmdline && mount_cd; then
  drive=yes
  write_files
fi
if grep -q 'nubes[.]ssh=1' /proc/cmdline; then
  if [ -x /bin/dropbear ]; then
    # Its disks for lsblk, a pty for interactive logins.
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \\
        virtio_blk; do
      insmod /lib/$m.ko 2>/dev/null
    done
    mkdir -p /dev/pts /etc/dropbear /root /home/@SSH_USER@/.ssh /var/log
    mount -t devpts devpts /dev/pts
    # The login user is root's alias (uid 0): Tempest runs `sudo CMD`, which
    # the /bin/sudo shim runs as is.
    echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
    echo "@SSH_USER@:x:0:0:@SSH_USER@:/home/@SSH_USER@:/bin/sh" >> /etc/passwd
    echo "root:x:0:" > /etc/group
    hash=$(mkpasswd -m sha512 '@SSH_PASSWORD@')
    echo "root:*:19000:0:99999:7:::" > /etc/shadow
    echo "@SSH_USER@:$hash:19000:0:99999:7:::" >> /etc/shadow
    chmod 600 /etc/shadow
    echo /bin/sh > /etc/shells
    # The key and the hostname from the metadata service; under TCG the
    # host's proxy may take a while to answer the first boot's request.
    for i in $(seq 1 60); do
      doc=$(get openstack/latest/meta_data.json)
      [ -n "$doc" ] && break
      sleep 2
    done
    name=$(echo "$doc" | sed -n 's/.*"hostname": *"\\([^"]*\\)".*/\\1/p')
    [ -n "$name" ] && hostname "$name"
    key=$(get latest/meta-data/public-keys/0/openssh-key)
    echo "$key" > /home/@SSH_USER@/.ssh/authorized_keys
    chmod 700 /home/@SSH_USER@/.ssh; chmod 600 /home/@SSH_USER@/.ssh/authorized_keys
    # -R: host keys made at the first connection (key and password logins).
    if dropbear -R -p 22 -P /tmp/dropbear.pid; then
      echo "NUBES-GUEST ssh up ${name:-nohostname} key ${key:+yes}"
    else
      echo "NUBES-GUEST ssh failed"
    fi
  else
    echo "NUBES-GUEST ssh none"
  fi
fi
if grep -q 'nubes[.]metadata=1' /proc/cmdline; then
  # The host's proxy listens once its agent has synced the network: a few tries.
  for i in 1 2 3 4 5 6 7 8 9 10; do
    doc=$(get openstack/latest/meta_data.json)
    [ -n "$doc" ] && break
    sleep 1
  done
  echo "NUBES-GUEST md-json $doc NUBES-GUEST md-end"
  echo "NUBES-GUEST md-key $(get latest/meta-data/public-keys/0/openssh-key) NUBES-GUEST md-end"
  echo "NUBES-GUEST md-user $(get openstack/latest/user_data) NUBES-GUEST md-end"
  # Claim each other ping target's address and ask again: never answered.
  me=$(cat /tmp/ip 2>/dev/null); gw=$(cat /tmp/router 2>/dev/null)
  for t in $targets; do
    [ "$t" = "$me" ] && continue
    ip addr add "$t/32" dev eth0
    ip route add 169.254.169.254/32 via "$gw" src "$t"
    doc=$(get openstack/latest/meta_data.json)
    if [ -n "$doc" ]; then r="ok $doc"; else r=fail; fi
    echo "NUBES-GUEST md-as $t $r NUBES-GUEST md-end"
    ip route del 169.254.169.254/32
    ip addr del "$t/32" dev eth0
  done
fi
if grep -q 'nubes[.]configdrive=1' /proc/cmdline; then
  if [ -n "$drive" ]; then
    doc=$(tr -d '\n' < /mnt/cd/openstack/latest/meta_data.json)
    echo "NUBES-GUEST cd-json $doc NUBES-GUEST cd-end"
    # What each personality file now holds at its path (as Tempest's `cat`).
    while read -r path; do
      echo "NUBES-GUEST cd-file $path $(tr -d '\n' < "$path") NUBES-GUEST cd-end"
    done < /tmp/injected
    echo "NUBES-GUEST cd-files-done"
  else
    echo "NUBES-GUEST configdrive none"
  fi
fi
if grep -q 'nubes[.]disk=1' /proc/cmdline; then
  # Its virtio disks: their names, what each holds at its start, and on the
  # first (the root disk) a token if it holds none, which later boots show.
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \\
      virtio_blk; do
    insmod /lib/$m.ko 2>/dev/null
  done
  for i in 1 2 3 4 5; do [ -e /sys/block/vda ] && break; sleep 1; done
  start_of() { dd if=/dev/$1 bs=64 count=1 2>/dev/null | tr -dc 'a-z0-9-'; }
  echo "NUBES-GUEST disks $(ls /sys/block | grep '^vd' | xargs)"
  for d in $(ls /sys/block | grep '^vd'); do
    echo "NUBES-GUEST disk $d $(start_of $d)"
  done
  # The flavor's ephemeral disk, found by its label; a token in the last
  # sector of its first GiB (an empty filesystem keeps nothing there, and it
  # stays where it is when a resize grows the disk), written if none is, so
  # a later boot from it (or of a copy of it) shows the same.
  eph=$(findfs LABEL=ephemeral0 2>/dev/null)
  echo "NUBES-GUEST ephemeral ${eph:-none}"
  if [ -n "$eph" ]; then
    last=@EPHEMERAL_TOKEN_SECTOR@
    mark=$(dd if=$eph bs=512 skip=$last count=1 2>/dev/null | tr -dc 'a-z0-9-')
    if [ -z "$mark" ]; then
      mark=nubes-$(cat /proc/sys/kernel/random/uuid)
      printf '%s' "$mark" | dd of=$eph bs=512 seek=$last conv=notrunc 2>/dev/null
      sync
    fi
    echo "NUBES-GUEST ephemeral-holds $mark"
  fi
  # Swap disks (mkswap's signature ends their first page), put to use.
  for d in $(ls /sys/block | grep '^vd'); do
    [ "$(dd if=/dev/$d bs=1 skip=4086 count=10 2>/dev/null)" = SWAPSPACE2 ] || continue
    if swapon /dev/$d 2>/dev/null && grep -q "^/dev/$d " /proc/swaps; then
      echo "NUBES-GUEST swap $d on"
    else
      echo "NUBES-GUEST swap $d failed"
    fi
  done
  if [ -e /dev/vda ] && [ -z "$(start_of vda)" ]; then
    token=nubes-$(cat /proc/sys/kernel/random/uuid)
    printf '%s' "$token" | dd of=/dev/vda bs=64 count=1 conv=notrunc 2>/dev/null
    sync
    echo "NUBES-GUEST disk-wrote $token"
  fi
fi
# What the guest was given, seen from inside (a resize changes it): CPUs,
# memory in KiB, and the root disk's 512-byte sectors when it sees one.
cpus=$(grep -c ^processor /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
vda=$(cat /sys/block/vda/size 2>/dev/null || echo none)
echo "NUBES-GUEST size cpus $cpus mem $mem vda $vda"
n=0
while :; do
  n=$((n+1))
  echo "NUBES-GUEST tick $n"
  for t in $targets; do
    if ping -c 1 -W 1 "$t" >/dev/null 2>&1; then r=ok; else r=fail; fi
    echo "NUBES-GUEST ping $t $r"
    if [ -n "$spoof" ]; then
      if ping -c 1 -W 1 -I "$spoof" "$t" >/dev/null 2>&1; then r=ok; else r=fail; fi
      echo "NUBES-GUEST spoof $t $r"
    fi
    if [ -n "$spoofmac" ]; then
      mine=$(cat /sys/class/net/eth0/address)
      ip link set eth0 down; ip link set eth0 address "$spoofmac"; ip link set eth0 up
      if ping -c 1 -W 1 "$t" >/dev/null 2>&1; then r=ok; else r=fail; fi
      ip link set eth0 down; ip link set eth0 address "$mine"; ip link set eth0 up
      [ -s /tmp/router ] && route add default gw "$(cat /tmp/router)" 2>/dev/null
      echo "NUBES-GUEST spoofmac $t $r"
    fi
  done
  if [ -n "$off" ] && [ "$n" -ge "$off" ]; then
    echo "NUBES-GUEST poweroff"
    poweroff -f
  fi
  sleep 1
done
"""

#: What Tempest's RemoteClient runs that busybox lacks, as small scripts.
_SSH_SHIMS = {
    # The login user is root already: run the command, dropping sudo's options.
    "bin/sudo": """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
exec "$@"
""",
    # `curl URL` (and `curl -V`, which Tempest asks first) through busybox wget.
    "bin/curl": """#!/bin/sh
url=
for a in "$@"; do
  case "$a" in -V|--version) echo "curl 0 (busybox wget)"; exit 0;; -*) ;; *) url=$a;; esac
done
exec wget -q -O - "$url"
""",
    # `lsblk -lb --nodeps`: the block devices, TYPE in its own column; as
    # lsblk, without empty ones (-a shows those), cdroms as "rom".
    "bin/lsblk": """#!/bin/sh
row() { printf '%-6s %7s %2s %14s %2s %-4s\\n' "$@"; }
row NAME MAJ:MIN RM SIZE RO TYPE
for d in /sys/block/*; do
  n=${d##*/}
  size=$(($(cat $d/size) * 512))
  [ "$size" -gt 0 ] || continue
  case "$n" in loop*|ram*) continue;; sr*) type=rom;; *) type=disk;; esac
  row "$n" "$(cat $d/dev)" "$(cat $d/removable)" "$size" "$(cat $d/ro)" "$type"
done
""",
}

_MODULES = (
    "drivers/input/evdev.ko",
    "drivers/acpi/button.ko",
    # The virtio NIC (nubes.dhcp=1), in load order (modules.dep, read backwards).
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    # The config drive (nubes.configdrive=1): an IDE cdrom holding ISO 9660.
    "drivers/scsi/scsi_common.ko",
    "drivers/scsi/scsi_mod.ko",
    "drivers/ata/libata.ko",
    "drivers/ata/ata_piix.ko",
    "drivers/cdrom/cdrom.ko",
    "drivers/scsi/sr_mod.ko",
    "fs/isofs/isofs.ko",
    # Its disks as virtio block devices (nubes.disk=1).
    "drivers/block/virtio_blk.ko",
)


@dataclasses.dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initramfs: Path
    #: A small empty raw disk: the root disk image the guest boots with.
    disk: Path


def _cache_dir() -> Path:
    return Path(os.environ.get("NUBES_GUEST_CACHE", "/var/tmp/nubes-guest"))


def _kernel() -> Path:
    kernels = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
    if not kernels:
        raise exception.ConfigError(
            reason="no cloud kernel in /boot: apt-get install linux-image-cloud-amd64"
        )
    return Path(kernels[-1])


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.exists() and _is_static(path):
            return path
    raise exception.ConfigError(reason="no static busybox: apt-get install busybox-static")


def _is_static(path: Path) -> bool:
    # A dynamic ELF names its interpreter near the start; the initramfs has no libc.
    with open(path, "rb") as f:
        return b"/lib64/ld-linux" not in f.read(1 << 12)


def _init_script() -> str:
    return (
        _INIT.replace("@SSH_USER@", SSH_USER)
        .replace("@SSH_PASSWORD@", SSH_PASSWORD)
        .replace("@EPHEMERAL_TOKEN_SECTOR@", str(EPHEMERAL_TOKEN_SECTOR))
    )


def _digest(*paths: Path, extra: str = "") -> str:
    digest = hashlib.sha256((_init_script() + extra).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def newc_archive(files: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio "newc" archive of (name, mode, data); directories have no data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*files, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _dropbear() -> list[tuple[str, int, bytes]]:
    """Debian's dropbear server and the shared libraries it loads (with the
    dynamic loader, at the paths it was linked against), as initramfs entries."""
    server = Path("/usr/sbin/dropbear")
    if not server.exists():
        raise exception.ConfigError(
            reason="no dropbear for the ssh guest: apt-get install " + " ".join(SSH_PACKAGES)
        )
    linked = subprocess.run(["ldd", str(server)], check=True, capture_output=True, text=True)
    libraries = []
    for line in linked.stdout.splitlines():
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            libraries.append(path.lstrip("/"))
    directories = sorted({str(Path(lib).parent) for lib in libraries})
    entries: list[tuple[str, int, bytes]] = []
    for directory in directories:
        parts = Path(directory).parts
        entries += [("/".join(parts[: i + 1]), 0o040755, b"") for i in range(len(parts))]
    # Several libraries share a directory: each directory entry once, parents first.
    entries = [e for e in dict.fromkeys(entries) if e[0] not in ("bin", "lib")]
    entries += [(lib, 0o100755, Path("/", lib).read_bytes()) for lib in libraries]
    entries.append(("bin/dropbear", 0o100755, server.read_bytes()))
    entries += [(name, 0o100755, text.encode()) for name, text in _SSH_SHIMS.items()]
    return entries


def build(cache: Path | None = None, *, ssh: bool = False) -> GuestImage:
    """The test guest's kernel, initramfs and disk, built once and cached.

    ``ssh``: the variant Tempest's guest validation logs into, which also
    holds an ssh server (Debian's dropbear with its libraries) and the
    commands Tempest's RemoteClient runs beyond busybox's (``sudo``,
    ``curl``, ``lsblk`` shims); it starts them when booted with
    ``nubes.ssh=1`` (:data:`SSH_CMDLINE`)."""
    kernel = _kernel()
    busybox = _busybox()
    version = kernel.name.removeprefix("vmlinuz-")
    modules = [Path("/lib/modules", version, "kernel", m) for m in _MODULES]
    extra = [Path("/usr/sbin/dropbear")] if ssh else []
    shims = "".join(_SSH_SHIMS.values()) if ssh else ""
    digest = _digest(kernel, busybox, *modules, *extra, extra=shims)
    directory = (cache or _cache_dir()) / (f"ssh-{digest}" if ssh else digest)
    image = GuestImage(directory / "vmlinuz", directory / "initramfs.gz", directory / "disk.raw")
    if image.kernel.exists() and image.initramfs.exists() and image.disk.exists():
        return image
    ssh_entries = _dropbear() if ssh else []
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=directory.parent))
    try:
        entries: list[tuple[str, int, bytes]] = [
            ("bin", 0o040755, b""),
            ("lib", 0o040755, b""),
            ("bin/busybox", 0o100755, busybox.read_bytes()),
            ("init", 0o100755, _init_script().encode()),
        ]
        for module in modules:
            if module.exists():  # without them the guest ignores the power button
                entries.append((f"lib/{module.name}", 0o100644, module.read_bytes()))
        entries += ssh_entries
        (work / "initramfs.gz").write_bytes(gzip.compress(newc_archive(entries), compresslevel=6))
        shutil.copyfile(kernel, work / "vmlinuz")
        with open(work / "disk.raw", "wb") as f:
            f.truncate(1 << 20)
        # Another session may have built the same meanwhile: either copy is good.
        try:
            work.rename(directory)
        except OSError:
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image


#: What the bootloader prints on the serial console before it loads the kernel.
BOOTLOADER_MARKER = "SYSLINUX"
#: Debian packages :func:`build_bootable` needs (``.ci/run`` installs them).
BOOTABLE_PACKAGES = ("syslinux", "syslinux-common", "mtools", "dosfstools")
_SYSLINUX_CFG = """\
SERIAL 0 115200
DEFAULT nubes
PROMPT 0
TIMEOUT 1
LABEL nubes
  KERNEL vmlinuz
  INITRD initramfs.gz
  APPEND console=ttyS0 no_timer_check
"""
#: Size of the bootable disk: a FAT filesystem holding the kernel and initramfs.
_BOOTABLE_MIB = 48


def build_bootable(cache: Path | None = None) -> Path:
    """A raw disk image that boots through its own bootloader: a FAT filesystem
    (no partition table; the BIOS runs its boot sector) with SYSLINUX, the test
    guest's kernel and initramfs, and a config that prints on the serial port.
    Built with mtools (no mount, no loop device) and cached beside the guest."""
    for tool in ("mkfs.vfat", "mcopy", "syslinux"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise exception.ConfigError(
                reason=f"{tool} is missing: apt-get install {' '.join(BOOTABLE_PACKAGES)}"
            )
    guest = build(cache)
    disk = guest.kernel.parent / "bootable.raw"
    if disk.exists():
        return disk
    work = Path(tempfile.mkdtemp(dir=disk.parent))
    try:
        image = work / "bootable.raw"
        with open(image, "wb") as f:
            f.truncate(_BOOTABLE_MIB << 20)
        (work / "syslinux.cfg").write_text(_SYSLINUX_CFG)
        mkfs = shutil.which("mkfs.vfat") or "/usr/sbin/mkfs.vfat"
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        for command in (
            [mkfs, "-n", "NUBESBOOT", str(image)],
            ["mcopy", "-i", str(image), str(guest.kernel), "::vmlinuz"],
            ["mcopy", "-i", str(image), str(guest.initramfs), "::initramfs.gz"],
            ["mcopy", "-i", str(image), str(work / "syslinux.cfg"), "::syslinux.cfg"],
            ["syslinux", "--install", str(image)],
        ):
            subprocess.run(command, check=True, capture_output=True, env=env)
        # Another session may have built the same meanwhile: either copy is good.
        os.replace(image, disk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return disk


@dataclasses.dataclass(frozen=True, slots=True)
class PublishedImages:
    """The test guest as image records a libvirt host can boot (see :func:`publish`)."""

    kernel_id: str
    ramdisk_id: str
    raw: dict[str, Any]
    qcow2: dict[str, Any]

    def with_cmdline(self, meta: dict[str, Any], cmdline: str) -> dict[str, Any]:
        """``meta`` with the kernel command line ``cmdline`` (``os_command_line``)."""
        properties = {**meta["properties"], "os_command_line": cmdline}
        return {**meta, "properties": properties}


def publish(image: GuestImage, directory: Path) -> PublishedImages:
    """Put the guest's files into an image data directory (files named by
    image id, as the image API keeps them) and describe them as the image
    records a build carries: a raw and a qcow2 root disk image, each booting
    the kernel and initramfs through ``kernel_id``/``ramdisk_id``."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = {name: str(uuid.uuid4()) for name in ("kernel", "ramdisk", "raw", "qcow2")}
    shutil.copyfile(image.kernel, directory / ids["kernel"])
    shutil.copyfile(image.initramfs, directory / ids["ramdisk"])
    shutil.copyfile(image.disk, directory / ids["raw"])
    qcow2 = directory / ids["qcow2"]
    command = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(image.disk), str(qcow2)]
    subprocess.run(command, check=True)
    properties = {"kernel_id": ids["kernel"], "ramdisk_id": ids["ramdisk"]}

    def meta(name: str, disk_format: str) -> dict[str, Any]:
        path = directory / ids[name]
        return {
            "id": ids[name],
            "disk_format": disk_format,
            "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(path.read_bytes()).hexdigest(),
            "properties": dict(properties),
        }

    raw, qcow2_meta = meta("raw", "raw"), meta("qcow2", "qcow2")
    return PublishedImages(ids["kernel"], ids["ramdisk"], raw, qcow2_meta)


def publish_disk(disk: Path, directory: Path, disk_format: str = "qcow2") -> dict[str, Any]:
    """Put a whole-disk image (one that boots through its own bootloader, see
    :func:`build_bootable`) into an image data directory as ``disk_format``;
    the image record a build carries (no kernel_id: the disk boots itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    image_id = str(uuid.uuid4())
    path = directory / image_id
    if disk_format == "raw":
        shutil.copyfile(disk, path)
    else:
        command = [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            disk_format,
            str(disk),
            str(path),
        ]
        subprocess.run(command, check=True)
    return {
        "id": image_id,
        "disk_format": disk_format,
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(path.read_bytes()).hexdigest(),
        "properties": {},
    }
