"""Who may do what: Nova's and Keystone's default policies, reduced to a few rules.

``ADMIN``: the admin role. ``PROJECT_READER``: any role on the target's
project (reader, member, manager, admin), or admin. ``PROJECT_MEMBER``: the
member (or manager) role on the target's project, or admin. Readers can
therefore only read; admin-only APIs are refused to everyone else with 403.

``DOMAIN_MANAGER`` is Keystone's domain manager persona (2024.2 defaults):
the manager role on a domain-scoped token for the target's domain, or admin.
It manages the users, projects, groups and grants of that domain only, and
may give or take only the roles in :data:`MANAGER_ASSIGNABLE_ROLES` (never
admin, so a manager cannot raise anyone, itself included, above manager).
A manager role on a *project* gives no identity rights (as in Keystone).
"""

from __future__ import annotations

import enum

from nubes import exception
from nubes.context import RequestContext

READ_ROLES = frozenset({"reader", "member", "manager", "admin"})
WRITE_ROLES = frozenset({"member", "manager", "admin"})
#: The roles a domain manager may grant or revoke (Keystone's
#: ``domain_managed_target_role``).
MANAGER_ASSIGNABLE_ROLES = frozenset({"manager", "member", "reader"})


class Rule(enum.Enum):
    ADMIN = "admin"
    PROJECT_READER = "project_reader"
    PROJECT_MEMBER = "project_member"
    ANY = "any"
    #: Another service's user (Keystone's ``service`` role), or an administrator.
    SERVICE = "service"
    #: The manager role on a domain-scoped token for the target domain, or an administrator.
    DOMAIN_MANAGER = "domain_manager"


def allowed(
    ctxt: RequestContext,
    rule: Rule,
    project_id: str | None = None,
    *,
    domain_id: str | None = None,
) -> bool:
    """Does ``rule`` let ``ctxt`` act on its target: ``project_id`` for the
    project rules (the token's project when None), ``domain_id`` for
    ``DOMAIN_MANAGER`` (None: any domain the caller manages, the question
    asked before the target is read)."""
    roles = set(ctxt.roles)
    if "admin" in roles:
        return True
    if rule is Rule.ADMIN:
        return False
    if rule is Rule.ANY:
        return True
    if rule is Rule.SERVICE:
        return "service" in roles
    if rule is Rule.DOMAIN_MANAGER:
        if ctxt.domain_id is None or "manager" not in roles:
            return False
        return domain_id is None or domain_id == ctxt.domain_id
    target = project_id if project_id is not None else ctxt.project_id
    if ctxt.project_id is None or target != ctxt.project_id:
        return False
    wanted = READ_ROLES if rule is Rule.PROJECT_READER else WRITE_ROLES
    return bool(roles & wanted)


def authorize(
    ctxt: RequestContext,
    action: str,
    rule: Rule,
    project_id: str | None = None,
    *,
    domain_id: str | None = None,
) -> None:
    """Raise 403 naming ``action`` (Nova's policy name) unless ``rule`` allows it."""
    if not allowed(ctxt, rule, project_id, domain_id=domain_id):
        raise exception.PolicyNotAuthorized(action=action)
