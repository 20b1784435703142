"""A node a compute host registers gets the operator's allocation ratios."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubes import exception
from nubes.conductor.authz import NodeLimits
from nubes.context import RequestContext
from nubes.db.api import compute_nodes
from nubes.objects.compute_node import ComputeNode
from nubes.testing.cloud import Cloud

LIMITS = NodeLimits(
    vcpus=64, cpu_allocation_ratio=2.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.25
)
RATIOS = ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio")


async def test_a_hosts_new_node_gets_the_operators_allocation_ratios(tmp_path: Path):
    cloud = await Cloud.start(f"sqlite:///{tmp_path / 'nodes.sqlite'}", node_limits=LIMITS)
    try:
        host = await cloud.host("h1")
        node = ComputeNode(
            host="h1", hypervisor_hostname="h1", vcpus=8, memory_mb=1024, local_gb=10
        )
        await host.run(node.create, RequestContext())
        async with cloud.db.reader() as conn:
            row = await compute_nodes.get_by_uuid(conn, node.uuid)
        assert tuple(row[r] for r in RATIOS) == (2.0, 1.0, 1.25)
        assert tuple(getattr(node, r) for r in RATIOS) == (2.0, 1.0, 1.25)
        # The operator's bound on capacity, from the same place.
        big = ComputeNode(host="h1", hypervisor_hostname="h1-b", vcpus=65, memory_mb=1, local_gb=1)
        with pytest.raises(exception.Forbidden, match="vcpus must be 0 to 64"):
            await host.run(big.create, RequestContext())
    finally:
        await cloud.stop()
