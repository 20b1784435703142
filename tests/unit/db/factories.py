"""Small builders of valid rows for the DB contract tests."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from nubes.db.api import compute_nodes, flavors, instances, services

_seq = itertools.count(1)


async def make_instance(conn: AsyncConnection, **values: Any) -> dict[str, Any]:
    n = next(_seq)
    data = {
        "project_id": "p1",
        "user_id": "u1",
        "display_name": f"vm-{n}",
        "vcpus": 1,
        "memory_mb": 512,
        "root_gb": 1,
        "flavor": {"name": "small", "vcpus": 1, "memory_mb": 512},
    }
    data.update(values)
    return await instances.create(conn, data)


async def make_node(conn: AsyncConnection, **values: Any) -> dict[str, Any]:
    n = next(_seq)
    data = {
        "host": f"host-{n}",
        "hypervisor_hostname": f"node-{n}",
        "hypervisor_type": "fake",
        "vcpus": 8,
        "memory_mb": 16384,
        "local_gb": 100,
        "cpu_allocation_ratio": 1.0,
        "ram_allocation_ratio": 1.0,
        "disk_allocation_ratio": 1.0,
    }
    data.update(values)
    return await compute_nodes.create(conn, data)


async def make_service(conn: AsyncConnection, **values: Any) -> dict[str, Any]:
    n = next(_seq)
    data = {"host": f"host-{n}", "binary": "nubes-compute", "topic": "compute"}
    data.update(values)
    return await services.create(conn, data)


async def make_flavor(conn: AsyncConnection, **values: Any) -> dict[str, Any]:
    n = next(_seq)
    data = {"flavorid": f"f{n}", "name": f"flavor-{n}", "memory_mb": 512, "vcpus": 1}
    data.update(values)
    return await flavors.create(conn, data)
