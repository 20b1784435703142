"""Glance's metadata definitions catalog (``/v2/metadefs``): which
properties, objects and tags a kind of resource (an image, a flavor...) may
carry, for clients such as a dashboard to offer.

Rules, as Glance's defaults: anyone reads a public namespace, a private one
only its owner's project (and admins), and a namespace the caller cannot
see is 404 like one that does not exist, its contents too. Only admins
write. A protected namespace cannot be deleted until it is unprotected.
Objects, properties and tags are named within their namespace; a
namespace's deletion takes them and its resource type associations with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from nubes import exception
from nubes.api import policy
from nubes.api.validation import validate
from nubes.api.views import iso_z
from nubes.context import RequestContext
from nubes.db.api import metadefs as metadefs_db
from nubes.db.api.metadefs import Child
from nubes.db.engine import Connection, Database

#: The resource types Glance's catalog ships with: listed whether or not
#: a namespace uses one yet.
BUILTIN_RESOURCE_TYPES = (
    "OS::Cinder::Volume",
    "OS::Glance::Image",
    "OS::Nova::Aggregate",
    "OS::Nova::Flavor",
    "OS::Nova::Server",
)
NAME_LEN = 80
VISIBILITIES = ("public", "private")
SORT_KEYS = ("created_at", "updated_at", "namespace")

# --- schemas (validation, and what /v2/schemas/metadefs serves) -----------------------------

_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_LEN}
_READ_ONLY_TIME = {"type": "string", "readOnly": True, "format": "date-time"}
#: A property's definition (a JSON-schema fragment with Glance's extras).
PROPERTY_DEFINITION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "title": {"type": "string", "maxLength": 255},
        "description": {"type": "string", "maxLength": 65535},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": {
            "type": "string",
            "enum": ["array", "boolean", "integer", "number", "object", "string"],
        },
        "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"type": "integer", "minimum": 0},
        "minLength": {"type": "integer", "minimum": 0},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["array", "boolean", "integer", "number", "object", "string"],
                },
                "enum": {"type": "array"},
            },
            "additionalProperties": False,
        },
        "uniqueItems": {"type": "boolean"},
        "additionalItems": {"type": "boolean"},
        "minItems": {"type": "integer", "minimum": 0},
        "maxItems": {"type": "integer", "minimum": 0},
    },
    "required": ["title", "type"],
    "additionalProperties": False,
}
PROPERTY = {**PROPERTY_DEFINITION, "required": ["name", "title", "type"]}
OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "description": {"type": "string", "maxLength": 65535},
        "required": {"type": "array", "items": {"type": "string"}},
        "properties": {
            "type": "object",
            "propertyNames": {"maxLength": NAME_LEN},
            "additionalProperties": PROPERTY_DEFINITION,
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}
TAG: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _NAME},
    "required": ["name"],
    "additionalProperties": False,
}
TAGS: dict[str, Any] = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": TAG}},
    "required": ["tags"],
    "additionalProperties": False,
}
ASSOCIATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "prefix": {"type": "string", "maxLength": NAME_LEN},
        "properties_target": {"type": "string", "maxLength": NAME_LEN},
    },
    "required": ["name"],
    "additionalProperties": False,
}
NAMESPACE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "namespace": _NAME,
        "display_name": {"type": "string", "maxLength": NAME_LEN},
        "description": {"type": "string", "maxLength": 500},
        "visibility": {"type": "string", "enum": list(VISIBILITIES)},
        "protected": {"type": "boolean"},
        "owner": {"type": "string", "maxLength": 64},
        "resource_type_associations": {"type": "array", "items": ASSOCIATION},
        "properties": {
            "type": "object",
            "propertyNames": {"maxLength": NAME_LEN},
            "additionalProperties": PROPERTY_DEFINITION,
        },
        "objects": {"type": "array", "items": OBJECT},
        "tags": {"type": "array", "items": TAG},
    },
    "required": ["namespace"],
    "additionalProperties": False,
}
#: What a namespace update may change (Glance's PUT: its own attributes).
NAMESPACE_UPDATE: dict[str, Any] = {
    **NAMESPACE,
    "properties": {
        k: v
        for k, v in NAMESPACE["properties"].items()
        if k not in ("resource_type_associations", "properties", "objects", "tags")
    },
}


def _shown(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A validation schema as Glance serves it: named, with the read-only
    attributes its views add."""
    properties = dict(schema["properties"])
    properties.update(created_at=_READ_ONLY_TIME, updated_at=_READ_ONLY_TIME)
    if name not in ("resource_type_association", "tag"):
        properties.update(
            schema={"type": "string", "readOnly": True},
            self={"type": "string", "readOnly": True},
        )
    return {**schema, "name": name, "properties": properties}


