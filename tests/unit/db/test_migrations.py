"""Migrations: from empty to head on every backend, and no drift from the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from nubes.db import engine as db_engine
from nubes.db import migration, models


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, models.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_from_empty_matches_models(empty_db_url: str) -> None:
    engine = db_engine.create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(migration.current_revision) is None
        assert await migration.db_sync(empty_db_url) == migration.head_revision()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(_tables)
    finally:
        await engine.dispose()
    expected = set(models.metadata.tables) | {"alembic_version"}
    assert tables == expected
    # Every soft-deletable table has its shadow twin, and only those.
    for name, table in models.metadata.tables.items():
        if name.startswith(models.SHADOW_PREFIX):
            continue
        assert (models.shadow_name(name) in tables) == models.is_soft_deletable(table)


async def test_sync_is_idempotent_and_reports_version(empty_db_url: str) -> None:
    head = migration.head_revision()
    assert await migration.db_sync(empty_db_url) == head
    assert await migration.db_sync(empty_db_url) == head
    assert await migration.db_version(empty_db_url) == head


async def test_downgrade_to_base_and_up_again(empty_db_url: str) -> None:
    await migration.db_sync(empty_db_url)
    assert await migration.db_downgrade(empty_db_url, "base") is None
    engine = db_engine.create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) <= {"alembic_version"}
    finally:
        await engine.dispose()
    assert await migration.db_sync(empty_db_url) == migration.head_revision()


def test_shadow_tables_mirror_columns() -> None:
    for name, shadow in models.SHADOW_TABLES.items():
        live = models.metadata.tables[name]
        assert [c.name for c in shadow.columns] == [c.name for c in live.columns]
        assert not shadow.foreign_keys
        assert not [c for c in shadow.constraints if c.__class__.__name__ == "UniqueConstraint"]


async def test_tags_created_before_the_tags_table_move_into_it_and_back(
    empty_db_url: str,
) -> None:
    from sqlalchemy import text

    await migration.db_sync(empty_db_url, "0003")
    engine = db_engine.create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            for uuid, tags, deleted in (
                ("11111111-1111-4111-8111-111111111111", '["b", "a", "a"]', 0),
                ("22222222-2222-4222-8222-222222222222", None, 0),
                ("33333333-3333-4333-8333-333333333333", '["gone"]', 3),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO instances (uuid, tags, locked, shutdown_terminate, deleted)"
                        " VALUES (:uuid, :tags, :f, :f, :deleted)"
                    ),
                    {"uuid": uuid, "tags": tags, "f": False, "deleted": deleted},
                )
        await migration.db_sync(empty_db_url)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT resource_id, tag FROM tags ORDER BY tag"))
            ).all()
        # A deleted server's tags go with it, as they would have at its delete.
        assert [(r[0][:1], r[1]) for r in rows] == [("1", "a"), ("1", "b")]
        await migration.db_downgrade(empty_db_url, "0003")
        async with engine.connect() as conn:
            back = (
                await conn.execute(text("SELECT tags FROM instances WHERE uuid LIKE '1%'"))
            ).scalar_one()
        assert back == '["a", "b"]'
    finally:
        await engine.dispose()
