"""Projects, users, roles, role assignments and tokens (a Keystone v3 subset).

A token's roles are a snapshot taken at issue; every change that takes a
right away (a role removed, a user disabled or deleted, a project disabled
or deleted) revokes the tokens it concerns in the same transaction, as
Keystone does, and a token of a user or project that is gone or disabled is
not live whatever its row says.

Passwords never reach this module in clear: callers hash them first
(:mod:`nubes.api.identity.passwords`). Tokens are stored by the SHA-256 of
their text, so a copy of the database does not hand out live tokens.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row, now_or
from nubes.db.models import projects, role_assignments, roles, tokens, users

#: The roles every cloud has, from most to least powerful. Each implies the
#: ones after it (Keystone's default implied roles: admin > manager > member > reader).
DEFAULT_ROLES = ("admin", "manager", "member", "reader")


def new_id() -> str:
    return uuid.uuid4().hex


def implied_roles(names: Iterable[str]) -> list[str]:
    """``names`` with the roles they imply, strongest first, then any others."""
    held = set(names)
    out: list[str] = []
    for i, role in enumerate(DEFAULT_ROLES):
        if role in held or any(r in held for r in DEFAULT_ROLES[:i]):
            out.append(role)
    out += sorted(held - set(DEFAULT_ROLES))
    return out


# --- projects ----------------------------------------------------------------


async def project_create(
    conn: AsyncConnection, name: str, *, description: str | None = None, id: str | None = None
) -> Row:
    """DBDuplicateEntry if the name is taken."""
    return await insert_row(
        conn,
        projects,
        {"id": id or new_id(), "name": name, "description": description, "enabled": True},
    )


async def project_get(conn: AsyncConnection, id_or_name: str) -> Row:
    row = await fetch_one(conn, select(projects).where(projects.c.id == id_or_name))
    if row is None:
        row = await fetch_one(conn, select(projects).where(projects.c.name == id_or_name))
    if row is None:
        raise exception.NotFound(reason=f"project {id_or_name} does not exist")
    return row


async def project_get_all(conn: AsyncConnection, *, name: str | None = None) -> list[Row]:
    stmt = select(projects)
    if name is not None:
        stmt = stmt.where(projects.c.name == name)
    return await fetch_all(conn, stmt.order_by(projects.c.name))


async def project_update(conn: AsyncConnection, project_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(
        update(projects).where(projects.c.id == project_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"project {project_id} does not exist")
    if values.get("enabled") is False:
        await _tokens_revoke_where(conn, tokens.c.project_id == project_id)


async def project_delete(conn: AsyncConnection, project_id: str) -> None:
    result = await conn.execute(delete(projects).where(projects.c.id == project_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"project {project_id} does not exist")
    await _tokens_revoke_where(conn, tokens.c.project_id == project_id)


# --- users -------------------------------------------------------------------


async def user_create(
    conn: AsyncConnection,
    name: str,
    password_hash: str | None,
    *,
    default_project_id: str | None = None,
    id: str | None = None,
) -> Row:
    return await insert_row(
        conn,
        users,
        {
            "id": id or new_id(),
            "name": name,
            "password_hash": password_hash,
            "default_project_id": default_project_id,
            "enabled": True,
        },
    )


async def user_get(conn: AsyncConnection, id_or_name: str) -> Row:
    row = await fetch_one(conn, select(users).where(users.c.id == id_or_name))
    if row is None:
        row = await fetch_one(conn, select(users).where(users.c.name == id_or_name))
    if row is None:
        raise exception.NotFound(reason=f"user {id_or_name} does not exist")
    return row


async def user_get_by_name(conn: AsyncConnection, name: str) -> Row | None:
    return await fetch_one(conn, select(users).where(users.c.name == name))


async def user_get_by_id(conn: AsyncConnection, user_id: str) -> Row | None:
    return await fetch_one(conn, select(users).where(users.c.id == user_id))


async def user_get_all(conn: AsyncConnection) -> list[Row]:
    return await fetch_all(conn, select(users).order_by(users.c.name))


async def user_update(conn: AsyncConnection, user_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(update(users).where(users.c.id == user_id).values(dict(values)))
    if not result.rowcount:
        raise exception.NotFound(reason=f"user {user_id} does not exist")
    if values.get("enabled") is False:
        await _tokens_revoke_where(conn, tokens.c.user_id == user_id)


async def user_delete(conn: AsyncConnection, user_id: str) -> None:
    """Delete the user (its role assignments go with it) and revoke its tokens."""
    result = await conn.execute(delete(users).where(users.c.id == user_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"user {user_id} does not exist")
    await _tokens_revoke_where(conn, tokens.c.user_id == user_id)


# --- roles -------------------------------------------------------------------


async def role_ensure(conn: AsyncConnection, name: str) -> Row:
    """The role called ``name``, created when missing."""
    row = await fetch_one(conn, select(roles).where(roles.c.name == name))
    if row is not None:
        return row
    return await insert_row(conn, roles, {"id": new_id(), "name": name})


async def role_get_all(conn: AsyncConnection) -> list[Row]:
    return await fetch_all(conn, select(roles).order_by(roles.c.name))


async def role_get_by_name(conn: AsyncConnection, name: str) -> Row:
    row = await fetch_one(conn, select(roles).where(roles.c.name == name))
    if row is None:
        raise exception.NotFound(reason=f"role {name} does not exist")
    return row


async def assignment_add(conn: AsyncConnection, user_id: str, project_id: str, role: str) -> bool:
    """Give ``user_id`` the role on the project; False if it already had it."""
    role_row = await role_ensure(conn, role)
    stmt = select(role_assignments.c.id).where(
        role_assignments.c.user_id == user_id,
        role_assignments.c.project_id == project_id,
        role_assignments.c.role_id == role_row["id"],
    )
    if await fetch_one(conn, stmt) is not None:
        return False
    await insert_row(
        conn,
        role_assignments,
        {"user_id": user_id, "project_id": project_id, "role_id": role_row["id"]},
    )
    return True


async def assignment_remove(
    conn: AsyncConnection, user_id: str, project_id: str, role: str
) -> bool:
    role_row = await role_get_by_name(conn, role)
    result = await conn.execute(
        delete(role_assignments).where(
            role_assignments.c.user_id == user_id,
            role_assignments.c.project_id == project_id,
            role_assignments.c.role_id == role_row["id"],
        )
    )
    if not result.rowcount:
        return False
    # The tokens' role snapshots still hold the role (and what it implied).
    await _tokens_revoke_where(conn, tokens.c.user_id == user_id, tokens.c.project_id == project_id)
    return True


async def roles_for(conn: AsyncConnection, user_id: str, project_id: str) -> list[Row]:
    """The roles assigned to the user on the project (not the implied ones)."""
    stmt = (
        select(roles)
        .select_from(roles.join(role_assignments, role_assignments.c.role_id == roles.c.id))
        .where(role_assignments.c.user_id == user_id, role_assignments.c.project_id == project_id)
        .order_by(roles.c.name)
    )
    return await fetch_all(conn, stmt)


async def projects_for_user(conn: AsyncConnection, user_id: str) -> list[Row]:
    member = select(role_assignments.c.project_id).where(role_assignments.c.user_id == user_id)
    stmt = select(projects).where(projects.c.id.in_(member)).order_by(projects.c.name)
    return await fetch_all(conn, stmt)


# --- tokens ------------------------------------------------------------------


async def token_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    return await insert_row(conn, tokens, {"revoked": False, **values})


async def token_get(
    conn: AsyncConnection, token_hash: str, *, now: dt.datetime | None = None
) -> Row | None:
    """The live token (not revoked, not expired, its user enabled and, if
    scoped, its project enabled) with that hash, or None."""
    stmt = (
        select(tokens)
        .select_from(
            tokens.join(users, users.c.id == tokens.c.user_id).outerjoin(
                projects, projects.c.id == tokens.c.project_id
            )
        )
        .where(
            tokens.c.token_hash == token_hash,
            tokens.c.revoked.is_(False),
            tokens.c.expires_at > now_or(now),
            users.c.enabled.is_(True),
            or_(tokens.c.project_id.is_(None), projects.c.enabled.is_(True)),
        )
    )
    return await fetch_one(conn, stmt)


async def token_revoke(conn: AsyncConnection, token_hash: str) -> bool:
    result = await conn.execute(
        update(tokens)
        .where(tokens.c.token_hash == token_hash, tokens.c.revoked.is_(False))
        .values(revoked=True)
    )
    return bool(result.rowcount)


async def _tokens_revoke_where(conn: AsyncConnection, *criteria: Any) -> int:
    result = await conn.execute(
        update(tokens).where(tokens.c.revoked.is_(False), *criteria).values(revoked=True)
    )
    return int(result.rowcount)


async def token_purge_expired(conn: AsyncConnection, *, now: dt.datetime | None = None) -> int:
    """Delete tokens that expired; returns how many."""
    result = await conn.execute(delete(tokens).where(tokens.c.expires_at <= now_or(now)))
    return int(result.rowcount)
