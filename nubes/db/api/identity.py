"""Domains, projects, users, groups, roles, role assignments, application
credentials and tokens (a Keystone v3 subset).

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
import itertools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row, now_or
from nubes.db.models import (
    DEFAULT_DOMAIN_ID,
    GLOBAL_ROLE_DOMAIN,
    application_credentials,
    assignments,
    credentials,
    domains,
    group_members,
    groups,
    project_tags,
    projects,
    role_inferences,
    roles,
    tokens,
    users,
)

#: The roles every cloud has, from most to least powerful. Each implies the
#: next (Keystone's default implied roles: admin > manager > member > reader),
#: as rows of ``role_inferences`` that migration 0016 writes, like Keystone's
#: bootstrap; :func:`bootstrap_roles` writes them for a cloud made otherwise.
DEFAULT_ROLES = ("admin", "manager", "member", "reader")
#: Keystone's ``[assignment] prohibited_implied_role`` default: no rule may
#: make a role imply admin (holding any other role would make one an admin).
PROHIBITED_IMPLIED_ROLES = frozenset({"admin"})
#: Keystone's ``[DEFAULT] max_project_tree_depth`` default: a project at the
#: top of its domain is at depth 1.
MAX_PROJECT_TREE_DEPTH = 5
#: The role other services' users hold (a network or volume service sending
#: server events); Keystone's bootstrap creates it beside the defaults. It
#: implies none of them and none implies it.
SERVICE_ROLE = "service"
#: Every role a new cloud starts with.
BOOTSTRAP_ROLES = (*DEFAULT_ROLES, SERVICE_ROLE)


def new_id() -> str:
    return uuid.uuid4().hex


def _listing(table: Any, **filters: Any) -> Any:
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
    stmt = _listing(projects, name=name, domain_id=domain_id, enabled=enabled)
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
        await _tokens_revoke_where(conn, tokens.c.project_id == project_id)


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
    await _tokens_revoke_where(conn, tokens.c.project_id == project_id)


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
    return await fetch_all(conn, _listing(users, name=name, domain_id=domain_id, enabled=enabled))


async def user_update(conn: AsyncConnection, user_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(update(users).where(users.c.id == user_id).values(dict(values)))
    if not result.rowcount:
        raise exception.NotFound(reason=f"user {user_id} does not exist")
    # A new password, like disabling, ends every session the user has (Keystone does so too).
    if values.get("enabled") is False or "password_hash" in values:
        await _tokens_revoke_where(conn, tokens.c.user_id == user_id)


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
    await _tokens_revoke_where(conn, tokens.c.user_id == user_id)


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
    return await fetch_all(conn, _listing(domains, name=name, enabled=enabled))


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
        await _tokens_revoke_where(conn, in_domain)


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
    return await fetch_all(conn, _listing(groups, name=name, domain_id=domain_id))


async def group_update(conn: AsyncConnection, group_id: str, values: Mapping[str, Any]) -> None:
    result = await conn.execute(update(groups).where(groups.c.id == group_id).values(dict(values)))
    if not result.rowcount:
        raise exception.NotFound(reason=f"Could not find group: {group_id}.")


async def group_delete(conn: AsyncConnection, group_id: str) -> None:
    """Delete the group, its memberships and its role assignments; its
    members' tokens go (their roles came partly from it)."""
    await group_get(conn, group_id)
    await _revoke_members_tokens(conn, group_id)
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
    await _tokens_revoke_where(conn, tokens.c.user_id == user_id)
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


async def _revoke_members_tokens(conn: AsyncConnection, group_id: str) -> None:
    member = select(group_members.c.user_id).where(group_members.c.group_id == group_id)
    await _tokens_revoke_where(conn, tokens.c.user_id.in_(member))


# --- roles -------------------------------------------------------------------


async def role_ensure(conn: AsyncConnection, name: str) -> Row:
    """The global role called ``name``, created when missing."""
    row = await _global_role(conn, name)
    if row is not None:
        return row
    return await insert_row(conn, roles, {"id": new_id(), "name": name})


