"""Domains, projects, users, groups, application credentials and tokens (a
Keystone v3 subset; roles and role assignments are :mod:`nubes.db.api.roles`).

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

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, StatementCache, fetch_all, fetch_one, insert_row, now_or
from nubes.db.models import (
    DEFAULT_DOMAIN_ID,
    application_credentials,
    assignments,
    credentials,
    domains,
    group_members,
    groups,
    project_tags,
    projects,
    tokens,
    users,
)

# Prebuilt statements of the hot reads (token validation, every request).
_STATEMENTS = StatementCache()

#: Keystone's ``[DEFAULT] max_project_tree_depth`` default: a project at the
#: top of its domain is at depth 1.
MAX_PROJECT_TREE_DEPTH = 5


#: The stored values of ``assignments.type``: who (a user or a group) holds a
#: role on what (a project, a domain or the system); roles and assignments
#: are :mod:`nubes.db.api.roles`, which deletes here must keep in step with.
USER_PROJECT, GROUP_PROJECT = "UserProject", "GroupProject"
USER_DOMAIN, GROUP_DOMAIN = "UserDomain", "GroupDomain"
#: Keystone's system scope: the cloud itself (its ``target_id`` is :data:`SYSTEM`).
USER_SYSTEM, GROUP_SYSTEM = "UserSystem", "GroupSystem"
USER_TYPES = (USER_PROJECT, USER_DOMAIN, USER_SYSTEM)
GROUP_TYPES = (GROUP_PROJECT, GROUP_DOMAIN, GROUP_SYSTEM)
PROJECT_TYPES = (USER_PROJECT, GROUP_PROJECT)
DOMAIN_TYPES = (USER_DOMAIN, GROUP_DOMAIN)
SYSTEM_TYPES = (USER_SYSTEM, GROUP_SYSTEM)
#: The one system there is (Keystone's ``system: {"all": true}``).
SYSTEM = "all"


def new_id() -> str:
    return uuid.uuid4().hex


def name_listing(table: Any, **filters: Any) -> Any:
    """``SELECT`` of ``table`` ordered by name, with each filter given (not
    None) as an equality (``enabled`` as a boolean test): the one shape of
    every directory listing."""
    stmt = select(table)
    for column, value in filters.items():
        if value is None:
            continue
        col = table.c[column]
        stmt = stmt.where(col.is_(value) if isinstance(value, bool) else col == value)
    return stmt.order_by(table.c.name)


# --- projects ----------------------------------------------------------------


async def project_create(
    conn: AsyncConnection,
    name: str,
    *,
    description: str | None = None,
    id: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
    enabled: bool = True,
    parent_id: str | None = None,
) -> Row:
    """DBDuplicateEntry if the name is taken. Under ``parent_id`` (a project
    of the same domain; None: at the top of the domain) with Keystone's
    rules: the parent exists, is enabled, is in the domain, and the tree
    stays within :data:`MAX_PROJECT_TREE_DEPTH`."""
    if parent_id is not None:
        parent = await project_get_by_id(conn, parent_id)
        if parent is None:
            raise exception.NotFound(reason=f"Could not find project: {parent_id}.")
        if parent["domain_id"] != domain_id:
            raise exception.ValidationError(
                field="parent_id",
                reason=f"the parent {parent_id} is in domain {parent['domain_id']}, "
                f"not {domain_id}",
            )
        if not parent["enabled"]:
            raise exception.ValidationError(
                field="parent_id", reason=f"cannot create a project in disabled parent {parent_id}"
            )
        if len(await project_parents(conn, parent_id)) + 2 > MAX_PROJECT_TREE_DEPTH:
            raise exception.Forbidden(reason=f"Max hierarchy depth reached for {parent_id} branch.")
    return await insert_row(
        conn,
        projects,
        {
            "id": id or new_id(),
            "name": name,
            "description": description,
            "enabled": enabled,
            "domain_id": domain_id,
            "parent_id": parent_id,
        },
    )


async def project_parents(conn: AsyncConnection, project_id: str) -> list[Row]:
    """The project's ancestors, its parent first (none at the top of its domain)."""
    out: list[Row] = []
    row = await project_get_by_id(conn, project_id)
    while row is not None and row["parent_id"] is not None:
        row = await project_get_by_id(conn, row["parent_id"])
        if row is not None:
            out.append(row)
    return out


async def project_subtree(conn: AsyncConnection, project_id: str) -> list[Row]:
    """The project's descendants, level by level (children first)."""
    out: list[Row] = []
    frontier = [project_id]
    while frontier:
        level = await fetch_all(
            conn,
            select(projects).where(projects.c.parent_id.in_(frontier)).order_by(projects.c.name),
        )
        out += level
        frontier = [r["id"] for r in level]
    return out


