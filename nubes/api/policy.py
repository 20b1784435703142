"""Who may do what: Nova's default policy, reduced to three rules.

``ADMIN``: the admin role. ``PROJECT_READER``: any role on the target's
project (reader, member, manager, admin), or admin. ``PROJECT_MEMBER``: the
member (or manager) role on the target's project, or admin. Readers can
therefore only read; admin-only APIs are refused to everyone else with 403.
"""

from __future__ import annotations

import enum

from nubes import exception
from nubes.context import RequestContext

READ_ROLES = frozenset({"reader", "member", "manager", "admin"})
WRITE_ROLES = frozenset({"member", "manager", "admin"})


class Rule(enum.Enum):
    ADMIN = "admin"
    PROJECT_READER = "project_reader"
    PROJECT_MEMBER = "project_member"
    ANY = "any"
    #: Another service's user (Keystone's ``service`` role), or an administrator.
    SERVICE = "service"


def allowed(ctxt: RequestContext, rule: Rule, project_id: str | None = None) -> bool:
    roles = set(ctxt.roles)
    if "admin" in roles:
        return True
    if rule is Rule.ADMIN:
        return False
    if rule is Rule.ANY:
        return True
    if rule is Rule.SERVICE:
        return "service" in roles
    target = project_id if project_id is not None else ctxt.project_id
    if ctxt.project_id is None or target != ctxt.project_id:
        return False
    wanted = READ_ROLES if rule is Rule.PROJECT_READER else WRITE_ROLES
    return bool(roles & wanted)


def authorize(ctxt: RequestContext, action: str, rule: Rule, project_id: str | None = None) -> None:
    """Raise 403 naming ``action`` (Nova's policy name) unless ``rule`` allows it."""
    if not allowed(ctxt, rule, project_id):
        raise exception.PolicyNotAuthorized(action=action)
