"""``os-quota-sets`` and ``os-quota-class-sets``: show and set compute quotas.

Fields per microversion as Nova: the network quotas until 2.35 (Nova's
proxies: ``security_groups``, ``security_group_rules`` and ``floating_ips``
are the network service's limits of the project, read and set through here;
``fixed_ips`` has no counterpart and stays -1), the
injected-file quotas until 2.56; a quota
class shows ``server_groups`` and ``server_group_members`` from 2.50 and the
network quotas until 2.49. Admins set limits; a project's readers may see
their own. The rules behind each answer are in :mod:`nubes.api.quotas`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api import quotas
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.microversion import APIVersion
from nubes.api.policy import Rule
from nubes.db.api import network as network_db
from nubes.db.api import quotas as quotas_db

_LIMIT = {
    "type": ["integer", "string"],
    "pattern": "^-?[0-9]+$",
    "minimum": quotas.UNLIMITED,
    "maximum": v.MAX_INT,
}


def _update_schema(key: str, resources: list[str], *, force: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {name: _LIMIT for name in resources}
    if force:
        properties["force"] = v.BOOLEAN
    return {
        "type": "object",
        "properties": {
            key: {"type": "object", "properties": properties, "additionalProperties": False}
        },
        "required": [key],
        "additionalProperties": False,
    }


def _resources(version: APIVersion, *, network_until: str) -> list[str]:
    return quotas.filtered(
        quotas.RESOURCES,
        network=not version.at_least(_next(network_until)),
        injected=not version.at_least("2.57"),
    )


def _next(version: str) -> str:
    major, minor = version.split(".")
    return f"{major}.{int(minor) + 1}"


def _class_resources(version: APIVersion) -> list[str]:
    shown = _resources(version, network_until="2.49")
    if not version.at_least("2.50"):
        shown = [r for r in shown if r not in ("server_groups", "server_group_members")]
    return shown


def _values(
    resources: list[str], limits: dict[str, int], value: Callable[[str, int], Any]
) -> dict[str, Any]:
    return {name: value(name, limits.get(name, quotas.UNLIMITED)) for name in sorted(resources)}


def _limits_from(body: dict[str, Any], key: str) -> tuple[dict[str, int], dict[str, int], bool]:
    """(compute limits, network limits under the network's names, force)."""
    spec = dict(body[key])
    force = v.parse_bool("force", spec.pop("force", False))
    limits = {name: v.to_int(name, value, quotas.UNLIMITED) for name, value in spec.items()}
    network = {
        quotas.NETWORK_PROXIED[name]: limits.pop(name)
        for name in list(limits)
        if name in quotas.NETWORK_PROXIED
    }
    return limits, network, force


async def _class_with_network(
    conn: Any, conf: Any, class_name: str = quotas.DEFAULT_CLASS
) -> dict[str, int]:
    """A quota class's limits with the proxied network quotas under Nova's names."""
    limits = await quotas.class_limits(conn, conf, class_name)
    network = await quotas.network_defaults(conn, conf, class_name)
    return {**limits, **{name: network[own] for name, own in quotas.NETWORK_PROXIED.items()}}


async def _with_network(
    conn: Any, request: Request, project_id: str, limits: dict[str, int]
) -> dict[str, int]:
    """``limits`` with the proxied network quotas filled from the network service."""
    network = await quotas.network_limits(conn, common.state(request).conf, project_id)
    proxied = {name: network[own] for name, own in quotas.NETWORK_PROXIED.items()}
    return {**limits, **proxied}


# --- os-quota-sets ---------------------------------------------------------------------------


def _target(request: Request, action: str, rule: Rule) -> tuple[str, str | None]:
    project_id = request.path_params["project_id"]
    common.authorize(request, f"os-quota-sets:{action}", rule, project_id)
    user_id = request.query_params.get("user_id") or None
    return project_id, user_id


async def show(request: Request) -> Response:
    project_id, user_id = _target(request, "show", Rule.PROJECT_READER)
    async with common.state(request).db.reader() as conn:
        limits = await quotas.effective_limits(
            conn, common.state(request).conf, project_id, user_id
        )
        limits = await _with_network(conn, request, project_id, limits)
    resources = _resources(common.version(request), network_until="2.35")
    body = {"id": project_id, **_values(resources, limits, lambda _, limit: limit)}
    return common.json({"quota_set": body})


async def detail(request: Request) -> Response:
    project_id, user_id = _target(request, "detail", Rule.PROJECT_READER)
    async with common.state(request).db.reader() as conn:
        limits = await quotas.effective_limits(
            conn, common.state(request).conf, project_id, user_id
        )
        used = await quotas.usage(conn, project_id, user_id)
        limits = await _with_network(conn, request, project_id, limits)
        # The network service counts per project, so a user sees the project's use.
        used["security_groups"] = await network_db.count_by_project(
            conn, "security_groups", project_id
        )
        used["security_group_rules"] = await network_db.count_by_project(
            conn, "security_group_rules", project_id
        )
        used["floating_ips"] = await network_db.count_by_project(conn, "floatingips", project_id)
    resources = _resources(common.version(request), network_until="2.35")

    def value(name: str, limit: int) -> dict[str, int]:
        return {"in_use": used.get(name, 0), "limit": limit, "reserved": 0}

    return common.json({"quota_set": {"id": project_id, **_values(resources, limits, value)}})


async def defaults(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    common.authorize(request, "os-quota-sets:defaults", Rule.ANY)
    async with common.state(request).db.reader() as conn:
        limits = await _class_with_network(conn, common.state(request).conf)
    resources = _resources(common.version(request), network_until="2.35")
    body = {"id": project_id, **_values(resources, limits, lambda _, limit: limit)}
    return common.json({"quota_set": body})


async def update(request: Request) -> Response:
    project_id, user_id = _target(request, "update", Rule.ADMIN)
    version = common.version(request)
    settable = _resources(version, network_until="2.35")
    body = await v.json_body(request)
    v.validate(body, _update_schema("quota_set", settable, force=True))
    limits, network, force = _limits_from(body, "quota_set")
    if network and user_id:
        raise common.bad_request(
            f"Quota {', '.join(sorted(network))} cannot be set for a user: "
            "the network service limits whole projects."
        )
    state = common.state(request)
    async with state.db.writer() as conn:
        await quotas.set_limits(conn, state.conf, project_id, limits, user_id=user_id, force=force)
        if network:
            await quotas_db.limits_set(conn, project_id, network)
        current = await quotas.effective_limits(conn, state.conf, project_id, user_id)
        current = await _with_network(conn, request, project_id, current)
    # No "id" in an update's answer (Nova's v2 shape).
    return common.json({"quota_set": _values(settable, current, lambda _, limit: limit)})


async def delete(request: Request) -> Response:
    project_id, user_id = _target(request, "delete", Rule.ADMIN)
    async with common.state(request).db.writer() as conn:
        await quotas.revert_to_defaults(conn, project_id, user_id)
    return common.empty(202)


# --- os-quota-class-sets -----------------------------------------------------------------


def _class_name(request: Request) -> str:
    name = str(request.path_params["class_name"])
    if not 1 <= len(name) <= 255:
        raise common.bad_request("The quota class name must be 1 to 255 characters.")
    return name


async def class_show(request: Request) -> Response:
    common.authorize(request, "os-quota-class-sets:show", Rule.ADMIN)
    name = _class_name(request)
    async with common.state(request).db.reader() as conn:
        limits = await _class_with_network(conn, common.state(request).conf, name)
    resources = _class_resources(common.version(request))
    body = {"id": name, **_values(resources, limits, lambda _, limit: limit)}
    return common.json({"quota_class_set": body})


async def class_update(request: Request) -> Response:
    common.authorize(request, "os-quota-class-sets:update", Rule.ADMIN)
    name = _class_name(request)
    version = common.version(request)
    # Before 2.50 the server group quotas are settable though not shown (Nova).
    settable = _resources(version, network_until="2.49")
    body = await v.json_body(request)
    v.validate(body, _update_schema("quota_class_set", settable, force=False))
    limits, network, _ = _limits_from(body, "quota_class_set")
    state = common.state(request)
    async with state.db.writer() as conn:
        # The proxied network quotas go to the class under the network
        # service's names: class default's are the network's defaults.
        await quotas.set_class_limits(conn, name, {**limits, **network})
        current = await _class_with_network(conn, state.conf, name)
    shown = _class_resources(version)
    return common.json({"quota_class_set": _values(shown, current, lambda _, limit: limit)})


#: Nova's quota-set query (show, detail, update, delete): only ``user_id`` from 2.75.
USER_QUERY = {"2.75": ("user_id",)}


ROUTES = [
    Route("/os-quota-sets/{project_id}", common.known_query(show, USER_QUERY), methods=["GET"]),
    Route("/os-quota-sets/{project_id}", common.known_query(update, USER_QUERY), methods=["PUT"]),
    Route(
        "/os-quota-sets/{project_id}", common.known_query(delete, USER_QUERY), methods=["DELETE"]
    ),
    Route(
        "/os-quota-sets/{project_id}/detail",
        common.known_query(detail, USER_QUERY),
        methods=["GET"],
    ),
    Route("/os-quota-sets/{project_id}/defaults", defaults, methods=["GET"]),
    Route("/os-quota-class-sets/{class_name}", common.no_query(class_show), methods=["GET"]),
    Route("/os-quota-class-sets/{class_name}", class_update, methods=["PUT"]),
]
