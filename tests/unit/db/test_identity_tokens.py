"""A token is live only while what it grants still holds: a removed role, a
disabled or deleted user or project ends it (on every database backend)."""

from __future__ import annotations

import datetime as dt
import uuid

from nubes.db.api import identity
from nubes.db.api import roles as roles_db
from nubes.db.engine import Database
from nubes.db.types import utcnow


async def _token(db: Database, user_id: str, project_id: str | None) -> str:
    digest = uuid.uuid4().hex
    async with db.writer() as conn:
        await identity.token_create(
            conn,
            {
                "token_hash": digest,
                "user_id": user_id,
                "project_id": project_id,
                "roles": [{"id": "r", "name": "admin"}],
                "methods": ["password"],
                "audit_id": uuid.uuid4().hex[:22],
                "issued_at": utcnow(),
                "expires_at": utcnow() + dt.timedelta(hours=1),
            },
        )
    return digest


async def _live(db: Database, digest: str) -> bool:
    async with db.reader() as conn:
        return await identity.token_get(conn, digest) is not None


async def test_tokens_end_with_the_rights_they_carry(db: Database) -> None:
    async with db.writer() as conn:
        web = await identity.project_create(conn, f"web-{uuid.uuid4().hex[:6]}")
        ops = await identity.project_create(conn, f"ops-{uuid.uuid4().hex[:6]}")
        alice = await identity.user_create(conn, f"alice-{uuid.uuid4().hex[:6]}", None)
        bob = await identity.user_create(conn, f"bob-{uuid.uuid4().hex[:6]}", None)
        for project in (web, ops):
            await roles_db.assignment_add(conn, alice["id"], project["id"], "admin")
        await roles_db.assignment_add(conn, bob["id"], web["id"], "member")
    on_web, on_ops = (
        await _token(db, alice["id"], web["id"]),
        await _token(db, alice["id"], ops["id"]),
    )
    unscoped, bobs = await _token(db, alice["id"], None), await _token(db, bob["id"], web["id"])
    assert all([await _live(db, t) for t in (on_web, on_ops, unscoped, bobs)])

    # A role removed: the user's tokens on that project only.
    async with db.writer() as conn:
        assert await roles_db.assignment_remove(conn, alice["id"], web["id"], "admin")
        assert not await roles_db.assignment_remove(conn, alice["id"], web["id"], "admin")
    assert [await _live(db, t) for t in (on_web, on_ops, unscoped, bobs)] == [
        False,
        True,
        True,
        True,
    ]

    # A project disabled: every token scoped to it.
    async with db.writer() as conn:
        await identity.project_update(conn, web["id"], {"enabled": False})
    assert not await _live(db, bobs)
    async with db.writer() as conn:
        await identity.project_update(conn, web["id"], {"enabled": True})
    assert not await _live(db, bobs)  # revoked, not merely hidden

    # A user disabled, then deleted: all of theirs.
    async with db.writer() as conn:
        await identity.user_update(conn, alice["id"], {"enabled": False})
    assert not await _live(db, on_ops) and not await _live(db, unscoped)
    fresh = await _token(db, bob["id"], ops["id"])
    assert await _live(db, fresh)
    async with db.writer() as conn:
        await identity.user_delete(conn, bob["id"])
        assert await roles_db.roles_for(conn, bob["id"], web["id"]) == []
    assert not await _live(db, fresh)


async def test_a_token_of_a_vanished_user_or_project_is_not_live(db: Database) -> None:
    """Even a row nobody revoked: the user or project it names must exist and be enabled."""
    async with db.writer() as conn:
        project = await identity.project_create(conn, f"p-{uuid.uuid4().hex[:6]}")
        user = await identity.user_create(conn, f"u-{uuid.uuid4().hex[:6]}", None)
    token = await _token(db, user["id"], project["id"])
    assert await _live(db, token)
    async with db.writer() as conn:
        await identity.project_delete(conn, project["id"])
    assert not await _live(db, token)
    orphan = await _token(db, uuid.uuid4().hex, None)
    assert not await _live(db, orphan)
