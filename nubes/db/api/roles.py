"""Roles, implied roles and role assignments (Keystone v3's assignment and
role APIs).

A role is global or specific to one domain; rules of ``role_inferences``
make a role imply others (:func:`effective_roles` expands them, once, for
tokens and effective listings). An assignment gives a user or a group a
role on a project, a domain or the system. Every change that takes a right
away revokes the tokens it concerns in the same transaction
(:func:`nubes.db.api.identity.tokens_revoke_where`), as Keystone does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception
from nubes.db.api import identity
from nubes.db.api._common import Row, fetch_all, fetch_one, insert_row
from nubes.db.api.identity import (
    SYSTEM,
    USER_DOMAIN,
    USER_PROJECT,
    USER_SYSTEM,
    USER_TYPES,
)
from nubes.db.models import (
    GLOBAL_ROLE_DOMAIN,
    assignments,
    domains,
    group_members,
    projects,
    role_inferences,
    roles,
    tokens,
)

#: The roles every cloud has, from most to least powerful. Each implies the
#: next (Keystone's default implied roles: admin > manager > member > reader),
#: as rows of ``role_inferences`` that migration 0016 writes, like Keystone's
#: bootstrap; :func:`bootstrap_roles` writes them for a cloud made otherwise.
DEFAULT_ROLES = ("admin", "manager", "member", "reader")
#: Keystone's ``[assignment] prohibited_implied_role`` default: no rule may
#: make a role imply admin (holding any other role would make one an admin).
PROHIBITED_IMPLIED_ROLES = frozenset({"admin"})
#: The role other services' users hold (a network or volume service sending
#: server events); Keystone's bootstrap creates it beside the defaults. It
#: implies none of them and none implies it.
SERVICE_ROLE = "service"
#: Every role a new cloud starts with.
BOOTSTRAP_ROLES = (*DEFAULT_ROLES, SERVICE_ROLE)


# --- roles -------------------------------------------------------------------


async def role_ensure(conn: AsyncConnection, name: str) -> Row:
    """The global role called ``name``, created when missing."""
    row = await _global_role(conn, name)
    if row is not None:
        return row
    return await insert_row(conn, roles, {"id": identity.new_id(), "name": name})


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
        "id": identity.new_id(),
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
        conn, identity.name_listing(roles, name=name, domain_id=domain_id or GLOBAL_ROLE_DOMAIN)
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
            await identity.tokens_revoke_where(conn, tokens.c.user_id == holder["actor_id"])
        else:
            await identity.revoke_members_tokens(conn, holder["actor_id"])


# --- role assignments --------------------------------------------------------


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
        await identity.tokens_revoke_where(
            conn, tokens.c.user_id == actor_id, tokens.c.project_id == target_id
        )
    elif type_ in (USER_DOMAIN, USER_SYSTEM):
        await identity.tokens_revoke_where(conn, tokens.c.user_id == actor_id)
    else:
        await identity.revoke_members_tokens(conn, actor_id)
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
