"""Unique constraints where a duplicate would be a bug, and soft delete freeing names."""

from __future__ import annotations

import pytest

from nubes import exception
from nubes.db.api import compute_nodes, flavors, services, tasks
from nubes.db.engine import Database
from tests.unit.db.factories import make_flavor, make_instance, make_node, make_service


async def test_duplicate_compute_node_host_and_node(db: Database) -> None:
    async with db.writer() as conn:
        await make_node(conn, host="h1", hypervisor_hostname="n1")
    with pytest.raises(exception.DBDuplicateEntry) as err:
        async with db.writer() as conn:
            await make_node(conn, host="h1", hypervisor_hostname="n1")
    assert err.value.kwargs["table"] == "compute_nodes"
    assert err.value.kwargs["columns"] == "host, hypervisor_hostname"
    # Same node name on another host is fine.
    async with db.writer() as conn:
        await make_node(conn, host="h2", hypervisor_hostname="n1")


async def test_compute_node_recreated_after_soft_delete(db: Database) -> None:
    async with db.writer() as conn:
        old = await make_node(conn, host="h1", hypervisor_hostname="n1")
        await compute_nodes.destroy(conn, old["id"])
        new = await make_node(conn, host="h1", hypervisor_hostname="n1")
    assert new["id"] != old["id"]
    async with db.reader() as conn:
        assert (await compute_nodes.get_by_host_and_nodename(conn, "h1", "n1"))["id"] == new["id"]
        everything = await compute_nodes.get_all(conn, host="h1", read_deleted="yes")
    assert sorted(n["deleted"] for n in everything) == sorted([0, old["id"]])


async def test_second_active_task_for_instance_refused(db: Database) -> None:
    async with db.writer() as conn:
        inst = await make_instance(conn)
        first = await tasks.create(conn, kind="build", instance_uuid=inst["uuid"])
    with pytest.raises(exception.DBDuplicateEntry) as err:
        async with db.writer() as conn:
            await tasks.create(conn, kind="resize", instance_uuid=inst["uuid"])
    assert err.value.kwargs["columns"] == "active_instance_uuid"
    # Once the first ends, the instance may have another.
    async with db.writer() as conn:
        claimed = await tasks.claim(conn, first["id"], "c1", lease_seconds=30)
        assert claimed is not None
        await tasks.finish(conn, first["id"], "c1")
        second = await tasks.create(conn, kind="resize", instance_uuid=inst["uuid"])
        assert (await tasks.get_active_for_instance(conn, inst["uuid"]))["id"] == second["id"]


async def test_tasks_without_instance_do_not_collide(db: Database) -> None:
    async with db.writer() as conn:
        await tasks.create(conn, kind="heal")
        await tasks.create(conn, kind="heal")
        assert len(await tasks.list_active(conn, kind="heal")) == 2


async def test_duplicate_flavor_name_and_recreate_after_delete(db: Database) -> None:
    async with db.writer() as conn:
        await make_flavor(conn, name="m1.small", flavorid="1")
    with pytest.raises(exception.DBDuplicateEntry) as err:
        async with db.writer() as conn:
            await make_flavor(conn, name="m1.small", flavorid="2")
    assert (err.value.kwargs["table"], err.value.kwargs["columns"]) == ("flavors", "name")
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await make_flavor(conn, name="m1.other", flavorid="1")
    async with db.writer() as conn:
        await flavors.destroy(conn, "1")
        again = await make_flavor(conn, name="m1.small", flavorid="1")
    async with db.reader() as conn:
        assert (await flavors.get_by_name(conn, "m1.small"))["id"] == again["id"]


async def test_duplicate_service_and_recreate_after_delete(db: Database) -> None:
    async with db.writer() as conn:
        svc = await make_service(conn, host="h1", binary="nubes-compute")
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await make_service(conn, host="h1", binary="nubes-compute")
    async with db.writer() as conn:
        await services.destroy(conn, svc["id"])
        await make_service(conn, host="h1", binary="nubes-compute")


async def test_duplicate_is_a_conflict_with_safe_message(db: Database) -> None:
    async with db.writer() as conn:
        await make_flavor(conn, name="dup")
    with pytest.raises(exception.Conflict) as err:
        async with db.writer() as conn:
            await make_flavor(conn, name="dup")
    assert err.value.code == 409
    assert "flavors" in err.value.user_message()


async def test_swallowed_error_dooms_the_transaction_on_every_backend(db: Database) -> None:
    # PostgreSQL cannot go on after a failed statement; the other backends
    # could, but a writer block behaves the same everywhere: no partial commit.
    with pytest.raises(exception.DBError, match="rolled back"):
        async with db.writer() as conn:
            await make_flavor(conn, name="kept?")
            with pytest.raises(exception.DBDuplicateEntry):
                await make_flavor(conn, name="kept?")
    async with db.reader() as conn:
        assert await flavors.get_all(conn) == []
