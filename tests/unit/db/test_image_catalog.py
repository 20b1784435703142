"""The image quotas' usage count, the metadefs catalog and image tasks, on
every database backend (tests/integration/db runs these on the servers)."""

from __future__ import annotations

import uuid

import pytest

from nubes import exception
from nubes.db.api import image_tasks, images, metadefs, quotas
from nubes.db.engine import Database
from nubes.db.types import utcnow


async def _image(db: Database, owner: str, status: str, size: int | None) -> None:
    async with db.writer() as conn:
        await images.create(
            conn,
            {
                "id": str(uuid.uuid4()),
                "name": "i",
                "owner": owner,
                "status": status,
                "visibility": "private",
                "protected": False,
                "os_hidden": False,
                "min_disk": 0,
                "min_ram": 0,
                "size": size,
                "properties": {},
                "tags": [],
                "created_at": utcnow(),
            },
        )


async def test_image_usage_counts_what_glance_counts(db: Database) -> None:
    await _image(db, "p1", "active", 3 << 20)
    await _image(db, "p1", "queued", None)
    await _image(db, "p1", "saving", None)
    await _image(db, "p1", "uploading", 1 << 20)  # staged
    await _image(db, "p1", "importing", None)
    await _image(db, "p2", "active", 5 << 20)
    async with db.reader() as conn:
        assert await images.usage(conn, "p1") == {
            "image_count_total": 5,
            "image_count_uploading": 3,
            "image_size_total": 3 << 20,
            "image_stage_total": 1 << 20,
        }
        empty = await images.usage(conn, "nobody")
    assert set(empty.values()) == {0}


async def test_project_limit_rows_and_one_limit_deleted(db: Database) -> None:
    async with db.writer() as conn:
        await quotas.limits_set(conn, "p1", {"image_count_total": 2, "instances": 4})
        await quotas.limits_set(conn, "p1", {"image_count_total": 9}, user_id="u1")
        await quotas.limits_set(conn, "p2", {"image_size_total": 100})
    async with db.reader() as conn:
        rows = await quotas.project_limit_rows(conn, ["image_count_total", "image_size_total"])
        assert [(r["project_id"], r["resource"], r["hard_limit"]) for r in rows] == [
            ("p1", "image_count_total", 2),
            ("p2", "image_size_total", 100),
        ]
    async with db.writer() as conn:
        assert await quotas.limit_delete(conn, "p1", "image_count_total")
        assert not await quotas.limit_delete(conn, "p1", "image_count_total")
        assert await quotas.limits_get(conn, "p1") == {"instances": 4}


async def test_a_namespace_goes_with_everything_in_it(db: Database) -> None:
    async with db.writer() as conn:
        ns = await metadefs.namespace_create(
            conn,
            {
                "id": str(uuid.uuid4()),
                "namespace": "OS::A",
                "visibility": "public",
                "protected": False,
                "owner": "p1",
            },
        )
        await metadefs.resource_type_ensure(conn, "OS::Glance::Image", protected=True)
        await metadefs.resource_type_ensure(conn, "OS::Glance::Image", protected=True)
        await metadefs.association_create(
            conn, {"namespace_id": ns["id"], "resource_type_name": "OS::Glance::Image"}
        )
        values = {"id": str(uuid.uuid4()), "namespace_id": ns["id"], "name": "p"}
        await metadefs.child_create(
            conn, "property", {**values, "json_schema": {"title": "P", "type": "string"}}
        )
        await metadefs.child_create(
            conn, "object", {**values, "id": str(uuid.uuid4()), "properties": {}, "required": []}
        )
        await metadefs.child_create(conn, "tag", {**values, "id": str(uuid.uuid4())})
    with pytest.raises(exception.DBDuplicateEntry):
        async with db.writer() as conn:
            await metadefs.child_create(conn, "tag", {**values, "id": str(uuid.uuid4())})
    async with db.reader() as conn:
        prop = await metadefs.child_get(conn, "property", ns["id"], "p")
        assert prop is not None and prop["json_schema"] == {"title": "P", "type": "string"}
        listed = await metadefs.namespace_get_all(
            conn, project_id="p2", all_visible=False, resource_types=["OS::Glance::Image"]
        )
        assert [n["namespace"] for n in listed] == ["OS::A"]
        assert len(await metadefs.resource_type_get_all(conn)) == 1
    async with db.writer() as conn:
        await metadefs.namespace_destroy(conn, ns["id"])
    async with db.reader() as conn:
        assert await metadefs.namespace_get(conn, "OS::A") is None
        for kind in metadefs.CHILDREN:
            assert await metadefs.child_get_all(conn, kind, ns["id"]) == []
        assert await metadefs.associations_get(conn, [ns["id"]]) == []


async def test_a_task_moves_only_from_the_status_it_was_read_in(db: Database) -> None:
    task_id = str(uuid.uuid4())
    async with db.writer() as conn:
        await image_tasks.create(
            conn,
            {
                "id": task_id,
                "type": "import",
                "status": "pending",
                "owner": "p1",
                "input": {"import_from": "http://x/y"},
            },
        )
        await image_tasks.update_status(conn, task_id, "pending", {"status": "processing"})
    with pytest.raises(exception.TaskChanged):
        async with db.writer() as conn:
            await image_tasks.update_status(conn, task_id, "pending", {"status": "failure"})
    async with db.reader() as conn:
        row = await image_tasks.get(conn, task_id)
        assert row is not None and row["status"] == "processing"
        assert row["input"] == {"import_from": "http://x/y"}
        assert [r["id"] for r in await image_tasks.get_all(conn, filters={"status": "processing"})]
        assert await image_tasks.get_all(conn, owner="p2") == []
