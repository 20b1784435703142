"""What the identity routes share: the base URL, the views, filters, policy names."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from nubes import exception
from nubes.api import policy
from nubes.api.middleware import api_state, request_context
from nubes.context import RequestContext

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


def self_or_admin(request: Request, user_id: str, action: str) -> RequestContext:
    ctxt = request_context(request)
    if ctxt.user_id != user_id:
        policy.authorize(ctxt, f"identity:{action}", policy.Rule.ADMIN)
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
        "parent_id": row["domain_id"],
        "is_domain": False,
        "tags": [],
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
        "domain_id": None,
        "description": row.get("description"),
        "options": {},
        "links": link(request, f"roles/{row['id']}"),
    }