async def project_get(
    conn: AsyncConnection, id_or_name: str, *, domain_id: str = DEFAULT_DOMAIN_ID
) -> Row:
    """The project with that id, else the one of that name in ``domain_id``
    (names are unique only inside a domain)."""
    row = await project_get_by_id(conn, id_or_name)
    if row is None:
        row = await project_get_by_name(conn, id_or_name, domain_id=domain_id)
    if row is None:
        raise exception.NotFound(reason=f"project {id_or_name} does not exist")
    return row


async def project_get_by_id(conn: AsyncConnection, project_id: str) -> Row | None:
    return await fetch_one(conn, select(projects).where(projects.c.id == project_id))


async def project_get_by_name(
    conn: AsyncConnection, name: str, *, domain_id: str = DEFAULT_DOMAIN_ID
) -> Row | None:
    stmt = select(projects).where(projects.c.name == name, projects.c.domain_id == domain_id)
    return await fetch_one(conn, stmt)


async def project_get_all(
    conn: AsyncConnection,
    *,
    name: str | None = None,
    domain_id: str | None = None,
    enabled: bool | None = None,
    parent_id: str | None = None,
) -> list[Row]:
    """Projects matching the filters; ``parent_id`` is a project (its
    children) or a domain (the projects at its top), as Keystone shows a
    top-level project's parent as its domain."""
    stmt = name_listing(projects, name=name, domain_id=domain_id, enabled=enabled)
    if parent_id is not None:
        stmt = stmt.where(
            or_(
                projects.c.parent_id == parent_id,
                and_(projects.c.parent_id.is_(None), projects.c.domain_id == parent_id),
            )
        )
    return await fetch_all(conn, stmt)