async def bootstrap_roles(conn: AsyncConnection) -> None:
    """Every bootstrap role, and the default chain's rules where both of a
    rule's roles were missing from it (a rule an operator deleted between two
    roles that stayed is left deleted, as Keystone's bootstrap leaves it)."""
    made = set()
    for name in BOOTSTRAP_ROLES:
        if await _global_role(conn, name) is None:
            made.add(name)
        await role_ensure(conn, name)
    for prior, implied in itertools.pairwise(DEFAULT_ROLES):
        if prior in made or implied in made:
            p, i = await role_get_by_name(conn, prior), await role_get_by_name(conn, implied)
            if await inference_get(conn, p["id"], i["id"]) is None:
                await insert_row(
                    conn, role_inferences, {"prior_role_id": p["id"], "implied_role_id": i["id"]}
                )


async def _global_role(conn: AsyncConnection, name: str) -> Row | None:
    stmt = select(roles).where(roles.c.name == name, roles.c.domain_id == GLOBAL_ROLE_DOMAIN)
    return await fetch_one(conn, stmt)


async def role_create(
    conn: AsyncConnection,
    name: str,
    *,
    description: str | None = None,
    domain_id: str | None = None,
) -> Row:
    """A global role, or one specific to ``domain_id``; DBDuplicateEntry if
    the name is taken there."""
    values = {
        "id": new_id(),
        "name": name,
        "description": description,
        "domain_id": domain_id or GLOBAL_ROLE_DOMAIN,
    }
    return await insert_row(conn, roles, values)


async def role_get(conn: AsyncConnection, role_id: str) -> Row:
    row = await fetch_one(conn, select(roles).where(roles.c.id == role_id))
    if row is None:
        raise exception.NotFound(reason=f"Could not find role: {role_id}.")
    return row


async def role_get_all(
    conn: AsyncConnection, *, name: str | None = None, domain_id: str | None = None
) -> list[Row]:
    """The global roles, or (``domain_id``) that domain's roles: Keystone's listing."""
    return await fetch_all(
        conn, _listing(roles, name=name, domain_id=domain_id or GLOBAL_ROLE_DOMAIN)
    )


async def role_get_by_name(conn: AsyncConnection, name: str) -> Row:
    """The global role called ``name``."""
    row = await _global_role(conn, name)
    if row is None:
        raise exception.NotFound(reason=f"role {name} does not exist")
    return row


# --- implied roles -----------------------------------------------------------


async def inference_create(conn: AsyncConnection, prior_id: str, implied_id: str) -> None:
    """Add the rule "``prior_id`` implies ``implied_id``", with Keystone's
    refusals: a role nothing may imply (403), a global role implying a
    domain-specific one (403, it would put a domain's role in tokens), a
    rule closing a cycle (400) and one that exists already (409)."""
    prior, implied = await role_get(conn, prior_id), await role_get(conn, implied_id)
    if implied["name"] in PROHIBITED_IMPLIED_ROLES and implied["domain_id"] == GLOBAL_ROLE_DOMAIN:
        raise exception.Forbidden(reason=f"{implied_id} cannot be an implied roles.")
    if prior["domain_id"] == GLOBAL_ROLE_DOMAIN and implied["domain_id"] != GLOBAL_ROLE_DOMAIN:
        raise exception.Forbidden(reason="Global role cannot imply a domain-specific role")
    if prior_id in await _implied_closure(conn, [implied_id]):
        raise exception.ValidationError(
            field="implied_role",
            reason=f"role {implied_id} implies {prior_id} already: the rule would make a cycle",
        )
    if await inference_get(conn, prior_id, implied_id) is not None:
        raise exception.Conflict(reason=f"Role {prior_id} already implies role {implied_id}.")
    await insert_row(
        conn, role_inferences, {"prior_role_id": prior_id, "implied_role_id": implied_id}
    )


async def inference_get(conn: AsyncConnection, prior_id: str, implied_id: str) -> Row | None:
    stmt = select(role_inferences).where(
        role_inferences.c.prior_role_id == prior_id,
        role_inferences.c.implied_role_id == implied_id,
    )
    return await fetch_one(conn, stmt)