def _collection(item: Mapping[str, Any], name: str, key: str) -> dict[str, Any]:
    links = [
        {"rel": "first", "href": "{first}"},
        {"rel": "next", "href": "{next}"},
        {"rel": "describedby", "href": "{schema}"},
    ]
    return {
        "name": name,
        "properties": {
            key: {"type": "array", "items": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": links,
    }


def schemas() -> dict[str, dict[str, Any]]:
    """``/v2/schemas/metadefs/{kind}``, by kind."""
    namespace = _shown(NAMESPACE, "namespace")
    association = _shown(ASSOCIATION, "resource_type_association")
    obj = _shown(OBJECT, "object")
    prop = _shown(PROPERTY, "property")
    tag = _shown(TAG, "tag")
    return {
        "namespace": namespace,
        "namespaces": _collection(namespace, "namespaces", "namespaces"),
        "resource_type": association,
        "resource_types": _collection(
            association, "resource_type_associations", "resource_type_associations"
        ),
        "object": obj,
        "objects": _collection(obj, "objects", "objects"),
        "property": prop,
        "properties": {
            "name": "properties",
            "properties": {
                "properties": {"type": "object", "additionalProperties": PROPERTY_DEFINITION},
                "schema": {"type": "string"},
            },
        },
        "tag": tag,
        "tags": _collection(tag, "tags", "tags"),
    }


# --- views ---------------------------------------------------------------------------------

_PATH = "/v2/metadefs/namespaces"


def _stamps(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "created_at": iso_z(row["created_at"]),
        "updated_at": iso_z(row["updated_at"] or row["created_at"]),
    }


def association_view(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row["resource_type_name"]}
    for key in ("prefix", "properties_target"):
        if row[key] is not None:
            out[key] = row[key]
    return {**out, **_stamps(row)}


def property_definition(row: Mapping[str, Any]) -> dict[str, Any]:
    return dict(row["json_schema"])


def property_view(namespace: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], **property_definition(row)}


def object_view(namespace: str, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row["name"]}
    if row["description"] is not None:
        out["description"] = row["description"]
    out["required"] = list(row["required"] or [])
    out["properties"] = dict(row["properties"] or {})
    return {
        **out,
        **_stamps(row),
        "schema": "/v2/schemas/metadefs/object",
        "self": f"{_PATH}/{namespace}/objects/{row['name']}",
    }


def tag_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], **_stamps(row)}


