"""Changing an image after it is created: Glance's JSON-patch update, tags,
and deactivate/reactivate.

A patch is all or nothing: every operation is checked against a copy of the
image first, then the result is written in one update.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from nubes import exception
from nubes.api import images, policy
from nubes.api.validation import validate
from nubes.context import RequestContext
from nubes.db.api import images as images_db
from nubes.db.engine import Database

#: Media types of a patch request: Glance's 2.1 (RFC 6902 operations,
#: ``{"op": "add", "path": "/x", "value": ...}``) and its older 2.0 (JSON
#: patch draft 4, ``{"add": "/x", "value": ...}``, which Tempest's client sends).
PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
PATCH_MEDIA_TYPES = (PATCH_V21, PATCH_V20)
_KINDS = ("add", "replace", "remove")
#: Only while the image has no data: its data's format is fixed once it has.
_FORMATS = ("disk_format", "container_format")
#: Base attributes a patch may change (each checked by the create schema).
_MUTABLE = (*images.CORE_ATTRIBUTES, "owner")
MAX_TAGS = 128

_OP = {
    "type": "object",
    "properties": {
        "op": {"enum": ["add", "replace", "remove"]},
        "path": {"type": "string", "pattern": "^/[^/]+$", "maxLength": 256},
    },
    "required": ["op", "path"],
}
PATCH_SCHEMA = {"type": "array", "items": _OP, "maxItems": 256}


def patch_operations(media_type: str, body: Any) -> Any:
    """The operations of a patch in the 2.1 form, whichever form was sent.

    A 2.0 operation names its kind by its one member ``add``, ``replace`` or
    ``remove`` whose value is the path; anything else in that form is
    Glance's 400. A 2.1 body is returned as sent (``update_image`` checks it).
    """
    if media_type != PATCH_V20 or not isinstance(body, list):
        return body
    ops: list[dict[str, Any]] = []
    for raw in body:
        if not isinstance(raw, dict):
            raise exception.ValidationError(field="patch", reason="an operation is an object")
        kinds = [k for k in _KINDS if k in raw]
        if len(kinds) != 1:
            raise exception.ValidationError(
                field="patch",
                reason='an operation has exactly one member named "add", "remove" or "replace"',
            )
        op: dict[str, Any] = {"op": kinds[0], "path": raw[kinds[0]]}
        if "value" in raw:
            op["value"] = raw["value"]
        ops.append(op)
    return ops


def _attribute(path: str) -> str:
    # JSON pointer escapes (RFC 6901): "~1" is "/", "~0" is "~".
    return path[1:].replace("~1", "/").replace("~0", "~")


def _apply(
    image: dict[str, Any], ops: Sequence[Mapping[str, Any]], schema: Mapping[str, Any]
) -> dict[str, Any]:
    """The image as the patch leaves it; raises on the first bad operation."""
    out = copy.deepcopy(image)
    props: dict[str, Any] = out["properties"]
    for op in ops:
        name = _attribute(op["path"])
        kind = op["op"]
        if name == "id":
            raise exception.ImageForbidden(reason=f"Attribute '{name}' is read-only.")
        images.check_settable(name)
        if kind != "remove" and "value" not in op:
            raise exception.ValidationError(field=op["path"], reason="'value' is required")
        if name in _MUTABLE:
            if kind == "remove":
                raise exception.ImageForbidden(reason=f"Attribute '{name}' can't be removed.")
            value = op["value"]
            validate({name: value}, {"type": "object", "properties": {name: schema[name]}})
            if name == "tags":
                value = sorted(set(value))
            out[name] = value
            continue
        if kind == "replace" and name not in props:
            raise exception.Conflict(reason=f"Property {name} does not exist.")
        if kind == "remove":
            if name not in props:
                raise exception.Conflict(reason=f"Property {name} does not exist.")
            del props[name]
            continue
        value = op["value"]
        if not isinstance(value, str) or len(value) > 65535 or len(name) > 255:
            raise exception.ValidationError(
                field=name, reason="a property's value is a string of at most 65535 characters"
            )
        props[name] = value
    return out


async def update_image(
    db: Database, ctxt: RequestContext, image_id: str, ops: Any, schema: Mapping[str, Any]
) -> dict[str, Any]:
    """``PATCH /v2/images/{id}``: apply a JSON patch; returns the image."""
    validate(ops, PATCH_SCHEMA)
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "modify_image")
    new = _apply(row, ops, schema)
    values = {k: new[k] for k in _MUTABLE if new[k] != row[k]}
    if new["properties"] != row["properties"]:
        values["properties"] = new["properties"]
    for name in _FORMATS:
        if name in values and row["status"] != "queued":
            raise exception.ImageForbidden(
                reason=f"Attribute {name} can be only replaced for a queued image."
            )
    if values.get("visibility") == "public" and not policy.allowed(ctxt, policy.Rule.ADMIN):
        raise exception.ImageForbidden(
            reason="You are not authorized to complete publicize_image action."
        )
    if "owner" in values:
        policy.authorize(ctxt, "modify_image:owner", policy.Rule.ADMIN)
    if len(new["tags"]) > MAX_TAGS:
        raise exception.ImageLimitExceeded(reason=f"Maximum number of tags ({MAX_TAGS}) exceeded.")
    if not values:
        return row
    async with db.writer() as conn:
        return await images_db.update_fields(conn, image_id, values)


async def add_tag(db: Database, ctxt: RequestContext, image_id: str, tag: str) -> None:
    if not tag or len(tag) > 255:
        raise exception.ValidationError(field="tag", reason="a tag has 1 to 255 characters")
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "modify_image")
    if tag in row["tags"]:
        return
    if len(row["tags"]) >= MAX_TAGS:
        raise exception.ImageLimitExceeded(reason=f"Maximum number of tags ({MAX_TAGS}) exceeded.")
    async with db.writer() as conn:
        await images_db.update_fields(conn, image_id, {"tags": sorted({*row["tags"], tag})})


async def delete_tag(db: Database, ctxt: RequestContext, image_id: str, tag: str) -> None:
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, "modify_image")
    if tag not in row["tags"]:
        raise exception.NotFound(reason=f"Tag {tag} not found on image {image_id}.")
    async with db.writer() as conn:
        await images_db.update_fields(
            conn, image_id, {"tags": [t for t in row["tags"] if t != tag]}
        )


async def _switch(
    db: Database, ctxt: RequestContext, image_id: str, action: str, start: str, end: str
) -> None:
    """The image's project (a member) or an admin moves an image ``start`` ->
    ``end`` (a repeat is a no-op), as Glance's defaults (ADMIN_OR_PROJECT_MEMBER);
    any other status is Glance's 403."""
    row = await images.get_image(db, ctxt, image_id)
    images.check_owner(ctxt, row, action)
    if row["status"] == end:
        return
    if row["status"] != start:
        raise exception.ImageForbidden(
            reason=f"Not allowed to {action} image in status '{row['status']}'"
        )
    async with db.writer() as conn:
        await images_db.update_fields(conn, image_id, {"status": end}, expected_status=start)


async def deactivate(db: Database, ctxt: RequestContext, image_id: str) -> None:
    """active -> deactivated: no new boot or download but by admins."""
    await _switch(db, ctxt, image_id, "deactivate", "active", "deactivated")


async def reactivate(db: Database, ctxt: RequestContext, image_id: str) -> None:
    await _switch(db, ctxt, image_id, "reactivate", "deactivated", "active")