async def inference_delete(conn: AsyncConnection, prior_id: str, implied_id: str) -> bool:
    """Drop the rule; the tokens whose role snapshot may hold what it implied
    are revoked (every holder of the prior role, as a role's removal does)."""
    result = await conn.execute(
        delete(role_inferences).where(
            role_inferences.c.prior_role_id == prior_id,
            role_inferences.c.implied_role_id == implied_id,
        )
    )
    if not result.rowcount:
        return False
    await _revoke_holders_tokens(conn, prior_id)
    return True


async def inferences(conn: AsyncConnection, prior_id: str | None = None) -> list[Row]:
    """The rules (of ``prior_id``, or all), by prior role then implied role."""
    stmt = select(role_inferences)
    if prior_id is not None:
        stmt = stmt.where(role_inferences.c.prior_role_id == prior_id)
    order = (role_inferences.c.prior_role_id, role_inferences.c.implied_role_id)
    return await fetch_all(conn, stmt.order_by(*order))


async def _implied_closure(conn: AsyncConnection, role_ids: Iterable[str]) -> list[str]:
    """``role_ids`` and every role they imply, directly or through a chain,
    in the order found (breadth first)."""
    out = list(dict.fromkeys(role_ids))
    seen, frontier = set(out), out
    while frontier:
        stmt = select(role_inferences.c.implied_role_id).where(
            role_inferences.c.prior_role_id.in_(frontier)
        )
        found = [r["implied_role_id"] for r in await fetch_all(conn, stmt)]
        frontier = [r for r in dict.fromkeys(found) if r not in seen]
        seen.update(frontier)
        out += frontier
    return out


async def effective_roles(conn: AsyncConnection, role_ids: Iterable[str]) -> list[Row]:
    """The roles holding ``role_ids`` gives: the held roles and all they imply,
    without domain-specific roles (Keystone never puts those in a token or an
    effective listing; they count only for the global roles they imply).

    The one expansion of implied roles: a token's roles and an effective
    ``role_assignments`` listing both come from here. Held roles come first,
    then the implied ones in the order the rules lead to them.
    """
    closure = await _implied_closure(conn, role_ids)
    if not closure:
        return []
    rows = await fetch_all(
        conn,
        select(roles).where(roles.c.id.in_(closure), roles.c.domain_id == GLOBAL_ROLE_DOMAIN),
    )
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in closure if i in by_id]


async def role_update(conn: AsyncConnection, role_id: str, values: Mapping[str, Any]) -> None:
    row = await role_get(conn, role_id)
    if _is_default(row) and values.get("name", row["name"]) != row["name"]:
        raise exception.Forbidden(reason=f"Role {row['name']} is immutable: policy depends on it.")
    await conn.execute(update(roles).where(roles.c.id == role_id).values(dict(values)))


async def role_delete(conn: AsyncConnection, role_id: str) -> None:
    """Delete a role and every assignment of it; the tokens holding it go.

    The default roles are immutable (as Keystone's bootstrap makes them):
    the policy of every service is written in their names.
    """
    row = await role_get(conn, role_id)
    if _is_default(row):
        raise exception.Forbidden(reason=f"Role {row['name']} is immutable: policy depends on it.")
    await _revoke_holders_tokens(conn, role_id)
    # Its rules go with it (whoever held a role implying it held it too).
    for rule in await fetch_all(
        conn, select(role_inferences).where(role_inferences.c.implied_role_id == role_id)
    ):
        await _revoke_holders_tokens(conn, rule["prior_role_id"])
    await conn.execute(
        delete(role_inferences).where(
            or_(
                role_inferences.c.prior_role_id == role_id,
                role_inferences.c.implied_role_id == role_id,
            )
        )
    )
    await conn.execute(delete(assignments).where(assignments.c.role_id == role_id))
    await conn.execute(delete(roles).where(roles.c.id == role_id))


def _is_default(row: Row) -> bool:
    """One of the default roles (global: a domain may have its own "admin")."""
    return row["name"] in DEFAULT_ROLES and row["domain_id"] == GLOBAL_ROLE_DOMAIN


