"""What the identity routes share: the base URL, the views, filters, policy names."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from nubes import exception
from nubes.api import policy
from nubes.api.middleware import api_state, request_context
from nubes.context import RequestContext
from nubes.db.api.identity import DEFAULT_DOMAIN_ID

_RESERVED_USER = ("id", "name", "password_hash", "default_project_id", "enabled", "domain_id")


def base(request: Request) -> str:
    return api_state(request).public_endpoint + "/identity"


def link(request: Request, path: str) -> dict[str, str]:
    return {"self": f"{base(request)}/v3/{path}"}


def collection_links(request: Request) -> dict[str, Any]:
    return {"self": str(request.url), "previous": None, "next": None}


def admin(request: Request, action: str) -> RequestContext:
    """The caller's context; 403 unless an admin (Keystone's default policy
    for managing the directory: no domain-scoped personas here)."""
    ctxt = request_context(request)
    policy.authorize(ctxt, f"identity:{action}", policy.Rule.ADMIN)
    return ctxt


def manager(request: Request, action: str) -> RequestContext:
    """The caller's context; 403 unless an admin or a domain manager. A
    manager's target is checked with :func:`in_domain` once it is read, so
    an unknown target is a 404 to both (Keystone reads before it enforces)."""
    ctxt = request_context(request)
    policy.authorize(ctxt, f"identity:{action}", policy.Rule.DOMAIN_MANAGER)
    return ctxt


def in_domain(ctxt: RequestContext, action: str, *domain_ids: str) -> None:
    """403 unless the caller is an admin or manages every domain given."""
    for domain_id in domain_ids:
        policy.authorize(
            ctxt, f"identity:{action}", policy.Rule.DOMAIN_MANAGER, domain_id=domain_id
        )


def listing_domain(ctxt: RequestContext, action: str, asked: str | None) -> str | None:
    """The ``domain_id`` filter a directory listing runs with: what an admin
    asked for; a domain manager's own domain (403 if it asked for another)."""
    if policy.allowed(ctxt, policy.Rule.ADMIN):
        return asked
    in_domain(ctxt, action, asked or ctxt.domain_id or "")
    return ctxt.domain_id


def new_in_domain(ctxt: RequestContext, action: str, asked: str | None) -> str:
    """The domain a new user, project or group goes to: the one asked for,
    else the token's domain (Keystone's rule for domain-scoped tokens), else
    ``default``; 403 unless the caller may manage it."""
    domain_id = asked or ctxt.domain_id or DEFAULT_DOMAIN_ID
    in_domain(ctxt, action, domain_id)
    return domain_id


def self_or_admin(request: Request, user_id: str, action: str) -> RequestContext:
    ctxt = request_context(request)
    if ctxt.user_id != user_id:
        policy.authorize(ctxt, f"identity:{action}", policy.Rule.ADMIN)
    return ctxt


def self_or_manager(request: Request, user: dict[str, Any], action: str) -> RequestContext:
    """The user itself, its domain's manager, or an admin."""
    ctxt = request_context(request)
    if ctxt.user_id != user["id"]:
        in_domain(ctxt, action, user["domain_id"])
    return ctxt


def flag(request: Request, name: str) -> bool | None:
    """A boolean query filter (``enabled=true``); None when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("", "1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise exception.ValidationError(field=name, reason=f"'{raw}' is not a boolean")


def domain_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"] or "",
        "enabled": row["enabled"],
        "tags": [],
        "options": {},
        "links": link(request, f"domains/{row['id']}"),
    }


def project_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"] or "",
        "enabled": row["enabled"],
        "domain_id": row["domain_id"],
        # Keystone shows the domain as the parent of a project at its top.
        "parent_id": row.get("parent_id") or row["domain_id"],
        "is_domain": False,
        "tags": row.get("tags", []),
        "options": {},
        "links": link(request, f"projects/{row['id']}"),
    }


def user_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    # Keystone shows a user's free-form attributes (email, description, ...) at the top.
    extra = {k: v for k, v in (row.get("extra") or {}).items() if k not in _RESERVED_USER}
    return {
        **extra,
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "enabled": row["enabled"],
        "default_project_id": row["default_project_id"],
        "password_expires_at": None,
        "options": {},
        "links": link(request, f"users/{row['id']}"),
    }


def group_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "domain_id": row["domain_id"],
        "description": row["description"] or "",
        "links": link(request, f"groups/{row['id']}"),
    }


def role_view(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        # A global role's stored domain is '' (nubes.db.models.GLOBAL_ROLE_DOMAIN).
        "domain_id": row["domain_id"] or None,
        "description": row.get("description"),
        "options": {},
        "links": link(request, f"roles/{row['id']}"),
    }
