"""Sharing an image with other projects (Glance's image members).

The owner of a ``shared`` image adds a project as a member (pending); the
member accepts or rejects it; an accepted image is listed for the member,
and a member may use the image by id whatever its answer, as in Glance.
Only the owner adds or removes members, only the member answers.
"""

from __future__ import annotations

from typing import Any

from nubes import exception
from nubes.api import images, policy
from nubes.api.views import iso_z
from nubes.context import RequestContext
from nubes.db.api import images as images_db
from nubes.db.engine import Database

STATUSES = ("pending", "accepted", "rejected")
MAX_MEMBERS = 128


def member_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_id": row["image_id"],
        "member_id": row["member"],
        "status": row["status"],
        "created_at": iso_z(row["created_at"]),
        "updated_at": iso_z(row["updated_at"] or row["created_at"]),
        "schema": "/v2/schemas/member",
    }


def member_schema() -> dict[str, Any]:
    """``GET /v2/schemas/member``: the JSON schema of what :func:`member_view` shows."""
    text = {"type": "string", "readOnly": True}
    return {
        "name": "member",
        "properties": {
            "image_id": {**text, "pattern": "^[0-9a-fA-F-]{36}$"},
            "member_id": {"type": "string", "maxLength": 64},
            "status": {"type": "string", "enum": list(STATUSES)},
            "created_at": text,
            "updated_at": text,
            "schema": text,
        },
    }


def members_schema() -> dict[str, Any]:
    """``GET /v2/schemas/members``: a listing of members."""
    return {
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "schema", "href": "{schema}"}],
    }


def _not_shared(row: dict[str, Any]) -> exception.ImageForbidden:
    return exception.ImageForbidden(
        reason=f"Image {row['id']} is not shared: its visibility is {row['visibility']}, "
        "not 'shared'."
    )


async def add_member(
    db: Database, ctxt: RequestContext, image_id: str, member: str
) -> dict[str, Any]:
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "add_member")
    if row["visibility"] != "shared":
        raise _not_shared(row)
    if not member or len(member) > 64:
        raise exception.ValidationError(field="member", reason="a project id of 1 to 64 characters")
    async with db.writer() as conn:
        if await images_db.member_count(conn, image_id) >= MAX_MEMBERS:
            raise exception.ImageLimitExceeded(
                reason=f"Maximum number of members ({MAX_MEMBERS}) exceeded."
            )
        try:
            created = await images_db.member_create(conn, image_id, member)
        except exception.DBDuplicateEntry:
            raise exception.Conflict(
                reason=f"Member {member} already exists for image {image_id}."
            ) from None
    return created


async def list_members(db: Database, ctxt: RequestContext, image_id: str) -> list[dict[str, Any]]:
    """The owner sees every member; a member only itself."""
    row = await images.get_image(db, ctxt, image_id)
    if row["visibility"] != "shared":
        raise _not_shared(row)
    async with db.reader() as conn:
        members = await images_db.member_get_all(conn, image_id)
    if policy.allowed(ctxt, policy.Rule.ADMIN) or row["owner"] == ctxt.project_id:
        return members
    return [m for m in members if m["member"] == ctxt.project_id]


async def get_member(
    db: Database, ctxt: RequestContext, image_id: str, member: str
) -> dict[str, Any]:
    row = await images.get_image(db, ctxt, image_id)
    owner_or_admin = row["owner"] == ctxt.project_id or policy.allowed(ctxt, policy.Rule.ADMIN)
    if not owner_or_admin and member != ctxt.project_id:
        raise _member_not_found(image_id, member)
    async with db.reader() as conn:
        found = await images_db.member_get(conn, image_id, member)
    if found is None:
        raise _member_not_found(image_id, member)
    return found


async def update_member(
    db: Database, ctxt: RequestContext, image_id: str, member: str, status: str
) -> dict[str, Any]:
    """The member's answer; nobody else may give it (not even the owner)."""
    if status not in STATUSES:
        raise exception.ValidationError(
            field="status", reason=f"'{status}' is not one of {', '.join(STATUSES)}"
        )
    found = await get_member(db, ctxt, image_id, member)
    if member != ctxt.project_id:
        raise exception.ImageForbidden(
            reason=f"You are not permitted to modify the membership of project {member}."
        )
    async with db.writer() as conn:
        await images_db.member_update(conn, image_id, member, status)
        updated = await images_db.member_get(conn, image_id, member)
    return updated or found


async def delete_member(db: Database, ctxt: RequestContext, image_id: str, member: str) -> None:
    row = await images.get_image(db, ctxt, image_id)
    if row["owner"] != ctxt.project_id and not policy.allowed(ctxt, policy.Rule.ADMIN):
        if member == ctxt.project_id:
            raise exception.ImageForbidden(
                reason="Only the image's owner removes members; a member rejects instead."
            )
        raise _member_not_found(image_id, member)
    async with db.writer() as conn:
        if not await images_db.member_delete(conn, image_id, member):
            raise _member_not_found(image_id, member)


def _member_not_found(image_id: str, member: str) -> exception.NotFound:
    return exception.NotFound(reason=f"Member {member} not found for image {image_id}.")