async def _revoke_holders_tokens(conn: AsyncConnection, role_id: str) -> None:
    """Revoke the tokens of every user holding ``role_id`` (own or a group's)."""
    holders = await fetch_all(
        conn,
        select(assignments.c.type, assignments.c.actor_id).where(assignments.c.role_id == role_id),
    )
    for holder in holders:
        if holder["type"] in USER_TYPES:
            await _tokens_revoke_where(conn, tokens.c.user_id == holder["actor_id"])
        else:
            await _revoke_members_tokens(conn, holder["actor_id"])


# --- role assignments --------------------------------------------------------

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


def assignment_type(actor: str, target: str) -> str:
    """``("user"|"group", "project"|"domain"|"system")`` -> the stored type name."""
    kinds = {"project": "Project", "domain": "Domain", "system": "System"}
    return {"user": "User", "group": "Group"}[actor] + kinds[target]


async def grant(
    conn: AsyncConnection, type_: str, actor_id: str, target_id: str, role_id: str
) -> bool:
    """Give the role; False if it was already given."""
    key = {"type": type_, "actor_id": actor_id, "target_id": target_id, "role_id": role_id}
    if await grant_exists(conn, type_, actor_id, target_id, role_id):
        return False
    await insert_row(conn, assignments, key)
    return True


async def grant_exists(
    conn: AsyncConnection, type_: str, actor_id: str, target_id: str, role_id: str
) -> bool:
    stmt = select(assignments.c.role_id).where(
        assignments.c.type == type_,
        assignments.c.actor_id == actor_id,
        assignments.c.target_id == target_id,
        assignments.c.role_id == role_id,
    )
    return await fetch_one(conn, stmt) is not None


async def revoke_grant(
    conn: AsyncConnection, type_: str, actor_id: str, target_id: str, role_id: str
) -> bool:
    """Take the role away; the tokens whose role snapshot may hold it are revoked."""
    result = await conn.execute(
        delete(assignments).where(
            assignments.c.type == type_,
            assignments.c.actor_id == actor_id,
            assignments.c.target_id == target_id,
            assignments.c.role_id == role_id,
        )
    )
    if not result.rowcount:
        return False
    if type_ == USER_PROJECT:
        await _tokens_revoke_where(
            conn, tokens.c.user_id == actor_id, tokens.c.project_id == target_id
        )
    elif type_ in (USER_DOMAIN, USER_SYSTEM):
        await _tokens_revoke_where(conn, tokens.c.user_id == actor_id)
    else:
        await _revoke_members_tokens(conn, actor_id)
    return True


async def grants_on(conn: AsyncConnection, type_: str, actor_id: str, target_id: str) -> list[Row]:
    """The roles directly given to the actor on the target."""
    stmt = (
        select(roles)
        .join(assignments, assignments.c.role_id == roles.c.id)
        .where(
            assignments.c.type == type_,
            assignments.c.actor_id == actor_id,
            assignments.c.target_id == target_id,
        )
        .order_by(roles.c.name)
    )
    return await fetch_all(conn, stmt)


async def assignment_list(
    conn: AsyncConnection,
    *,
    types: Iterable[str] | None = None,
    actor_ids: Iterable[str] | None = None,
    target_id: str | None = None,
    role_id: str | None = None,
) -> list[Row]:
    """Stored assignments matching every given filter."""
    stmt = select(assignments)
    if types is not None:
        stmt = stmt.where(assignments.c.type.in_(list(types)))
    if actor_ids is not None:
        stmt = stmt.where(assignments.c.actor_id.in_(list(actor_ids)))
    if target_id is not None:
        stmt = stmt.where(assignments.c.target_id == target_id)
    if role_id is not None:
        stmt = stmt.where(assignments.c.role_id == role_id)
    order = (assignments.c.type, assignments.c.actor_id, assignments.c.target_id)
    return await fetch_all(conn, stmt.order_by(*order))


async def assignment_add(conn: AsyncConnection, user_id: str, project_id: str, role: str) -> bool:
    """Give ``user_id`` the role (by name, created when missing) on the project;
    False if it already had it."""
    role_row = await role_ensure(conn, role)
    return await grant(conn, USER_PROJECT, user_id, project_id, role_row["id"])