async def project_update(conn: AsyncConnection, project_id: str, values: Mapping[str, Any]) -> None:
    """Keystone's hierarchy rules: a project with an enabled descendant is
    not disabled, and one under a disabled parent is not enabled (403)."""
    if values.get("enabled") is False and any(
        r["enabled"] for r in await project_subtree(conn, project_id)
    ):
        raise exception.Forbidden(
            reason=f"Cannot disable project {project_id} since its subtree contains "
            "enabled projects."
        )
    if values.get("enabled") is True:
        parents = await project_parents(conn, project_id)
        if parents and not parents[0]["enabled"]:
            raise exception.Forbidden(
                reason=f"Cannot enable project {project_id} since it has disabled parents."
            )
    result = await conn.execute(
        update(projects).where(projects.c.id == project_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"project {project_id} does not exist")
    if values.get("enabled") is False:
        await tokens_revoke_where(conn, tokens.c.project_id == project_id)


async def project_delete(conn: AsyncConnection, project_id: str) -> None:
    """Delete the project with its role assignments, application
    credentials and the stored credentials scoped to it, and revoke its
    tokens; 403 while it has children (Keystone's rule without cascade)."""
    child = select(projects.c.id).where(projects.c.parent_id == project_id).limit(1)
    if await fetch_one(conn, child) is not None:
        raise exception.Forbidden(
            reason=f"Cannot delete project {project_id} since it is not a leaf in the "
            "hierarchy. Delete its children first."
        )
    result = await conn.execute(delete(projects).where(projects.c.id == project_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"project {project_id} does not exist")
    await conn.execute(
        delete(assignments).where(
            assignments.c.target_id == project_id, assignments.c.type.in_(PROJECT_TYPES)
        )
    )
    await conn.execute(
        delete(application_credentials).where(application_credentials.c.project_id == project_id)
    )
    await conn.execute(delete(project_tags).where(project_tags.c.project_id == project_id))
    await conn.execute(delete(credentials).where(credentials.c.project_id == project_id))
    await tokens_revoke_where(conn, tokens.c.project_id == project_id)


async def with_tags(conn: AsyncConnection, rows: list[Row]) -> list[Row]:
    """The project rows with their ``tags`` (sorted), read in one query."""
    ids = [r["id"] for r in rows]
    tagged: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        stmt = select(project_tags).where(project_tags.c.project_id.in_(ids))
        for tag in await fetch_all(conn, stmt.order_by(project_tags.c.name)):
            tagged[tag["project_id"]].append(tag["name"])
    return [{**r, "tags": tagged[r["id"]]} for r in rows]


async def project_tags_set(conn: AsyncConnection, project_id: str, names: Iterable[str]) -> None:
    """Replace the project's tags."""
    await conn.execute(delete(project_tags).where(project_tags.c.project_id == project_id))
    for name in sorted(set(names)):
        await insert_row(conn, project_tags, {"project_id": project_id, "name": name})


async def project_tag_add(conn: AsyncConnection, project_id: str, name: str) -> None:
    if not await project_tag_exists(conn, project_id, name):
        await insert_row(conn, project_tags, {"project_id": project_id, "name": name})


async def project_tag_exists(conn: AsyncConnection, project_id: str, name: str) -> bool:
    stmt = select(project_tags.c.name).where(
        project_tags.c.project_id == project_id, project_tags.c.name == name
    )
    return await fetch_one(conn, stmt) is not None


async def project_tag_remove(conn: AsyncConnection, project_id: str, name: str) -> bool:
    result = await conn.execute(
        delete(project_tags).where(
            project_tags.c.project_id == project_id, project_tags.c.name == name
        )
    )
    return bool(result.rowcount)


# --- users -------------------------------------------------------------------


async def user_create(
    conn: AsyncConnection,
    name: str,
    password_hash: str | None,
    *,
    default_project_id: str | None = None,
    id: str | None = None,
    domain_id: str = DEFAULT_DOMAIN_ID,
    enabled: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Row:
    return await insert_row(
        conn,
        users,
        {
            "id": id or new_id(),
            "name": name,
            "password_hash": password_hash,
            "default_project_id": default_project_id,
            "enabled": enabled,
            "domain_id": domain_id,
            "extra": dict(extra or {}),
        },
    )


async def user_get(
    conn: AsyncConnection, id_or_name: str, *, domain_id: str = DEFAULT_DOMAIN_ID
) -> Row:
    row = await fetch_one(conn, select(users).where(users.c.id == id_or_name))
    if row is None:
        row = await user_get_by_name(conn, id_or_name, domain_id=domain_id)
    if row is None:
        raise exception.NotFound(reason=f"user {id_or_name} does not exist")
    return row


async def user_get_by_name(
    conn: AsyncConnection, name: str, *, domain_id: str = DEFAULT_DOMAIN_ID
) -> Row | None:
    """The user of that name in ``domain_id`` (names are unique only inside a domain)."""
    stmt = select(users).where(users.c.name == name, users.c.domain_id == domain_id)
    return await fetch_one(conn, stmt)


async def user_get_by_id(conn: AsyncConnection, user_id: str) -> Row | None:
    return await fetch_one(conn, select(users).where(users.c.id == user_id))


async def user_get_all(
    conn: AsyncConnection,
    *,
    name: str | None = None,
    domain_id: str | None = None,
    enabled: bool | None = None,
) -> list[Row]:
    return await fetch_all(
        conn, name_listing(users, name=name, domain_id=domain_id, enabled=enabled)
    )


async def user_update(conn: AsyncConnection, user_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(update(users).where(users.c.id == user_id).values(dict(values)))
    if not result.rowcount:
        raise exception.NotFound(reason=f"user {user_id} does not exist")
    # A new password, like disabling, ends every session the user has (Keystone does so too).
    if values.get("enabled") is False or "password_hash" in values:
        await tokens_revoke_where(conn, tokens.c.user_id == user_id)


async def user_delete(conn: AsyncConnection, user_id: str) -> None:
    """Delete the user with its role assignments, group memberships,
    application credentials and stored credentials, and revoke its tokens."""
    result = await conn.execute(delete(users).where(users.c.id == user_id))
    if not result.rowcount:
        raise exception.NotFound(reason=f"user {user_id} does not exist")
    await conn.execute(
        delete(assignments).where(
            assignments.c.actor_id == user_id, assignments.c.type.in_(USER_TYPES)
        )
    )
    await conn.execute(delete(group_members).where(group_members.c.user_id == user_id))
    await conn.execute(
        delete(application_credentials).where(application_credentials.c.user_id == user_id)
    )
    await conn.execute(delete(credentials).where(credentials.c.user_id == user_id))
    await tokens_revoke_where(conn, tokens.c.user_id == user_id)


# --- domains -----------------------------------------------------------------


async def domain_create(
    conn: AsyncConnection,
    name: str,
    *,
    description: str | None = None,
    enabled: bool = True,
    id: str | None = None,
) -> Row:
    """DBDuplicateEntry if the name is taken."""
    values = {"id": id or new_id(), "name": name, "description": description, "enabled": enabled}
    return await insert_row(conn, domains, values)


async def domain_get(conn: AsyncConnection, id_or_name: str) -> Row:
    row = await fetch_one(conn, select(domains).where(domains.c.id == id_or_name))
    if row is None:
        row = await fetch_one(conn, select(domains).where(domains.c.name == id_or_name))
    if row is None:
        raise exception.NotFound(reason=f"Could not find domain: {id_or_name}.")
    return row


async def domain_get_all(
    conn: AsyncConnection, *, name: str | None = None, enabled: bool | None = None
) -> list[Row]:
    return await fetch_all(conn, name_listing(domains, name=name, enabled=enabled))


async def domain_update(conn: AsyncConnection, domain_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(
        update(domains).where(domains.c.id == domain_id).values(dict(values))
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find domain: {domain_id}.")
    if values.get("enabled") is False:
        # Its users' and projects' tokens stop working, as when they are disabled.
        in_domain = or_(
            tokens.c.domain_id == domain_id,
            tokens.c.user_id.in_(select(users.c.id).where(users.c.domain_id == domain_id)),
            tokens.c.project_id.in_(select(projects.c.id).where(projects.c.domain_id == domain_id)),
        )
        await tokens_revoke_where(conn, in_domain)


async def domain_delete(conn: AsyncConnection, domain_id: str) -> None:
    """Delete a disabled domain with everything in it (Keystone's order).

    Forbidden while it is enabled, and for the default domain, which the
    cloud's own users and projects live in.
    """
    row = await domain_get(conn, domain_id)
    if row["id"] == DEFAULT_DOMAIN_ID:
        raise exception.Forbidden(reason="The default domain cannot be deleted.")
    if row["enabled"]:
        raise exception.Forbidden(
            reason="Cannot delete a domain that is enabled, please disable it first."
        )
    for user in await user_get_all(conn, domain_id=domain_id):
        await user_delete(conn, user["id"])
    # Leaves first: a project with children is not deleted.
    top_down: list[Row] = []
    for top in await project_get_all(conn, domain_id=domain_id, parent_id=domain_id):
        top_down += [top, *await project_subtree(conn, top["id"])]
    for project in reversed(top_down):
        await project_delete(conn, project["id"])
    for group in await group_get_all(conn, domain_id=domain_id):
        await group_delete(conn, group["id"])
    await conn.execute(
        delete(assignments).where(
            assignments.c.target_id == domain_id, assignments.c.type.in_(DOMAIN_TYPES)
        )
    )
    await conn.execute(delete(domains).where(domains.c.id == domain_id))


# --- groups ------------------------------------------------------------------


async def group_create(
    conn: AsyncConnection,
    name: str,
    *,
    domain_id: str = DEFAULT_DOMAIN_ID,
    description: str | None = None,
) -> Row:
    """DBDuplicateEntry if the domain has a group of that name."""
    values = {"id": new_id(), "name": name, "domain_id": domain_id, "description": description}
    return await insert_row(conn, groups, values)


async def group_get(conn: AsyncConnection, group_id: str) -> Row:
    row = await fetch_one(conn, select(groups).where(groups.c.id == group_id))
    if row is None:
        raise exception.NotFound(reason=f"Could not find group: {group_id}.")
    return row


async def group_get_all(
    conn: AsyncConnection, *, name: str | None = None, domain_id: str | None = None
) -> list[Row]:
    return await fetch_all(conn, name_listing(groups, name=name, domain_id=domain_id))


async def group_update(conn: AsyncConnection, group_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(update(groups).where(groups.c.id == group_id).values(dict(values)))
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find group: {group_id}.")


async def group_delete(conn: AsyncConnection, group_id: str) -> None:
    """Delete the group, its memberships and its role assignments; its
    members' tokens go (their roles came partly from it)."""
    await group_get(conn, group_id)
    await revoke_members_tokens(conn, group_id)
    await conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
    await conn.execute(
        delete(assignments).where(
            assignments.c.actor_id == group_id, assignments.c.type.in_(GROUP_TYPES)
        )
    )
    await conn.execute(delete(groups).where(groups.c.id == group_id))


async def group_add_user(conn: AsyncConnection, group_id: str, user_id: str) -> bool:
    """False if the user was already a member."""
    stmt = select(group_members).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id
    )
    if await fetch_one(conn, stmt) is not None:
        return False
    await insert_row(conn, group_members, {"group_id": group_id, "user_id": user_id})
    return True


async def group_remove_user(conn: AsyncConnection, group_id: str, user_id: str) -> bool:
    result = await conn.execute(
        delete(group_members).where(
            group_members.c.group_id == group_id, group_members.c.user_id == user_id
        )
    )
    if not result.rowcount:
        return False
    # Its tokens' role snapshots may hold roles the group gave.
    await tokens_revoke_where(conn, tokens.c.user_id == user_id)
    return True


async def group_has_user(conn: AsyncConnection, group_id: str, user_id: str) -> bool:
    stmt = select(group_members.c.user_id).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id
    )
    return await fetch_one(conn, stmt) is not None


async def group_users(conn: AsyncConnection, group_id: str) -> list[Row]:
    member = select(group_members.c.user_id).where(group_members.c.group_id == group_id)
    return await fetch_all(conn, select(users).where(users.c.id.in_(member)).order_by(users.c.name))


async def groups_for_user(conn: AsyncConnection, user_id: str) -> list[Row]:
    member = select(group_members.c.group_id).where(group_members.c.user_id == user_id)
    stmt = select(groups).where(groups.c.id.in_(member)).order_by(groups.c.name)
    return await fetch_all(conn, stmt)


async def revoke_members_tokens(conn: AsyncConnection, group_id: str) -> None:
    member = select(group_members.c.user_id).where(group_members.c.group_id == group_id)
    await tokens_revoke_where(conn, tokens.c.user_id.in_(member))


# --- application credentials -------------------------------------------------


async def app_cred_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    """DBDuplicateEntry if the user has one of that name."""
    return await insert_row(conn, application_credentials, {"id": new_id(), **values})


async def app_cred_get(conn: AsyncConnection, cred_id: str) -> Row | None:
    stmt = select(application_credentials).where(application_credentials.c.id == cred_id)
    return await fetch_one(conn, stmt)


async def app_cred_get_by_name(conn: AsyncConnection, user_id: str, name: str) -> Row | None:
    stmt = select(application_credentials).where(
        application_credentials.c.user_id == user_id, application_credentials.c.name == name
    )
    return await fetch_one(conn, stmt)


async def app_cred_get_all(
    conn: AsyncConnection, user_id: str, *, name: str | None = None
) -> list[Row]:
    stmt = select(application_credentials).where(application_credentials.c.user_id == user_id)
    if name is not None:
        stmt = stmt.where(application_credentials.c.name == name)
    return await fetch_all(conn, stmt.order_by(application_credentials.c.name))


async def app_cred_delete(conn: AsyncConnection, cred_id: str) -> None:
    """Delete it and revoke the tokens issued for it."""
    result = await conn.execute(
        delete(application_credentials).where(application_credentials.c.id == cred_id)
    )
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find application credential: {cred_id}.")
    await tokens_revoke_where(conn, tokens.c.application_credential_id == cred_id)


# --- tokens ------------------------------------------------------------------


async def token_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    return await insert_row(conn, tokens, {"revoked": False, **values})


async def token_get(
    conn: AsyncConnection, token_hash: str, *, now: dt.datetime | None = None
) -> Row | None:
    """The live token (not revoked, not expired, its user enabled and, if
    scoped, its project or domain enabled) with that hash, or None.

    Every API request runs this, so on a prebuilt statement (building and
    cache-keying the three-way join each time cost more than running it)."""
    found = await conn.execute(_token_get_statement(), {"_hash": token_hash, "_now": now_or(now)})
    row = found.mappings().first()
    return dict(row) if row is not None else None


def _token_get_statement() -> Any:
    return _STATEMENTS.get(
        ("token_get",),
        lambda: (
            select(tokens)
            .select_from(
                tokens.join(users, users.c.id == tokens.c.user_id)
                .outerjoin(projects, projects.c.id == tokens.c.project_id)
                .outerjoin(domains, domains.c.id == tokens.c.domain_id)
            )
            .where(
                tokens.c.token_hash == bindparam("_hash"),
                tokens.c.revoked.is_(False),
                tokens.c.expires_at > bindparam("_now", type_=tokens.c.expires_at.type),
                users.c.enabled.is_(True),
                or_(tokens.c.project_id.is_(None), projects.c.enabled.is_(True)),
                or_(tokens.c.domain_id.is_(None), domains.c.enabled.is_(True)),
            )
        ),
    )


async def token_revoke(conn: AsyncConnection, token_hash: str) -> bool:
    result = await conn.execute(
        update(tokens)
        .where(tokens.c.token_hash == token_hash, tokens.c.revoked.is_(False))
        .values(revoked=True)
    )
    return bool(result.rowcount)


async def tokens_revoke_where(conn: AsyncConnection, *criteria: Any) -> int:
    result = await conn.execute(
        update(tokens).where(tokens.c.revoked.is_(False), *criteria).values(revoked=True)
    )
    return int(result.rowcount)


async def token_purge_expired(conn: AsyncConnection, *, now: dt.datetime | None = None) -> int:
    """Delete tokens that expired; returns how many."""
    result = await conn.execute(delete(tokens).where(tokens.c.expires_at <= now_or(now)))
    return int(result.rowcount)
