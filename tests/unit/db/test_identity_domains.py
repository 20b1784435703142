"""Names unique per domain, domain- and system-scoped tokens, and catalog
rows (on every database backend), and migration 0014 over existing rows."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from nubes import exception
from nubes.db import engine as db_engine
from nubes.db import migration
from nubes.db.api import catalog, identity
from nubes.db.api import roles as roles_db
from nubes.db.engine import Database
from nubes.db.types import utcnow


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_user_and_project_names_are_unique_per_domain(db: Database) -> None:
    name = _name("team")
    async with db.writer() as conn:
        d2 = await identity.domain_create(conn, _name("d"))
        p1 = await identity.project_create(conn, name)
        p2 = await identity.project_create(conn, name, domain_id=d2["id"])
        u1 = await identity.user_create(conn, name, None)
        u2 = await identity.user_create(conn, name, None, domain_id=d2["id"])
    async with db.reader() as conn:
        assert (await identity.project_get(conn, name))["id"] == p1["id"]
        assert (await identity.project_get(conn, name, domain_id=d2["id"]))["id"] == p2["id"]
        found = await identity.user_get_by_name(conn, name, domain_id=d2["id"])
        assert found is not None and found["id"] == u2["id"]
        found = await identity.user_get_by_name(conn, name)
        assert found is not None and found["id"] == u1["id"]
    for create in (
        lambda conn: identity.project_create(conn, name, domain_id=d2["id"]),
        lambda conn: identity.user_create(conn, name, None, domain_id=d2["id"]),
    ):
        with pytest.raises(exception.DBDuplicateEntry):
            async with db.writer() as conn:
                await create(conn)


async def test_domain_and_system_roles_and_scoped_tokens(db: Database) -> None:
    async with db.writer() as conn:
        domain = await identity.domain_create(conn, _name("d"))
        user = await identity.user_create(conn, _name("u"), None, domain_id=domain["id"])
        group = await identity.group_create(conn, _name("g"), domain_id=domain["id"])
        reader = await roles_db.role_ensure(conn, "reader")
        await identity.group_add_user(conn, group["id"], user["id"])
        await roles_db.grant(conn, identity.GROUP_DOMAIN, group["id"], domain["id"], reader["id"])
        await roles_db.grant(conn, identity.USER_SYSTEM, user["id"], identity.SYSTEM, reader["id"])
        digest = uuid.uuid4().hex
        await identity.token_create(
            conn,
            {
                "token_hash": digest,
                "user_id": user["id"],
                "domain_id": domain["id"],
                "roles": [{"id": reader["id"], "name": "reader"}],
                "methods": ["password"],
                "audit_id": "a",
                "issued_at": utcnow(),
                "expires_at": utcnow() + dt.timedelta(hours=1),
            },
        )
    async with db.reader() as conn:
        assert [
            r["name"] for r in await roles_db.roles_on_domain(conn, user["id"], domain["id"])
        ] == ["reader"]
        assert [r["name"] for r in await roles_db.roles_on_system(conn, user["id"])] == ["reader"]
        assert [d["id"] for d in await roles_db.domains_for_user(conn, user["id"])] == [
            domain["id"]
        ]
        assert await identity.token_get(conn, digest) is not None
    async with db.writer() as conn:
        # A disabled domain ends the tokens scoped to it.
        await identity.domain_update(conn, domain["id"], {"enabled": False})
    async with db.reader() as conn:
        assert await identity.token_get(conn, digest) is None


async def test_catalog_rows(db: Database) -> None:
    region_id = _name("r")
    async with db.writer() as conn:
        await catalog.region_create(conn, {"id": region_id, "description": None})
        service = await catalog.service_create(conn, {"type": "volume", "enabled": True})
        endpoint = await catalog.endpoint_create(
            conn,
            {
                "service_id": service["id"],
                "interface": "public",
                "url": "http://v.test/",
                "region_id": region_id,
                "enabled": True,
            },
        )
    with pytest.raises(exception.Forbidden):
        async with db.writer() as conn:
            await catalog.region_delete(conn, region_id)
    async with db.writer() as conn:
        await catalog.service_delete(conn, service["id"])
        assert await catalog.endpoint_get(conn, endpoint["id"]) is None
        await catalog.region_delete(conn, region_id)
        assert await catalog.region_get(conn, region_id) is None


async def test_migration_0014_keeps_existing_identity_rows(empty_db_url: str) -> None:
    await migration.db_sync(empty_db_url, "0013")
    engine = db_engine.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO projects (id, name, enabled, domain_id) "
                    "VALUES ('p1', 'web', :t, 'default')"
                ),
                {"t": True},
            )
        await migration.db_sync(empty_db_url)
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO domains (id, name, enabled) VALUES ('d2', 'D2', :t)"), {"t": True}
            )
            # The same name in another domain is now allowed.
            await conn.execute(
                text(
                    "INSERT INTO projects (id, name, enabled, domain_id) "
                    "VALUES ('p2', 'web', :t, 'd2')"
                ),
                {"t": True},
            )
            names = (
                (await conn.execute(text("SELECT id FROM projects ORDER BY id"))).scalars().all()
            )
        assert names == ["p1", "p2"]
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM projects WHERE id = 'p2'"))
        await migration.db_downgrade(empty_db_url, "0013")
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT name FROM projects"))).scalars().all()
        assert kept == ["web"]
    finally:
        await engine.dispose()
