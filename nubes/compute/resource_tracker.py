"""The resource tracker: a host's compute-node records, kept up to date.

At start and every ``[compute] resource_update_interval`` seconds, for each
node the driver manages: read capacity and hypervisor facts from the driver
and monitor readings (``cpu.percent``), create the node's record if it has
none, and save what changed, all through the conductor.

Usage (``vcpus_used``, ``memory_mb_used``, ``local_gb_used``) is not written
here: the scheduler's atomic claims own those columns, and a host writing its
own count would race them. The tracker reports what the hypervisor runs
instead: ``running_vms`` and, in ``stats``, the instances and the vCPUs,
memory and disk they were built with, for operators to compare with the
claims.
"""

from __future__ import annotations

import logging
from typing import Any

from nubes import exception
from nubes.compute.virt.driver import ComputeDriver
from nubes.context import RequestContext
from nubes.objects.compute_node import ComputeNode
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState, VMState

LOG = logging.getLogger(__name__)


def _local_gb(instance: Instance) -> int:
    """Local disk an instance was built with, counted as the scheduler claims it
    (``RequestSpec.root_disk_gb``): root, ephemeral and swap (MiB, rounded up to GiB),
    so the operator's comparison of claims and stats adds up."""
    flavor = instance.flavor if instance.obj_attr_is_set("flavor") else None
    swap_mb = (flavor.swap or 0) if flavor is not None else 0
    return (instance.root_gb or 0) + (instance.ephemeral_gb or 0) + -(-swap_mb // 1024)


_CAPACITY = ("vcpus", "memory_mb", "local_gb", "hypervisor_type", "hypervisor_version", "cpu_info")


class ResourceTracker:
    def __init__(self, host: str, driver: ComputeDriver, host_ip: str | None = None) -> None:
        self.host = host
        self.driver = driver
        #: The host's tunnel address (``[network] local_ip``): its VXLAN peers find it here.
        self.host_ip = host_ip
        #: Node name -> its record, as last saved.
        self.nodes: dict[str, ComputeNode] = {}

    async def _node(
        self, ctxt: RequestContext, nodename: str, facts: dict[str, Any]
    ) -> ComputeNode:
        node = self.nodes.get(nodename)
        if node is not None:
            return node
        try:
            node = await ComputeNode.get_by_host_and_nodename(ctxt, self.host, nodename)
        except exception.ComputeHostNotFound:
            node = ComputeNode(
                host=self.host,
                hypervisor_hostname=nodename,
                **{k: facts[k] for k in _CAPACITY if k in facts},
            )
            try:
                await node.create(ctxt)
                LOG.info("Compute node %s of %s recorded", nodename, self.host)
            except exception.DBDuplicateEntry:
                node = await ComputeNode.get_by_host_and_nodename(ctxt, self.host, nodename)
        self.nodes[nodename] = node
        return node

    async def update_available_resource(self, ctxt: RequestContext) -> None:
        """One report of every node's capacity, metrics and what runs on it."""
        instances = await Instance.get_by_host(ctxt, self.host, allow_stale=True)
        for nodename in self.driver.get_available_nodes():
            facts = await self.driver.get_available_resource(nodename)
            node = await self._node(ctxt, nodename, facts)
            mine = [
                i
                for i in instances
                if (i.node == nodename or i.node is None) and i.vm_state != VMState.DELETED
            ]
            running = [i for i in mine if i.power_state == PowerState.RUNNING]
            values: dict[str, Any] = {k: facts[k] for k in _CAPACITY if k in facts}
            values["running_vms"] = len(running)
            if self.host_ip is not None:
                values["host_ip"] = self.host_ip
            values["metrics"] = await self.driver.get_host_metrics(nodename)
            values["stats"] = {
                "num_instances": len(mine),
                "instances_vcpus": sum(i.vcpus or 0 for i in mine),
                "instances_memory_mb": sum(i.memory_mb or 0 for i in mine),
                "instances_local_gb": sum(_local_gb(i) for i in mine),
            }
            for name, value in values.items():
                if not node.obj_attr_is_set(name) or getattr(node, name) != value:
                    setattr(node, name, value)
            await node.save(ctxt)
