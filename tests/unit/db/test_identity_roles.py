"""Implied-role rules, domain-specific roles and project trees in the DB
(on every backend), and migration 0016 over existing rows."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from nubes import exception
from nubes.db import engine as db_engine
from nubes.db import migration
from nubes.db.api import identity
from nubes.db.api import roles as roles_db
from nubes.db.engine import Database


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_effective_roles_follow_rules_and_drop_domain_roles(db: Database) -> None:
    async with db.writer() as conn:
        await roles_db.bootstrap_roles(conn)
        domain = await identity.domain_create(conn, _name("d"))
        a = await roles_db.role_create(conn, _name("a"))
        b = await roles_db.role_create(conn, _name("b"))
        local = await roles_db.role_create(conn, _name("l"), domain_id=domain["id"])
        member = await roles_db.role_get_by_name(conn, "member")
        await roles_db.inference_create(conn, a["id"], b["id"])
        await roles_db.inference_create(conn, b["id"], member["id"])
        await roles_db.inference_create(conn, local["id"], a["id"])
        with pytest.raises(exception.ValidationError):
            await roles_db.inference_create(conn, member["id"], a["id"])
        with pytest.raises(exception.Forbidden):
            await roles_db.inference_create(conn, a["id"], local["id"])
    async with db.reader() as conn:
        got = [r["name"] for r in await roles_db.effective_roles(conn, [local["id"]])]
        assert got == [a["name"], b["name"], "member", "reader"]
        assert await roles_db.role_get_all(conn, domain_id=domain["id"]) == [local]
    async with db.writer() as conn:
        await roles_db.role_delete(conn, b["id"])
        assert await roles_db.inferences(conn, a["id"]) == []
        got = [r["name"] for r in await roles_db.effective_roles(conn, [local["id"]])]
        assert got == [a["name"]]


async def test_migration_0016_makes_the_default_chain_rows(empty_db_url: str) -> None:
    await migration.db_sync(empty_db_url, "0015")
    engine = db_engine.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO roles (id, name) VALUES ('m1', 'member')"))
        await migration.db_sync(empty_db_url)
        async with engine.begin() as conn:
            ids = dict((await conn.execute(text("SELECT name, id FROM roles"))).all())
            rules = set(
                (
                    await conn.execute(
                        text("SELECT prior_role_id, implied_role_id FROM role_inferences")
                    )
                ).all()
            )
            # The existing member role is reused, the missing ones made.
            assert ids["member"] == "m1"
            assert rules == {
                (ids["admin"], ids["manager"]),
                (ids["manager"], "m1"),
                ("m1", ids["reader"]),
            }
            await conn.execute(
                text("INSERT INTO roles (id, name, domain_id) VALUES ('dm', 'member', 'd1')")
            )
        await migration.db_downgrade(empty_db_url, "0015")
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT id FROM roles ORDER BY id"))).scalars().all()
        assert "m1" in kept and "dm" not in kept
    finally:
        await engine.dispose()


async def test_project_tree_rules(db: Database) -> None:
    async with db.writer() as conn:
        root = await identity.project_create(conn, _name("root"))
        child = await identity.project_create(conn, _name("child"), parent_id=root["id"])
        leaf = await identity.project_create(conn, _name("leaf"), parent_id=child["id"])
    async with db.reader() as conn:
        assert [p["id"] for p in await identity.project_parents(conn, leaf["id"])] == [
            child["id"],
            root["id"],
        ]
        assert [p["id"] for p in await identity.project_subtree(conn, root["id"])] == [
            child["id"],
            leaf["id"],
        ]
        children = await identity.project_get_all(conn, parent_id=root["id"])
        assert [p["id"] for p in children] == [child["id"]]
    with pytest.raises(exception.Forbidden):
        async with db.writer() as conn:
            await identity.project_delete(conn, child["id"])
    async with db.writer() as conn:
        await identity.project_delete(conn, leaf["id"])
        await identity.project_delete(conn, child["id"])
        assert await identity.project_subtree(conn, root["id"]) == []
