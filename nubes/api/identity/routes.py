"""HTTP routes of the identity service (mounted at ``/identity``)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nubes import exception
from nubes.api import policy
from nubes.api.identity import (
    app_credentials,
    assignments,
    catalog,
    credentials,
    directory,
    limits,
    tokens,
)
from nubes.api.identity.common import collection_links, domain_view, project_view
from nubes.api.middleware import api_state, request_context, service_app
from nubes.api.state import ApiState
from nubes.api.validation import json_body, validate
from nubes.db.api import identity
from nubes.db.api import roles as roles_db

VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]

_REF: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 255},
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
    },
}
AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "auth": {
            "type": "object",
            "properties": {
                "identity": {
                    "type": "object",
                    "properties": {
                        "methods": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "password": {
                            "type": "object",
                            "properties": {
                                "user": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": "string", "maxLength": 255},
                                        "name": {"type": "string", "maxLength": 255},
                                        "password": {"type": "string", "maxLength": 4096},
                                        "domain": _REF,
                                    },
                                    "required": ["password"],
                                }
                            },
                            "required": ["user"],
                        },
                        "token": {
                            "type": "object",
                            "properties": {"id": {"type": "string", "maxLength": 1024}},
                            "required": ["id"],
                        },
                    },
                    "required": ["methods"],
                },
                "scope": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "project": {
                                    "type": "object",
                                    "properties": {**_REF["properties"], "domain": _REF},
                                },
                                "domain": _REF,
                                "system": {"type": "object"},
                            },
                        },
                    ]
                },
            },
            "required": ["identity"],
        }
    },
    "required": ["auth"],
}


_state = api_state
_ctx = request_context


def _base(request: Request) -> str:
    return _state(request).public_endpoint + "/identity"


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": VERSION_ID,
        "status": "stable",
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": _base(request) + "/v3/"}],
        "media-types": MEDIA_TYPES,
    }


async def versions(request: Request) -> Response:
    return JSONResponse({"versions": {"values": [_version(request)]}}, status_code=300)


async def version_v3(request: Request) -> Response:
    return JSONResponse({"version": _version(request)})


async def issue_token(request: Request) -> Response:
    body = await json_body(request)
    validate(body, AUTH_SCHEMA)
    token, token_body = await tokens.authenticate(_state(request), body["auth"])
    return JSONResponse(token_body, status_code=201, headers={"X-Subject-Token": token})


def _subject(request: Request) -> str:
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise exception.ValidationError(field="X-Subject-Token", reason="header is missing")
    return subject


async def _may_see_token(request: Request, subject: str) -> None:
    """Anyone may look at or revoke a token of its own (Keystone's
    ``token_subject`` rule: the subject token's user is the caller); admins any."""
    ctxt = _ctx(request)
    if subject == request.headers.get("x-auth-token") or policy.allowed(ctxt, policy.Rule.ADMIN):
        return
    try:
        row = await tokens.validate(_state(request), subject)
    except exception.NotAuthenticated:
        # Keystone looks the token up before its policy: a dead one is a 404.
        raise exception.NotFound(reason="Could not find token.") from None
    if row["user_id"] != ctxt.user_id:
        policy.authorize(ctxt, "identity:validate_token", policy.Rule.ADMIN)


async def show_token(request: Request) -> Response:
    subject = _subject(request)
    await _may_see_token(request, subject)
    body = await tokens.token_body(_state(request), subject)
    if request.method == "HEAD":
        return Response(status_code=200, headers={"X-Subject-Token": subject})
    return JSONResponse(body, headers={"X-Subject-Token": subject})


async def revoke_token(request: Request) -> Response:
    subject = _subject(request)
    await _may_see_token(request, subject)
    await tokens.revoke(_state(request), subject)
    return Response(status_code=204)


async def auth_catalog(request: Request) -> Response:
    return JSONResponse({"catalog": await catalog.service_catalog(_state(request))})


async def auth_projects(request: Request) -> Response:
    ctxt = _ctx(request)
    async with _state(request).db.reader() as conn:
        rows = await identity.with_tags(
            conn, await roles_db.projects_for_user(conn, ctxt.user_id or "")
        )
    return JSONResponse(
        {"projects": [project_view(request, r) for r in rows], "links": collection_links(request)}
    )


async def auth_domains(request: Request) -> Response:
    """The domains the caller may scope a token to (a role on them, its own or a group's)."""
    ctxt = _ctx(request)
    async with _state(request).db.reader() as conn:
        rows = await roles_db.domains_for_user(conn, ctxt.user_id or "")
    return JSONResponse(
        {"domains": [domain_view(request, r) for r in rows], "links": collection_links(request)}
    )


#: Paths (relative to /identity) that need no token; issuing one is public
#: only for POST, every other token call needs a token.
PUBLIC = ("", "/", "/v3", "/v3/", "/v3/auth/tokens:POST")


def build_app(state: ApiState) -> Starlette:
    routes = [
        Route("/", versions, methods=["GET"]),
        Route("/v3", version_v3, methods=["GET"]),
        Route("/v3/", version_v3, methods=["GET"]),
        Route("/v3/auth/tokens", issue_token, methods=["POST"]),
        Route("/v3/auth/tokens", show_token, methods=["GET", "HEAD"]),
        Route("/v3/auth/tokens", revoke_token, methods=["DELETE"]),
        Route("/v3/auth/catalog", auth_catalog, methods=["GET"]),
        Route("/v3/auth/projects", auth_projects, methods=["GET"]),
        Route("/v3/auth/domains", auth_domains, methods=["GET"]),
        *directory.ROUTES,
        *assignments.ROUTES,
        *app_credentials.ROUTES,
        *credentials.ROUTES,
        *limits.ROUTES,
        *catalog.ROUTES,
    ]
    return service_app(state, routes, service="identity", public=PUBLIC)
