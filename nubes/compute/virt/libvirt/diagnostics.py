"""What a guest's diagnostics say, read from libvirt (``os-server-diagnostics``)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

from nubes.compute.virt.driver import (
    DIAGNOSTICS_STATE,
    CpuDiagnostics,
    Diagnostics,
    DiskDiagnostics,
    NicDiagnostics,
)
from nubes.compute.virt.libvirt.host import power_state
from nubes.objects.states import PowerState


def read_diagnostics(libvirt: Any, dom: Any, virt_type: str, has_drive: bool) -> Diagnostics:
    """The domain's counters as libvirt reports them: per-vCPU time, the
    balloon's memory figures, each disk's block stats and each NIC's
    interface stats (by the devices its XML names). Blocking: run it on the
    connection's thread."""
    state, max_kib, mem_kib, _vcpus, _cpu_time = dom.info()
    power = power_state(libvirt, state)
    running = power == PowerState.RUNNING
    diags = Diagnostics(
        state=DIAGNOSTICS_STATE[power],
        driver="libvirt",
        hypervisor=virt_type,
        hypervisor_os="linux",
        config_drive=has_drive,
        memory_maximum_kib=max_kib,
        memory_used_kib=mem_kib,
    )
    if not running:
        return diags
    for cpu in dom.vcpus()[0]:
        # (number, state, cpu time ns, physical cpu)
        diags.cpu_details.append(CpuDiagnostics(id=cpu[0], time=cpu[2]))
    stats = dom.memoryStats()
    if "rss" in stats:
        diags.memory_used_kib = stats["rss"]
    root = ET.fromstring(dom.XMLDesc(0))
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        if target is None:
            continue
        rd_req, rd_bytes, wr_req, wr_bytes, errs = dom.blockStats(target.get("dev"))
        diags.disk_details.append(
            DiskDiagnostics(
                read_bytes=rd_bytes,
                read_requests=rd_req,
                write_bytes=wr_bytes,
                write_requests=wr_req,
                # -1: the hypervisor does not count errors.
                errors_count=max(0, errs),
            )
        )
    for nic in root.findall("./devices/interface"):
        target, mac = nic.find("target"), nic.find("mac")
        if target is None:
            continue
        rx_b, rx_p, rx_e, rx_d, tx_b, tx_p, tx_e, tx_d = dom.interfaceStats(target.get("dev"))
        diags.nic_details.append(
            NicDiagnostics(
                mac_address=mac.get("address") if mac is not None else None,
                rx_octets=rx_b,
                rx_packets=rx_p,
                rx_errors=rx_e,
                rx_drop=rx_d,
                tx_octets=tx_b,
                tx_packets=tx_p,
                tx_errors=tx_e,
                tx_drop=tx_d,
            )
        )
    return diags