async def assignment_remove(
    conn: AsyncConnection, user_id: str, project_id: str, role: str
) -> bool:
    role_row = await role_get_by_name(conn, role)
    return await revoke_grant(conn, USER_PROJECT, user_id, project_id, role_row["id"])


def _user_on(user_id: str, kind: str, target_id: str | None = None) -> Any:
    """The assignments that give a user roles on a ``kind`` ("project",
    "domain", "system") target (any, when ``target_id`` is None): its own
    and its groups'."""
    in_groups = select(group_members.c.group_id).where(group_members.c.user_id == user_id)
    own, via_group = assignment_type("user", kind), assignment_type("group", kind)
    held = or_(
        and_(assignments.c.type == own, assignments.c.actor_id == user_id),
        and_(assignments.c.type == via_group, assignments.c.actor_id.in_(in_groups)),
    )
    return held if target_id is None else and_(assignments.c.target_id == target_id, held)


async def _roles_held(conn: AsyncConnection, user_id: str, kind: str, target_id: str) -> list[Row]:
    held = select(assignments.c.role_id).where(_user_on(user_id, kind, target_id))
    return await fetch_all(conn, select(roles).where(roles.c.id.in_(held)).order_by(roles.c.name))


async def roles_for(conn: AsyncConnection, user_id: str, project_id: str) -> list[Row]:
    """The roles the user holds on the project, directly or through its groups
    (not the implied ones)."""
    return await _roles_held(conn, user_id, "project", project_id)


async def roles_on_domain(conn: AsyncConnection, user_id: str, domain_id: str) -> list[Row]:
    """The roles the user holds on the domain, directly or through its groups
    (not the implied ones): what a domain-scoped token carries."""
    return await _roles_held(conn, user_id, "domain", domain_id)


async def roles_on_system(conn: AsyncConnection, user_id: str) -> list[Row]:
    """The roles the user holds on the system: what a system-scoped token carries."""
    return await _roles_held(conn, user_id, "system", SYSTEM)


async def domains_for_user(conn: AsyncConnection, user_id: str) -> list[Row]:
    """The domains the user holds a role on, directly or through its groups
    (``GET /v3/auth/domains``: what it may scope a token to)."""
    on = select(assignments.c.target_id).where(_user_on(user_id, "domain"))
    stmt = select(domains).where(domains.c.id.in_(on)).order_by(domains.c.name)
    return await fetch_all(conn, stmt)


async def projects_for_user(conn: AsyncConnection, user_id: str) -> list[Row]:
    """The projects the user holds a role on, directly or through its groups."""
    on = select(assignments.c.target_id).where(_user_on(user_id, "project"))
    stmt = select(projects).where(projects.c.id.in_(on)).order_by(projects.c.name)
    return await fetch_all(conn, stmt)


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
    await _tokens_revoke_where(conn, tokens.c.application_credential_id == cred_id)


# --- tokens ------------------------------------------------------------------


async def token_create(conn: AsyncConnection, values: Mapping[str, Any]) -> Row:
    return await insert_row(conn, tokens, {"revoked": False, **values})


async def token_get(
    conn: AsyncConnection, token_hash: str, *, now: dt.datetime | None = None
) -> Row | None:
    """The live token (not revoked, not expired, its user enabled and, if
    scoped, its project or domain enabled) with that hash, or None."""
    stmt = (
        select(tokens)
        .select_from(
            tokens.join(users, users.c.id == tokens.c.user_id)
            .outerjoin(projects, projects.c.id == tokens.c.project_id)
            .outerjoin(domains, domains.c.id == tokens.c.domain_id)
        )
        .where(
            tokens.c.token_hash == token_hash,
            tokens.c.revoked.is_(False),
            tokens.c.expires_at > now_or(now),
            users.c.enabled.is_(True),
            or_(tokens.c.project_id.is_(None), projects.c.enabled.is_(True)),
            or_(tokens.c.domain_id.is_(None), domains.c.enabled.is_(True)),
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