def namespace_view(
    row: Mapping[str, Any],
    associations: Sequence[Mapping[str, Any]],
    contents: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": row["namespace"]}
    for key in ("display_name", "description"):
        if row[key] is not None:
            out[key] = row[key]
    out.update(visibility=row["visibility"], protected=row["protected"], owner=row["owner"])
    if associations:
        out["resource_type_associations"] = [association_view(a) for a in associations]
    name = row["namespace"]
    if contents:
        if contents["property"]:
            out["properties"] = {p["name"]: property_definition(p) for p in contents["property"]}
        if contents["object"]:
            out["objects"] = [object_view(name, o) for o in contents["object"]]
        if contents["tag"]:
            out["tags"] = [{"name": t["name"]} for t in contents["tag"]]
    return {
        **out,
        **_stamps(row),
        "schema": "/v2/schemas/metadefs/namespace",
        "self": f"{_PATH}/{name}",
    }


# --- rules ---------------------------------------------------------------------------------

_KIND_WORD = {"object": "object", "property": "property", "tag": "tag"}
#: Glance's policy names for deleting all of a namespace's objects, properties or tags.
_DELETE_ALL = {
    "object": "delete_metadef_objects",
    "property": "remove_metadef_properties",
    "tag": "delete_metadef_tags",
}


def _admin(ctxt: RequestContext, action: str) -> None:
    policy.authorize(ctxt, action, policy.Rule.ADMIN)


def _visible(ctxt: RequestContext, row: Mapping[str, Any]) -> bool:
    return (
        policy.allowed(ctxt, policy.Rule.ADMIN)
        or row["visibility"] == "public"
        or row["owner"] == ctxt.project_id
    )


async def _namespace(conn: Connection, ctxt: RequestContext, name: str) -> dict[str, Any]:
    """The namespace if the caller may see it; 404 otherwise."""
    row = await metadefs_db.namespace_get(conn, name)
    if row is None or not _visible(ctxt, row):
        raise exception.MetadefNamespaceNotFound(namespace=name)
    return row


def _not_found(kind: Child, name: str, namespace: str) -> exception.MetadefNotFound:
    return exception.MetadefNotFound(
        reason=f"The metadata definition {_KIND_WORD[kind]} with name={name} was not found "
        f"in namespace={namespace}."
    )


def _duplicate(kind: Child, name: str, namespace: str) -> exception.MetadefDuplicate:
    if kind == "tag":
        return exception.MetadefDuplicate(
            reason=f"A metadata tag with name={name} already exists in namespace={namespace}."
        )
    return exception.MetadefDuplicate(
        reason=f"A metadata definition {_KIND_WORD[kind]} with name={name} already exists "
        f"in namespace={namespace}."
    )


async def _contents(conn: Connection, namespace_id: str) -> dict[str, list[dict[str, Any]]]:
    return {
        kind: await metadefs_db.child_get_all(conn, kind, namespace_id)
        for kind in metadefs_db.CHILDREN
    }


def _child_values(kind: Child, body: Mapping[str, Any]) -> dict[str, Any]:
    """A child's columns from its validated body (its name aside)."""
    if kind == "property":
        return {"json_schema": {k: v for k, v in body.items() if k != "name"}}
    if kind == "object":
        return {
            "description": body.get("description"),
            "required": list(body.get("required") or []),
            "properties": dict(body.get("properties") or {}),
        }
    return {}


async def _add_child(
    conn: Connection, kind: Child, ns: Mapping[str, Any], body: Mapping[str, Any]
) -> dict[str, Any]:
    if await metadefs_db.child_get(conn, kind, ns["id"], body["name"]) is not None:
        raise _duplicate(kind, body["name"], ns["namespace"])
    values = {
        "id": str(uuid.uuid4()),
        "namespace_id": ns["id"],
        "name": body["name"],
        **_child_values(kind, body),
    }
    return await metadefs_db.child_create(conn, kind, values)


async def _associate(
    conn: Connection, ns: Mapping[str, Any], body: Mapping[str, Any]
) -> dict[str, Any]:
    name = body["name"]
    existing = await metadefs_db.associations_get(conn, [ns["id"]])
    if any(a["resource_type_name"] == name for a in existing):
        raise exception.MetadefDuplicate(
            reason=f"The metadata definition resource-type association of "
            f"resource-type={name} to namespace={ns['namespace']} already exists."
        )
    await metadefs_db.resource_type_ensure(conn, name, protected=name in BUILTIN_RESOURCE_TYPES)
    return await metadefs_db.association_create(
        conn,
        {
            "namespace_id": ns["id"],
            "resource_type_name": name,
            "prefix": body.get("prefix"),
            "properties_target": body.get("properties_target"),
        },
    )


class Metadefs:
    """The catalog's operations; each takes the caller's context."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- namespaces --

    async def list_namespaces(
        self,
        ctxt: RequestContext,
        *,
        visibility: str | None = None,
        resource_types: Sequence[str] = (),
        sort_key: str = "created_at",
        sort_dir: str = "desc",
        limit: int | None = None,
        marker: str | None = None,
    ) -> list[dict[str, Any]]:
        if visibility is not None and visibility not in VISIBILITIES:
            raise exception.Invalid(reason=f"Invalid visibility value: {visibility}")
        if sort_key not in SORT_KEYS:
            raise exception.Invalid(reason=f"Invalid sort key: {sort_key}")
        if sort_dir not in ("asc", "desc"):
            raise exception.Invalid(reason=f"Invalid sort direction: {sort_dir}")
        async with self.db.reader() as conn:
            rows = await metadefs_db.namespace_get_all(
                conn,
                project_id=ctxt.project_id,
                all_visible=policy.allowed(ctxt, policy.Rule.ADMIN),
                visibility=visibility,
                resource_types=resource_types,
                sort_key=sort_key,
                sort_dir=sort_dir,
            )
            if marker is not None:
                names = [r["namespace"] for r in rows]
                if marker not in names:
                    raise exception.MarkerNotFound(marker=marker)
                rows = rows[names.index(marker) + 1 :]
            if limit is not None:
                rows = rows[:limit]
            associations = await metadefs_db.associations_get(conn, [r["id"] for r in rows])
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for a in associations:
            by_namespace.setdefault(a["namespace_id"], []).append(a)
        return [namespace_view(r, by_namespace.get(r["id"], [])) for r in rows]

    async def show_namespace(self, ctxt: RequestContext, name: str) -> dict[str, Any]:
        async with self.db.reader() as conn:
            row = await _namespace(conn, ctxt, name)
            associations = await metadefs_db.associations_get(conn, [row["id"]])
            contents = await _contents(conn, row["id"])
        return namespace_view(row, associations, contents)

    async def create_namespace(self, ctxt: RequestContext, body: Any) -> dict[str, Any]:
        """A namespace with whatever the body nests in it, in one transaction."""
        _admin(ctxt, "add_metadef_namespace")
        validate(body, NAMESPACE)
        name = body["namespace"]
        async with self.db.writer() as conn:
            if await metadefs_db.namespace_get(conn, name) is not None:
                raise exception.MetadefDuplicate(
                    reason=f"A metadata definition namespace with name={name} already exists."
                )
            row = await metadefs_db.namespace_create(
                conn,
                {
                    "id": str(uuid.uuid4()),
                    "namespace": name,
                    "display_name": body.get("display_name"),
                    "description": body.get("description"),
                    "visibility": body.get("visibility", "private"),
                    "protected": bool(body.get("protected", False)),
                    "owner": body.get("owner") or ctxt.project_id or "",
                },
            )
            for association in body.get("resource_type_associations", []):
                await _associate(conn, row, association)
            for prop_name, definition in (body.get("properties") or {}).items():
                await _add_child(conn, "property", row, {**definition, "name": prop_name})
            for obj in body.get("objects", []):
                await _add_child(conn, "object", row, obj)
            for tag in body.get("tags", []):
                await _add_child(conn, "tag", row, tag)
            associations = await metadefs_db.associations_get(conn, [row["id"]])
            contents = await _contents(conn, row["id"])
        return namespace_view(row, associations, contents)

    async def update_namespace(self, ctxt: RequestContext, name: str, body: Any) -> dict[str, Any]:
        """Glance's PUT: the namespace's own attributes (its name too)."""
        _admin(ctxt, "modify_metadef_namespace")
        validate(body, NAMESPACE_UPDATE)
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            new_name = body["namespace"]
            if new_name != name and await metadefs_db.namespace_get(conn, new_name) is not None:
                raise exception.MetadefDuplicate(
                    reason=f"A metadata definition namespace with name={new_name} already exists."
                )
            values = {
                "namespace": new_name,
                "display_name": body.get("display_name", row["display_name"]),
                "description": body.get("description", row["description"]),
                "visibility": body.get("visibility", row["visibility"]),
                "protected": body.get("protected", row["protected"]),
                "owner": body.get("owner", row["owner"]),
            }
            await metadefs_db.namespace_update(conn, row["id"], values)
            row = await _namespace(conn, ctxt, new_name)
            associations = await metadefs_db.associations_get(conn, [row["id"]])
        return namespace_view(row, associations)

    async def delete_namespace(self, ctxt: RequestContext, name: str) -> None:
        _admin(ctxt, "delete_metadef_namespace")
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            if row["protected"]:
                raise exception.MetadefForbidden(
                    reason=f"Metadata definition namespace {name} is protected and cannot "
                    "be deleted."
                )
            await metadefs_db.namespace_destroy(conn, row["id"])

    # -- resource types --

    async def list_resource_types(self, ctxt: RequestContext) -> list[dict[str, Any]]:
        async with self.db.reader() as conn:
            rows = {r["name"]: r for r in await metadefs_db.resource_type_get_all(conn)}
        names = sorted({*BUILTIN_RESOURCE_TYPES, *rows})
        out = []
        for name in names:
            row = rows.get(name)
            stamps = _stamps(row) if row else {"created_at": None, "updated_at": None}
            out.append({"name": name, **stamps})
        return out

    async def list_associations(self, ctxt: RequestContext, name: str) -> list[dict[str, Any]]:
        async with self.db.reader() as conn:
            row = await _namespace(conn, ctxt, name)
            rows = await metadefs_db.associations_get(conn, [row["id"]])
        return [association_view(r) for r in rows]

    async def associate(self, ctxt: RequestContext, name: str, body: Any) -> dict[str, Any]:
        _admin(ctxt, "add_metadef_resource_type_association")
        validate(body, ASSOCIATION)
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            return association_view(await _associate(conn, row, body))

    async def dissociate(self, ctxt: RequestContext, name: str, resource_type: str) -> None:
        _admin(ctxt, "remove_metadef_resource_type_association")
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            if not await metadefs_db.association_delete(conn, row["id"], resource_type):
                raise exception.MetadefNotFound(
                    reason=f"The metadata definition resource-type association of "
                    f"resource-type={resource_type} to namespace={name}, was not found."
                )

    # -- objects, properties, tags --

    async def list_children(
        self, ctxt: RequestContext, kind: Child, name: str
    ) -> list[dict[str, Any]]:
        async with self.db.reader() as conn:
            row = await _namespace(conn, ctxt, name)
            return await metadefs_db.child_get_all(conn, kind, row["id"])

    async def show_child(
        self, ctxt: RequestContext, kind: Child, name: str, child: str
    ) -> dict[str, Any]:
        async with self.db.reader() as conn:
            row = await _namespace(conn, ctxt, name)
            found = await metadefs_db.child_get(conn, kind, row["id"], child)
        if found is None:
            raise _not_found(kind, child, name)
        return found

    async def create_child(
        self, ctxt: RequestContext, kind: Child, name: str, body: Any
    ) -> dict[str, Any]:
        _admin(ctxt, f"add_metadef_{kind}")
        validate(body, {"object": OBJECT, "property": PROPERTY, "tag": TAG}[kind])
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            return await _add_child(conn, kind, row, body)

    async def create_tags(
        self, ctxt: RequestContext, name: str, body: Any, *, append: bool
    ) -> list[dict[str, Any]]:
        """Glance's create-multiple: the body's tags replace the namespace's
        (or join them with ``append``, its ``X-Openstack-Append`` header);
        a name twice, or one that exists when appending, is 409 and nothing
        changes."""
        _admin(ctxt, "add_metadef_tags")
        validate(body, TAGS)
        names = [t["name"] for t in body["tags"]]
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            for i, tag in enumerate(names):
                if tag in names[:i]:
                    raise _duplicate("tag", tag, name)
            if not append:
                await metadefs_db.child_delete_all(conn, "tag", row["id"])
            return [await _add_child(conn, "tag", row, {"name": tag}) for tag in names]

    async def update_child(
        self, ctxt: RequestContext, kind: Child, name: str, child: str, body: Any
    ) -> dict[str, Any]:
        """Glance's PUT of an object, property or tag: the body is its whole
        new definition (its name may change)."""
        _admin(ctxt, f"modify_metadef_{kind}")
        validate(body, {"object": OBJECT, "property": PROPERTY, "tag": TAG}[kind])
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            found = await metadefs_db.child_get(conn, kind, row["id"], child)
            if found is None:
                raise _not_found(kind, child, name)
            new_name = body["name"]
            if (
                new_name != child
                and await metadefs_db.child_get(conn, kind, row["id"], new_name) is not None
            ):
                raise _duplicate(kind, new_name, name)
            values = {"name": new_name, **_child_values(kind, body)}
            return await metadefs_db.child_update(conn, kind, found["id"], values)

    async def delete_child(self, ctxt: RequestContext, kind: Child, name: str, child: str) -> None:
        _admin(ctxt, f"delete_metadef_{kind}")
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            if not await metadefs_db.child_delete(conn, kind, row["id"], child):
                raise _not_found(kind, child, name)

    async def delete_children(self, ctxt: RequestContext, kind: Child, name: str) -> None:
        """Every object, property or tag of the namespace (Glance's DELETE of the collection)."""
        _admin(ctxt, _DELETE_ALL[kind])
        async with self.db.writer() as conn:
            row = await _namespace(conn, ctxt, name)
            await metadefs_db.child_delete_all(conn, kind, row["id"])
